"""Table plane fitting on synthetic depth: tilted noisy plane with holes and clutter, world frame, errors."""

import math

import numpy as np
import pytest

from selfsup_perception.core.geometry.table_plane import TablePlaneConfig, find_table_plane, fit_table_plane
from selfsup_perception.core.types import CameraIntrinsics, RgbdFrame

K = CameraIntrinsics(fx=120.0, fy=120.0, cx=79.5, cy=59.5, width=160, height=120)


def _rays() -> np.ndarray:
    v, u = np.mgrid[0:K.height, 0:K.width].astype(np.float64)
    return np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], axis=-1)  # (H, W, 3)


def _plane_depth(normal: np.ndarray, offset: float) -> np.ndarray:
    """Depth of the plane n . x + d = 0 along every pixel ray: z = -d / (n . ray)."""
    return (-offset / (_rays() @ normal)).astype(np.float32)


def _frame(depth: np.ndarray, t_wc: np.ndarray = np.eye(4)) -> RgbdFrame:
    rgb = np.zeros(depth.shape + (3,), np.uint8)
    return RgbdFrame(rgb=rgb, depth=depth.astype(np.float32), intrinsics=K, camera_to_world=t_wc)


def _tilted_scene(rng: np.random.Generator):
    normal = np.array([0.0, -0.8, -0.6])
    normal /= np.linalg.norm(normal)  # points back towards the camera side after orientation
    offset = 0.9
    depth = _plane_depth(normal, offset)
    depth += rng.normal(0.0, 0.002, depth.shape).astype(np.float32)  # 2 mm noise
    box = (slice(40, 70), slice(60, 100))
    depth[box] -= 0.08  # an object 8 cm closer to the camera: outliers
    holes = rng.uniform(size=depth.shape) < 0.2
    depth[holes] = np.nan
    return normal, offset, depth, box, holes


def test_tilted_noisy_plane_with_holes_and_outliers_camera_frame():
    rng = np.random.default_rng(3)
    normal, offset, depth, box, holes = _tilted_scene(rng)
    cfg = TablePlaneConfig(frame="camera", expected_normal=None)
    plane = fit_table_plane(_frame(depth), cfg, np.random.default_rng(0))
    # Orientation: the camera centre (origin) has positive height, so d > 0 and n = true n (which has d = 0.9 > 0).
    assert plane.offset > 0
    assert plane.normal @ normal > 0.99
    angle = math.degrees(math.acos(min(1.0, abs(float(plane.normal @ normal)))))
    assert angle < 1.0
    assert abs(abs(plane.offset) - offset) < 0.005
    assert plane.rms_error < 0.003
    # Inliers: not the box, not the holes, most of the rest.
    assert not plane.inlier_mask[box].any()
    assert not plane.inlier_mask[holes].any()
    rest = ~holes
    rest[box] = False
    assert plane.inlier_mask[rest].mean() > 0.95
    # Heights: the box is ~8 cm * cos(angle between ray and normal) above; a point on the plane is at 0.
    h = plane.height_image(_frame(depth))
    assert np.isnan(h[holes]).all()
    assert abs(np.nanmedian(h[box]) - np.nanmedian(0.08 * np.abs(_rays()[box] @ normal))) < 0.005
    on_plane = np.array([0.0, 0.0, -offset / normal[2]])  # camera-frame point on the true plane
    assert abs(float(plane.height_above(on_plane))) < 0.005


def test_world_frame_plane_is_z_up_and_heights_match_camera_frame():
    # Camera 0.8 m above the table z = 0, pitched 40 deg down from looking straight down.
    pitch = math.radians(40.0)
    r_down = np.diag([1.0, -1.0, -1.0])  # optical z -> world -z
    rx = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    t_wc = np.eye(4)
    t_wc[:3, :3] = rx @ r_down
    t_wc[:3, 3] = [0.5, 0.0, 0.8]
    # Depth of the plane z_w = 0 in this camera: n_c = R^T e_z, d_c = t_z.
    n_c = t_wc[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    depth = _plane_depth(n_c, 0.8)
    depth[depth <= 0] = np.nan
    depth[50:60, 70:90] -= 0.05
    frame = _frame(depth, t_wc)
    plane = fit_table_plane(frame, TablePlaneConfig(frame="world"), np.random.default_rng(1))
    np.testing.assert_allclose(plane.normal, [0.0, 0.0, 1.0], atol=1e-3)
    assert abs(plane.offset) < 1e-3
    cam_plane = fit_table_plane(frame, TablePlaneConfig(frame="camera"), np.random.default_rng(1))
    np.testing.assert_allclose(plane.height_image(frame), cam_plane.height_image(frame), atol=2e-3, equal_nan=True)
    # height_at_pixels agrees with the image
    u, v = np.array([75, 10]), np.array([55, 100])
    np.testing.assert_allclose(plane.height_at_pixels(frame, u, v), plane.height_image(frame)[v, u], atol=1e-5)


def test_deterministic_given_rng():
    rng = np.random.default_rng(5)
    _, _, depth, _, _ = _tilted_scene(rng)
    cfg = TablePlaneConfig(frame="camera", expected_normal=None)
    a = fit_table_plane(_frame(depth), cfg, np.random.default_rng(7))
    b = fit_table_plane(_frame(depth), cfg, np.random.default_rng(7))
    np.testing.assert_array_equal(a.normal, b.normal)
    assert a.offset == b.offset


def test_errors_on_bad_depth():
    depth = _plane_depth(np.array([0.0, 0.0, -1.0]), 1.0)
    with pytest.raises(ValueError, match="no depth"):
        fit_table_plane(RgbdFrame(rgb=np.zeros((120, 160, 3), np.uint8), depth=None, intrinsics=K))
    with pytest.raises(ValueError, match="not enough depth: 0 valid pixels"):
        fit_table_plane(_frame(np.full_like(depth, np.nan)))
    with pytest.raises(ValueError, match="does not match"):
        fit_table_plane(RgbdFrame(rgb=np.zeros((100, 160, 3), np.uint8), depth=depth, intrinsics=K))
    with pytest.raises(ValueError, match="intrinsics"):
        small = depth[:100]
        fit_table_plane(RgbdFrame(rgb=np.zeros((100, 160, 3), np.uint8), depth=small, intrinsics=K))
    with pytest.raises(ValueError, match="float"):
        fit_table_plane(RgbdFrame(rgb=np.zeros((120, 160, 3), np.uint8),
                                  depth=(depth * 1000).astype(np.uint16), intrinsics=K))


def test_data_conditions_are_results_with_a_reason_not_exceptions():
    depth = _plane_depth(np.array([0.0, 0.0, -1.0]), 1.0)
    cases = {
        "no depth image": RgbdFrame(rgb=np.zeros((120, 160, 3), np.uint8), depth=None, intrinsics=K),
        "not enough depth: 0 valid": _frame(np.full_like(depth, np.nan)),
        "not enough depth: 0 valid pixels": _frame(np.zeros_like(depth)),  # all-zero depth (no readings)
        "looks like millimetres": _frame(depth * 1000.0),
        "not enough depth: 10 valid": _frame(np.where(np.arange(depth.size).reshape(depth.shape) < 10, depth, np.nan)),
    }
    for reason, frame in cases.items():
        result = find_table_plane(frame)
        assert not result.found and result.plane is None and result.confidence == 0.0
        assert reason in result.reason, (reason, result.reason)


def test_no_pose_finds_an_oblique_table_below_the_scene_not_a_plane_through_object_tops():
    """Camera 45 deg oblique (normal far from the camera's axes, no pose): the fit must find the table,
    not a larger-looking plane of box tops floating above it."""
    rng = np.random.default_rng(5)
    normal = np.array([0.0, -0.7, -0.7]) / np.linalg.norm([0.0, -0.7, -0.7])
    depth = _plane_depth(normal, 0.8)
    # box tops 10 cm above the table covering 73 % of the image (more than the visible table)
    tops = _plane_depth(normal, 0.7)
    box = np.zeros(depth.shape, bool)
    box[10:110, 10:150] = True
    depth[box] = tops[box]
    depth += rng.normal(0.0, 0.002, depth.shape).astype(np.float32)
    result = find_table_plane(_frame(depth))  # identity pose: gravity unknown
    assert result.found and not result.gravity_from_pose
    assert result.plane.normal @ normal > 0.995
    assert abs(result.plane.offset - 0.8) < 0.01
    assert 0.0 < result.confidence <= 1.0
    heights = result.plane.height_image(_frame(depth))
    assert abs(float(np.median(heights[box])) - 0.1) < 0.01  # the box tops stand 10 cm above it
