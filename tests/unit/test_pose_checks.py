"""Real-data sanity checks of registration: near-orthonormal poses, millimetre depth, inverted poses."""

import numpy as np
import pytest

from selfsup_perception.core.geometry.camera import as_rigid_transform, rotation_deviation
from selfsup_perception.core.registration.reprojection import correspondences, pose_pair_problem, view_overlap
from selfsup_perception.core.types import CameraIntrinsics

K = CameraIntrinsics(fx=100.0, fy=100.0, cx=39.5, cy=29.5, width=80, height=60)


def _rot(axis, deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.radians(deg)
    kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx


def _pose(r, t):
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = r, t
    return m


def _looking_down(t, yaw_deg=0.0):
    """Optical frame looking straight down (-z world) from t, turned by yaw about the vertical."""
    return _pose(_rot([0, 0, 1], yaw_deg) @ np.diag([1.0, -1.0, -1.0]), t)


def _floor_depth(t_wc):
    """Depth of the world plane z = 0 seen by a camera with pose t_wc."""
    v, u = np.mgrid[0:K.height, 0:K.width].astype(float)
    rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], -1) @ t_wc[:3, :3].T  # world dirs
    return (-t_wc[2, 3] / rays[..., 2]).astype(np.float32)


def _perturbed(r, size, seed):
    """r plus element-wise noise of the given size (not a rotation any more)."""
    return r + np.random.default_rng(seed).uniform(-size, size, (3, 3))


@pytest.mark.parametrize("size", [1.6e-4, 1e-3, 4e-3])
def test_near_orthonormal_rotations_are_reorthonormalised(size):
    r = _rot([1, 2, 3], 40)
    t = _pose(_perturbed(r, size, 1), [0.1, 0.2, 0.3])
    assert 1e-4 < rotation_deviation(t[:3, :3]) <= 1e-2  # the old 1e-4 check rejected these
    fixed = as_rigid_transform(t)
    assert rotation_deviation(fixed[:3, :3]) < 1e-12 and np.linalg.det(fixed[:3, :3]) == pytest.approx(1.0)
    assert np.abs(fixed[:3, :3] - r).max() < 3 * size  # the nearest rotation: back near the true one
    assert np.array_equal(fixed[:3, 3], t[:3, 3])


def test_rotations_beyond_the_tolerance_are_rejected_with_the_deviation():
    bad = _pose(_perturbed(_rot([0, 1, 0], 10), 0.05, 2), [0, 0, 0])
    dev = rotation_deviation(bad[:3, :3])
    with pytest.raises(ValueError, match=r"not orthonormal: max \|R\^T R - I\| = .* > tolerance 1e-02") as info:
        as_rigid_transform(bad, "T_wb")
    assert f"{dev:.2e}" in str(info.value) and "T_wb" in str(info.value)
    with pytest.raises(ValueError, match="determinant .* reflection"):
        as_rigid_transform(_pose(np.diag([1.0, 1.0, -1.0]), [0, 0, 0]))


def test_registration_accepts_real_like_poses_and_matches_the_exact_ones():
    t_a = _looking_down([0.0, 0.0, 1.0])
    t_b = _looking_down([0.05, 0.0, 1.0], yaw_deg=5)
    da, db = _floor_depth(t_a), _floor_depth(t_b)
    exact = correspondences(da, K, t_a, db, K, t_b)
    noisy_b = t_b.copy()
    noisy_b[:3, :3] = _perturbed(t_b[:3, :3], 1.6e-4, 3)  # like the public sequence: det ~0.9998
    noisy = correspondences(da, K, t_a, db, K, noisy_b)
    assert len(exact) > 0.5 * K.width * K.height
    both = exact.valid & noisy.valid
    assert both.sum() >= 0.99 * max(exact.valid.sum(), noisy.valid.sum())
    pos_exact = np.full(exact.valid.shape + (2,), np.nan)
    pos_exact[exact.valid] = exact.pixels_b
    pos_noisy = np.full(noisy.valid.shape + (2,), np.nan)
    pos_noisy[noisy.valid] = noisy.pixels_b
    assert np.abs(pos_noisy[both] - pos_exact[both]).max() < 0.1  # pixels


def test_millimetres_as_float_are_refused_with_a_clear_message():
    t_a = _looking_down([0.0, 0.0, 1.0])
    d = _floor_depth(t_a)
    with pytest.raises(ValueError, match="depth_a: depth looks like millimetres: the valid median is 1000.0 m"):
        view_overlap(d * 1000.0, K, t_a, d, K, t_a)
    assert view_overlap(d, K, t_a, (d * 1000).astype(np.uint16), K, t_a) > 0.99  # uint16 mm is fine


def test_inverted_poses_are_named_when_near_identical_images_do_not_overlap():
    # Far from the world origin (a SLAM map's frame): inverting the poses turns a small turn about the
    # camera into a turn about the origin, metres away.
    t_a = _looking_down([8.0, 5.0, 1.0])
    t_b = _looking_down([8.0, 5.0, 1.0], yaw_deg=5)  # a small turn: near-identical images
    da, db = _floor_depth(t_a), _floor_depth(t_b)
    rgb = (np.random.default_rng(0).uniform(0, 255, (K.height, K.width, 3))).astype(np.uint8)
    assert pose_pair_problem(rgb, da, K, t_a, rgb, db, K, t_b) is None  # right poses
    message = pose_pair_problem(rgb, da, K, np.linalg.inv(t_a), rgb, db, K, np.linalg.inv(t_b))
    assert message is not None and "inverted pose?" in message
    # Different images: nothing to say even when the overlap is 0.
    other = np.roll(rgb, 20, axis=1)[:, ::-1].copy()
    assert pose_pair_problem(rgb, da, K, np.linalg.inv(t_a), other, db, K, np.linalg.inv(t_b)) is None
