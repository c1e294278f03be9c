"""Sensor and mount models of the realistic world, on synthetic depth (pure numpy, no simulator)."""

import math

import numpy as np
import pytest

from selfsup_perception.core.types import CameraIntrinsics
from selfsup_perception.sim.sensor import (
    ColorSensorModel,
    ColorState,
    DepthSensorModel,
    ShakeConfig,
    apply_color_noise,
    apply_depth_noise,
    next_color_state,
    random_shake,
    stereo_occlusion,
)

K = CameraIntrinsics.from_fov(320, 240, 45.0)
GREY = np.full((240, 320, 3), 128, np.uint8)
# only the disparity noise and quantisation: no holes
NOISE_ONLY = DepthSensorModel(edge_dropout=0.0, dark_dropout=0.0, saturated_luminance=2.0, glancing_deg=90.0,
                              speckle_rate=0.0)


def _plane(z: float) -> np.ndarray:
    return np.full((240, 320), z, np.float32)


def test_depth_error_grows_with_distance_squared_and_matches_the_stereo_formula():
    model = NOISE_ONLY
    rng = np.random.default_rng(0)
    stds = {}
    for z in (0.5, 1.0, 2.0):
        noisy = apply_depth_noise(_plane(z), GREY, K, rng, model)
        assert np.isfinite(noisy).all()
        assert abs(float(np.mean(noisy)) - z) < 0.002 * z ** 2 + 1e-4  # unbiased
        stds[z] = float(np.std(noisy))
        # sigma_z = z^2 / (f B) * sqrt(sigma_d^2 + q^2 / 12) (Gaussian noise + uniform quantisation error)
        q = 1.0 / model.subpixel_steps
        expected = z ** 2 / (model.focal_px * model.baseline_m) * math.sqrt(model.disparity_noise_px ** 2 + q ** 2 / 12)
        assert stds[z] == pytest.approx(expected, rel=0.15)
    assert stds[1.0] / stds[0.5] == pytest.approx(4.0, rel=0.2)
    assert stds[2.0] / stds[1.0] == pytest.approx(4.0, rel=0.2)


def test_depth_is_quantised_in_disparity():
    model = NOISE_ONLY
    noisy = apply_depth_noise(_plane(1.2), GREY, K, np.random.default_rng(1), model)
    disparity = model.focal_px * model.baseline_m / noisy.astype(np.float64)
    steps = disparity * model.subpixel_steps
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    assert len(np.unique(np.round(steps))) < 40  # a few levels, not a continuum


def _step_scene():
    """A box 0.6 m away in front of a wall 1.2 m away; the box spans columns 120..199."""
    depth = _plane(1.2)
    depth[80:160, 120:200] = 0.6
    return depth


def test_stereo_occlusion_is_a_band_left_of_the_near_object_as_wide_as_the_disparity_jump():
    depth = _step_scene()
    disp = K.fx * 0.05 / depth.astype(np.float64)
    occluded = stereo_occlusion(disp)
    jump = disp[100, 150] - disp[100, 50]  # px
    row = occluded[100]
    assert not row[200:].any() and not row[120:200].any()  # right of the box, and the box itself: seen
    band = np.flatnonzero(row[:120])
    assert band.max() == 119 and abs(len(band) - jump) <= 1.5
    assert not occluded[:80].any() and not occluded[160:].any()  # rows without the box


def test_depth_goes_missing_at_edges_on_dark_surfaces_and_at_glancing_angles():
    model = DepthSensorModel(speckle_rate=0.0)
    rng = np.random.default_rng(2)
    depth = _step_scene()
    noisy = apply_depth_noise(depth, GREY, K, rng, model)
    missing = ~np.isfinite(noisy)
    edge = np.zeros_like(missing)
    edge[80:160, 196:204] = True  # right edge of the box (no occlusion there)
    interior = np.zeros_like(missing)
    interior[95:145, 135:185] = True
    assert missing[edge].mean() > 0.15
    assert missing[interior].mean() < 0.01
    # a dark patch loses most of its depth, a bright one none
    rgb = GREY.copy()
    rgb[20:60, 20:60] = 10
    noisy = apply_depth_noise(_plane(1.0), rgb, K, rng, model)
    assert (~np.isfinite(noisy[25:55, 25:55])).mean() > 0.7
    assert (~np.isfinite(noisy[100:200, 100:300])).mean() < 0.01
    # a floor seen at ~80 degrees from its normal fades, the same floor seen head-on does not
    v = np.arange(240, dtype=np.float32)[:, None]
    ray_y = (v - K.cy) / K.fy
    slope = math.tan(math.radians(80))  # plane y = 0.2 + ..., seen obliquely
    glancing = np.broadcast_to(1.0 / np.maximum(ray_y + 1.0 / slope, 1e-3) * 0.2, (240, 320)).astype(np.float32)
    glancing = np.where(glancing < 3.0, glancing, np.nan).astype(np.float32)
    noisy = apply_depth_noise(glancing, GREY, K, rng, model)
    ok = np.isfinite(glancing)
    assert (~np.isfinite(noisy[ok])).mean() > 0.3


def test_colour_noise_exposure_and_white_balance():
    rng = np.random.default_rng(3)
    model = ColorSensorModel()
    flat = np.full((100, 100, 3), 100, np.uint8)
    out = apply_color_noise(flat, rng, model, ColorState())
    sigma = float(np.std(out.astype(np.float32)))
    assert sigma == pytest.approx(math.sqrt(model.shot_noise * 100 + model.read_noise ** 2), rel=0.15)
    bright = apply_color_noise(flat, rng, model, ColorState(exposure=1.2, white_balance=(1.0, 1.0, 1.0)))
    assert float(bright.mean()) == pytest.approx(120, abs=1.0)
    states = [next_color_state(rng, model) for _ in range(200)]
    exposures = np.array([s.exposure for s in states])
    assert 0.0 < np.std(np.log(exposures)) < 2 * model.exposure_sigma
    gains = np.array([s.white_balance for s in states])
    np.testing.assert_allclose(np.exp(np.log(gains).mean(axis=1)), 1.0, atol=1e-6)  # balance keeps brightness
    assert np.abs(np.log(gains)).max() <= 3 * model.white_balance_sigma * 2 + 1e-9


def test_shake_stays_within_its_amplitude_and_is_noticeable():
    config = ShakeConfig(translation_m=0.002, rotation_deg=0.25)
    rng = np.random.default_rng(4)
    angles, shifts = [], []
    for _ in range(500):
        t = random_shake(rng, config)
        r = t[:3, :3]
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
        angles.append(math.degrees(math.acos(np.clip((np.trace(r) - 1) / 2, -1, 1))))
        shifts.append(float(np.linalg.norm(t[:3, 3])))
    assert max(angles) <= 0.25 + 1e-9 and min(angles) >= 0.4 * 0.25 - 1e-9
    assert max(shifts) <= 0.002 + 1e-12 and min(shifts) >= 0.4 * 0.002 - 1e-12
    # in pixels of a 640x480 camera (f ~ 580 px) looking at a table 0.8 m away: a few px
    f = CameraIntrinsics.from_fov(640, 480, 45.0).fx
    px = [f * math.tan(math.radians(a)) for a in angles]
    assert 0.9 < np.median(px) < 3.0 and max(px) < 2.6
    assert np.array_equal(random_shake(rng, ShakeConfig(0.0, 0.0)), np.eye(4))
