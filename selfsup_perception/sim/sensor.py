"""Sensor and mount realism for the simulated camera: stereo depth noise, colour noise, mount shake.

Pure numpy on rendered images; ROS-free and pybullet-free, so each model is tested on its own.

Depth (:func:`apply_depth_noise`) follows an active-stereo / structured-light camera
(RealSense D4xx-like): depth comes from a disparity ``d = f * B / z`` measured with sub-pixel
noise ``sigma_d`` and quantised to ``1 / subpixel_steps`` px, so the depth error grows with
distance squared, ``sigma_z = z**2 * sigma_d / (f * B)`` (e.g. Keselman et al. 2017, "Intel
RealSense Stereoscopic Depth Cameras", eq. 1). ``f`` is the *sensor's* focal length in pixels
(``focal_px`` at its native resolution), so the metric noise does not change with the size the
simulator renders at. Depth is missing (NaN, the simulator's "no return"):

* where the second view cannot see the point (stereo occlusion beside a near edge, on the
  side of the baseline), and in a thin random band along depth discontinuities (mixed pixels);
* on dark surfaces (too little returned light), on near-saturated specular highlights, and
  on surfaces seen at a glancing angle;
* in a few random speckles.

Colour (:func:`apply_color_noise`): exposure and white balance drift from frame to frame,
then shot + read noise and 8-bit quantisation.

Shake (:func:`random_shake`): a small rigid motion of the camera mount (translation up to
``translation_m``, rotation up to ``rotation_deg``) drawn each time the arm moves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from selfsup_perception.core.types import CameraIntrinsics


@dataclass(frozen=True)
class DepthSensorModel:
    focal_px: float = 600.0  # the depth sensor's focal length at its native resolution (px)
    baseline_m: float = 0.05
    disparity_noise_px: float = 0.08  # sigma of the sub-pixel disparity estimate
    subpixel_steps: int = 8  # disparity quantisation: 1/8 px
    edge_dropout: float = 0.5  # probability that a pixel next to a depth discontinuity is missing
    edge_jump_rel: float = 0.03  # a neighbour further by this fraction of the depth is a discontinuity
    dark_luminance: float = 0.1  # below this (0..1) luminance depth is missing with prob. dark_dropout
    dark_dropout: float = 0.85
    saturated_luminance: float = 0.97  # specular highlights: missing above this
    glancing_deg: float = 72.0  # angle between the surface normal and the ray beyond which depth fades
    speckle_rate: float = 0.002  # probability of a random missing pixel (grown into small speckles)
    max_range_m: float = 3.0


@dataclass(frozen=True)
class ColorSensorModel:
    """Defaults: a good RGB-D camera's colour stream indoors (noise sigma ~2.7 levels at mid-grey,
    auto-exposure and white balance wandering by a few per cent between frames)."""

    exposure_sigma: float = 0.03  # per-frame log-exposure change
    white_balance_sigma: float = 0.015  # per-frame per-channel gain change
    shot_noise: float = 0.05  # variance per unit of intensity (8-bit levels)
    read_noise: float = 1.0  # sigma, 8-bit levels


@dataclass(frozen=True)
class ShakeConfig:
    translation_m: float = 0.002  # largest offset of the camera from its nominal pose
    rotation_deg: float = 0.25  # largest rotation of the camera from its nominal pose


def rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues: 3x3 rotation by ``angle`` radians about ``axis``."""
    a = np.asarray(axis, np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def random_shake(rng: np.random.Generator, config: ShakeConfig) -> np.ndarray:
    """A 4x4 offset of the camera in its own frame: nominal @ offset is where it ends up.

    Rotation angle and translation length are uniform in [0.4, 1] x the configured amplitude
    about / along a random direction, so every arm motion moves the camera noticeably and
    never beyond the amplitude.
    """
    t = np.eye(4)
    if config.rotation_deg > 0:
        t[:3, :3] = rotation_about(rng.normal(size=3), math.radians(config.rotation_deg) * rng.uniform(0.4, 1.0))
    if config.translation_m > 0:
        d = rng.normal(size=3)
        t[:3, 3] = d / np.linalg.norm(d) * config.translation_m * rng.uniform(0.4, 1.0)
    return t


def luminance(rgb: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1]."""
    return (rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255.0


def surface_cosine(depth: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """|cos| of the angle between each pixel's surface normal (from depth) and its viewing ray."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    rays = np.stack([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy,
                     np.ones_like(u)], axis=-1)
    pts = rays * depth[..., None]  # (H, W, 3)
    dx = np.zeros_like(pts)
    dy = np.zeros_like(pts)
    dx[:, 1:-1] = pts[:, 2:] - pts[:, :-2]
    dy[1:-1] = pts[2:] - pts[:-2]
    n = np.cross(dx, dy)
    nn = np.linalg.norm(n, axis=-1)
    rn = np.linalg.norm(rays, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.abs((n * rays).sum(-1)) / (nn * rn)
    return np.where(np.isfinite(cos), cos, 1.0).astype(np.float32)


def stereo_occlusion(disparity: np.ndarray, max_shift: int = 64) -> np.ndarray:
    """Pixels of the left view that the right view (baseline along +x) cannot see.

    A pixel at column x is hidden when some pixel to its right, x + s, is nearer by at least
    s px of disparity: ``d(x + s) - d(x) >= s`` (it covers x's ray in the right image).
    NaN disparities never occlude.
    """
    d = np.nan_to_num(disparity, nan=-1e9)
    occluded = np.zeros(d.shape, bool)
    w = d.shape[1]
    span = int(min(max_shift, w - 1, np.ceil(np.nanmax(disparity) - np.nanmin(disparity)) if
                   np.isfinite(disparity).any() else 0))
    for s in range(1, span + 1):
        occluded[:, :-s] |= d[:, s:] - d[:, :-s] >= s
    return occluded


def apply_depth_noise(depth: np.ndarray, rgb: np.ndarray, intrinsics: CameraIntrinsics,
                      rng: np.random.Generator, model: DepthSensorModel) -> np.ndarray:
    """Noisy depth (float32 metres, NaN = missing) from a clean rendered depth and its colour image."""
    import cv2

    z = depth.astype(np.float64)
    valid = np.isfinite(z) & (z > 0)
    h, w = z.shape
    # metric noise is the native sensor's (focal_px), whatever size the simulator renders at;
    # occlusion widths are in render pixels (f_render)
    f_render = intrinsics.fx
    fb = model.focal_px * model.baseline_m
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = np.where(valid, fb / z, np.nan)
    disp = disp + rng.normal(0.0, model.disparity_noise_px, size=disp.shape)
    disp = np.round(disp * model.subpixel_steps) / model.subpixel_steps
    with np.errstate(divide="ignore", invalid="ignore"):
        noisy = np.where(valid & (disp > 0), fb / disp, np.nan)
    missing = ~valid | ~np.isfinite(noisy) | (noisy > model.max_range_m)
    # stereo occlusion, computed in render pixels
    disp_render = np.where(valid, f_render * model.baseline_m / np.where(valid, z, 1.0), np.nan)
    missing |= stereo_occlusion(disp_render)
    # mixed pixels at discontinuities: a random band 1-2 px wide
    zf = np.where(valid, z, 1e3).astype(np.float32)
    zmax = cv2.dilate(zf, np.ones((3, 3), np.uint8))
    zmin = cv2.erode(zf, np.ones((3, 3), np.uint8))
    edge = (zmax - zmin) > model.edge_jump_rel * zf
    edge = cv2.dilate(edge.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool)
    missing |= edge & (rng.uniform(size=edge.shape) < model.edge_dropout)
    lum = luminance(rgb)
    missing |= (lum < model.dark_luminance) & (rng.uniform(size=lum.shape) < model.dark_dropout)
    missing |= lum > model.saturated_luminance
    cos = surface_cosine(np.where(valid, z, np.nan).astype(np.float32), intrinsics)
    cos_lim = math.cos(math.radians(model.glancing_deg))
    p_glance = np.clip((cos_lim - cos) / max(cos_lim, 1e-6), 0.0, 1.0) * 2.0
    missing |= rng.uniform(size=cos.shape) < p_glance
    speck = (rng.uniform(size=(h, w)) < model.speckle_rate).astype(np.uint8)
    missing |= cv2.dilate(speck, np.ones((2, 2), np.uint8)).astype(bool)
    return np.where(missing, np.nan, noisy).astype(np.float32)


@dataclass(frozen=True)
class ColorState:
    """Exposure gain and white-balance gains of one frame."""

    exposure: float = 1.0
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)


def next_color_state(rng: np.random.Generator, model: ColorSensorModel) -> ColorState:
    """Auto-exposure / auto-white-balance settle somewhere new for each frame (around 1)."""
    e = float(np.exp(np.clip(rng.normal(0, model.exposure_sigma), -3 * model.exposure_sigma,
                             3 * model.exposure_sigma)))
    wb = np.exp(np.clip(rng.normal(0, model.white_balance_sigma, size=3), -3 * model.white_balance_sigma,
                        3 * model.white_balance_sigma))
    return ColorState(e, tuple(float(g) for g in wb / np.exp(np.log(wb).mean())))


def apply_color_noise(rgb: np.ndarray, rng: np.random.Generator, model: ColorSensorModel,
                      state: ColorState) -> np.ndarray:
    """Exposure x white balance, then Poisson-like shot noise + Gaussian read noise, 8-bit."""
    x = rgb[..., :3].astype(np.float32) * (state.exposure * np.asarray(state.white_balance, np.float32))
    sigma = np.sqrt(model.shot_noise * np.clip(x, 0, 255) + model.read_noise ** 2)
    x = x + rng.standard_normal(size=x.shape, dtype=np.float32) * sigma
    return np.clip(np.round(x), 0, 255).astype(np.uint8)
