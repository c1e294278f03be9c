"""Depth-based correspondences and view overlap on analytic scenes (planes seen by pinhole cameras)."""

import numpy as np
import pytest

from selfsup_perception.core.registration.reprojection import correspondences, view_overlap
from selfsup_perception.core.registration.view_pairs import select_view_pairs
from selfsup_perception.core.types import CameraIntrinsics, RgbdFrame

W, H = 64, 48
K = CameraIntrinsics(50.0, 50.0, (W - 1) / 2, (H - 1) / 2, W, H)


def translation(x=0.0, y=0.0, z=0.0):
    t = np.eye(4)
    t[:3, 3] = (x, y, z)
    return t


def look_at(eye, target):
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    t = np.eye(4)
    t[:3, 0], t[:3, 1], t[:3, 2], t[:3, 3] = x, y, z, eye
    return t


def ground_plane_depth(k: CameraIntrinsics, t_wc: np.ndarray) -> np.ndarray:
    """Depth (z in the camera) of the world plane z = 0, NaN where the ray misses it."""
    v, u = np.mgrid[0:k.height, 0:k.width].astype(float)
    rays_c = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], -1)  # z = 1
    rays_w = rays_c @ t_wc[:3, :3].T
    s = -t_wc[2, 3] / rays_w[..., 2]  # scale so that the world z becomes 0; equals camera z
    return np.where(s > 0, s, np.nan).astype(np.float32)


def world_points(pixels, depth_values, k, t_wc):
    x = (pixels[:, 0] - k.cx) / k.fx * depth_values
    y = (pixels[:, 1] - k.cy) / k.fy * depth_values
    pc = np.stack([x, y, depth_values], 1)
    return pc @ t_wc[:3, :3].T + t_wc[:3, 3]


def test_fronto_parallel_shift_matches_closed_form():
    depth = np.full((H, W), 2.0, np.float32)
    c = correspondences(depth, K, np.eye(4), depth, K, translation(x=0.2))
    # Camera B moved +0.2 m along x: a point appears fx * 0.2 / 2 = 5 px further left.
    np.testing.assert_allclose(c.pixels_b[:, 0], c.pixels_a[:, 0] - 5.0, atol=1e-9)
    np.testing.assert_allclose(c.pixels_b[:, 1], c.pixels_a[:, 1], atol=1e-9)
    assert len(c) == H * (W - 5)  # the 5 leftmost columns leave B's view
    assert not c.valid[:, :5].any() and c.valid[:, 5:].all()
    np.testing.assert_allclose(c.depth_b, 2.0)


def test_general_poses_hit_the_same_world_point():
    ta = look_at([0.0, -1.0, 1.2], [0.1, 0.2, 0.0])
    tb = look_at([0.4, -0.8, 1.0], [0.0, 0.1, 0.0])
    da, db = ground_plane_depth(K, ta), ground_plane_depth(K, tb)
    c = correspondences(da, K, ta, db, K, tb)
    assert len(c) > 0.3 * W * H
    pa = world_points(c.pixels_a.astype(float), da[c.pixels_a[:, 1], c.pixels_a[:, 0]].astype(float), K, ta)
    pb = world_points(c.pixels_b, c.depth_b, K, tb)
    np.testing.assert_allclose(pa, pb, atol=1e-5)
    np.testing.assert_allclose(pa[:, 2], 0.0, atol=1e-5)  # on the plane
    # Round trip: B -> A maps back within half a pixel (nearest-pixel depth lookup).
    back = correspondences(db, K, tb, da, K, ta)
    lookup = {tuple(p): q for p, q in zip(back.pixels_a, back.pixels_b)}
    errors = [np.abs(lookup[tuple(q)] - p).max() for p, q in zip(c.pixels_a, c.pixels_b_int) if tuple(q) in lookup]
    assert len(errors) > 0.9 * len(c)
    assert np.max(errors) < 1.5


def test_occluder_in_b_rejects_points_and_tolerance_is_two_sided():
    depth_a = np.full((H, W), 2.0, np.float32)
    depth_b = depth_a.copy()
    depth_b[10:20, 10:20] = 1.0  # something in front of the plane in B only
    depth_b[30:35, 40:45] = 3.0  # B sees farther than predicted (e.g. a hole filled by background)
    c = correspondences(depth_a, K, np.eye(4), depth_b, K, np.eye(4))
    assert not c.valid[10:20, 10:20].any()
    assert not c.valid[30:35, 40:45].any()
    assert c.valid.sum() == H * W - 100 - 25
    # Within tolerance: 2 cm error at 2 m passes with 1 cm + 2 % (= 5 cm), fails with 1 cm + 0 %.
    noisy = depth_a + 0.02
    assert len(correspondences(depth_a, K, np.eye(4), noisy, K, np.eye(4))) == H * W
    assert len(correspondences(depth_a, K, np.eye(4), noisy, K, np.eye(4), relative_depth_tolerance=0.0)) == 0


def test_holes_uint16_and_matrix_intrinsics_give_the_same_result():
    depth = np.full((H, W), 1.5, np.float32)
    depth[5, 7] = np.nan
    depth[6, 8] = 0.0
    mm = np.where(np.isfinite(depth), depth * 1000, 0).astype(np.uint16)
    tb = translation(x=0.05, z=0.1)
    c1 = correspondences(depth, K, np.eye(4), depth, K, tb)
    c2 = correspondences(mm, K.matrix, np.eye(4), mm, K.matrix, tb)
    assert not c1.valid[5, 7] and not c1.valid[6, 8]
    np.testing.assert_array_equal(c1.pixels_a, c2.pixels_a)
    np.testing.assert_allclose(c1.pixels_b, c2.pixels_b)


def test_points_behind_camera_b_are_rejected():
    depth = np.full((H, W), 1.0, np.float32)
    flipped = np.diag([-1.0, 1.0, -1.0, 1.0])  # B looks the other way
    assert len(correspondences(depth, K, np.eye(4), depth, K, flipped @ translation(z=-0.5))) == 0


def test_view_overlap_closed_form_and_symmetry():
    depth = np.full((H, W), 2.0, np.float32)
    assert view_overlap(depth, K, np.eye(4), depth, K, np.eye(4)) == pytest.approx(1.0)
    # Shift of s = 5 px: covisible (W - s) H, union (W + s) H.
    iou = view_overlap(depth, K, np.eye(4), depth, K, translation(x=0.2))
    assert iou == pytest.approx((W - 5) / (W + 5))
    assert view_overlap(depth, K, translation(x=0.2), depth, K, np.eye(4)) == pytest.approx(iou)
    assert view_overlap(depth, K, np.eye(4), depth, K, translation(x=5.0)) == 0.0


def test_select_view_pairs_filters_by_iou():
    depth = np.full((H, W), 2.0, np.float32)
    rgb = np.zeros((H, W, 3), np.uint8)
    # Shifts of 0, 5, 20, 60 px.
    frames = [RgbdFrame(rgb, depth, K, translation(x=s * 0.04)) for s in (0, 5, 20, 60)]
    pairs = select_view_pairs(frames, iou_low=0.3, iou_high=0.9, stride=1)
    ious = {(p.index_a, p.index_b): p.iou for p in pairs}
    # (0,1): 59/69 = 0.855 kept; (0,2): 44/84 = 0.52 kept; (1,2): 15 px -> 49/79 kept; (0,3): 4/124 rejected.
    assert set(ious) == {(0, 1), (0, 2), (1, 2)}
    assert ious[(0, 2)] == pytest.approx(44 / 84)
    assert len(select_view_pairs(frames, max_pairs=2, stride=1)) == 2
    # Baselines: (0,1) 0.2 m, (1,2) 0.6 m, (0,2) 0.8 m.
    assert select_view_pairs(frames, max_baseline=0.5, stride=1) == [p for p in pairs if p.index_b == 1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(T_wb=np.eye(3)), "4x4"),
        (dict(T_wb=np.full((4, 4), np.nan)), "non-finite"),
        (dict(depth_b=np.ones((10, 10), np.float32)), "intrinsics are for"),
        (dict(depth_a=np.ones((0, 0), np.float32)), "non-empty"),
        (dict(intrinsics_b=np.eye(2)), "3x3"),
    ],
)
def test_bad_inputs_raise(kwargs, message):
    args = dict(depth_a=np.ones((H, W), np.float32), intrinsics_a=K, T_wa=np.eye(4),
                depth_b=np.ones((H, W), np.float32), intrinsics_b=K, T_wb=np.eye(4))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        correspondences(**args)
