"""Ego-motion compensation: camera-induced flow from poses and from a global model; shake gives no label."""

import cv2
import numpy as np

from selfsup_perception.core.labeling import FlowLabelerConfig, FlowMaskLabeler
from selfsup_perception.core.labeling.ego_motion import EgoMotionConfig, homography_flow, pose_induced_flow
from selfsup_perception.core.types import CameraIntrinsics, InteractionKind, InteractionSample, RgbdFrame

H, W = 240, 320
K = CameraIntrinsics(fx=300.0, fy=300.0, cx=(W - 1) / 2, cy=(H - 1) / 2, width=W, height=H)
T_WC = np.eye(4)
T_WC[:3, :3] = np.diag([1.0, -1.0, -1.0])  # looking straight down from 1 m
T_WC[:3, 3] = [0.5, 0.0, 1.0]


def _texture(seed, blur=2.0):
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.uniform(0, 255, (H, W, 3)).astype(np.float32), (0, 0), blur)
    return ((t - t.min()) / (t.max() - t.min()) * 200 + 25).astype(np.uint8)


def _scene(shift=(0, 0), size=36):
    """Textured table 1 m below the camera with a textured box 5 cm high at (140, 100) + ``shift`` (its
    texture moves with it); returns rgb, depth, box mask."""
    rgb, depth = _texture(0), np.ones((H, W), np.float32)
    m = np.zeros((H, W), bool)
    u0, v0 = 140 + shift[0], 100 + shift[1]
    m[v0:v0 + size, u0:u0 + size] = True
    rgb[m] = np.roll(_texture(1), shift[::-1], axis=(0, 1))[m]
    depth[m] = 0.95
    return rgb, depth, m


def _rot(axis, deg):
    return cv2.Rodrigues(np.asarray(axis, float) / np.linalg.norm(axis) * np.radians(deg))[0]


def _turned(t_wc, r_delta):
    """The camera turned by r_delta in its own frame: T_wc @ [R | 0]."""
    d = np.eye(4)
    d[:3, :3] = r_delta
    return t_wc @ d


def _rotated_view(rgb, depth, r_delta):
    """What the turned camera sees: a pure rotation maps pixels by the homography K R^T K^-1."""
    hm = K.matrix @ r_delta.T @ np.linalg.inv(K.matrix)
    a_rgb = cv2.warpPerspective(rgb, hm, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    a_depth = cv2.warpPerspective(depth, hm, (W, H), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    return a_rgb, a_depth, hm


def _sample(b_rgb, b_depth, t_b, a_rgb, a_depth, t_a, pixel=(158.0, 118.0)):
    before = RgbdFrame(rgb=b_rgb, depth=b_depth, intrinsics=K, camera_to_world=t_b)
    after = RgbdFrame(rgb=a_rgb, depth=a_depth, intrinsics=K, camera_to_world=t_a)
    return InteractionSample("t", InteractionKind.PUSH, before, after, pixel, (0, 0, 0), (0, 0, 0))


def test_pose_induced_flow_is_the_rotation_homography_and_the_translation_parallax():
    rgb, depth, box = _scene()
    r = _rot([0.3, -0.5, 1.0], 0.8)
    s = _sample(rgb, depth, T_WC, rgb, depth, _turned(T_WC, r))
    flow = pose_induced_flow(s.before, s.after)
    _, _, hm = _rotated_view(rgb, depth, r)
    expected = homography_flow(hm, (H, W), scale=1.0)
    assert np.abs(flow - expected).max() < 0.05  # px: a rotation moves every depth alike
    # A 1 cm sideways translation: f t / z -> 3.0 px on the table (1 m), 3.16 px on the box (0.95 m).
    d = np.eye(4)
    d[0, 3] = 0.01
    flow = pose_induced_flow(s.before, RgbdFrame(rgb, depth, K, T_WC @ d))
    assert abs(flow[10, 10, 0] + 3.0) < 1e-3 and abs(flow[118, 158, 0] + 300 * 0.01 / 0.95) < 1e-3
    assert np.abs(flow[..., 1]).max() < 1e-4  # no vertical motion (float32 arithmetic: ~1e-5 px)


def test_a_turned_camera_gives_no_positive_label_with_and_without_poses():
    rgb, depth, _ = _scene()
    labeler = FlowMaskLabeler()
    for axis, deg in (([0, 0, 1], 0.8), ([1, 0, 0], 0.6), ([0.2, 1, 0.3], 0.9)):
        r = _rot(axis, deg)
        a_rgb, a_depth, _ = _rotated_view(rgb, depth, r)
        with_poses = labeler.label(_sample(rgb, depth, T_WC, a_rgb, a_depth, _turned(T_WC, r)))
        assert not (with_poses.kept and not with_poses.is_negative), with_poses.reason
        assert with_poses.stats["ego_motion"] == "poses" and with_poses.stats["ego_motion_px"] > 1.0
        # Poses unknown (both frames claim the same pose): the global model finds the motion.
        no_poses = labeler.label(_sample(rgb, depth, T_WC, a_rgb, a_depth, T_WC))
        assert not (no_poses.kept and not no_poses.is_negative), no_poses.reason
        assert no_poses.stats["ego_motion"] == "homography"
        # Without compensation the raw flow sees the whole view move.
        raw = FlowMaskLabeler(FlowLabelerConfig(ego_motion=EgoMotionConfig(enabled=False))).label(
            _sample(rgb, depth, T_WC, a_rgb, a_depth, T_WC))
        assert raw.stats["mean_flow"] > 1.0 and with_poses.stats["moving_area"] < 25


def test_a_push_during_camera_shake_is_still_labelled():
    rgb, depth, box = _scene()
    moved_rgb, moved_depth, _ = _scene(shift=(7, 3))  # the box pushed by (7, 3) px
    r = _rot([0, 0, 1], 0.7)
    a_rgb, a_depth, _ = _rotated_view(moved_rgb, moved_depth, r)
    labeler = FlowMaskLabeler()
    for t_after, source in ((_turned(T_WC, r), "poses"), (T_WC, "homography")):
        label = labeler.label(_sample(rgb, depth, T_WC, a_rgb, a_depth, t_after))
        assert label.kept and not label.is_negative, label.reason
        assert label.stats["ego_motion"] == source
        iou = (label.mask & box).sum() / (label.mask | box).sum()
        assert iou > 0.85, iou
        assert abs(label.stats["mask_mean_flow"] - np.hypot(7, 3)) < 1.0  # the push, not the shake


def test_explicit_camera_poses_override_the_frames():
    rgb, depth, _ = _scene()
    r = _rot([0, 0, 1], 0.8)
    a_rgb, a_depth, _ = _rotated_view(rgb, depth, r)
    sample = _sample(rgb, depth, T_WC, a_rgb, a_depth, T_WC)
    label = FlowMaskLabeler().label(sample, camera_poses=(T_WC, _turned(T_WC, r)))
    assert label.stats["ego_motion"] == "poses" and not (label.kept and not label.is_negative)
    bad = _turned(T_WC, r)
    bad[:3, :3] *= 1.1  # not a rotation: refused with the reason, as a skipped label
    label = FlowMaskLabeler().label(sample, camera_poses=(T_WC, bad))
    assert label.reason.startswith("skipped: bad camera pose") and "not orthonormal" in label.reason


def test_inverted_poses_are_named_in_the_label():
    """Poses given world->camera (inverted) for a still camera far from the world origin: the pose-induced
    flow is huge although the images are identical; the label is discarded and says "inverted pose?"."""
    rgb, depth, _ = _scene()
    t_b = T_WC.copy()
    t_b[:3, 3] = [25.0, 15.0, 1.0]  # a map frame ~30 m away: inverting turns 2 deg into a metre's shift
    t_a = _turned(t_b, _rot([0, 0, 1], 2.0))  # the camera turned 2 deg about its axis
    a_rgb, a_depth, _ = _rotated_view(rgb, depth, _rot([0, 0, 1], 2.0))
    right = FlowMaskLabeler().label(_sample(rgb, depth, t_b, a_rgb, a_depth, t_a))
    assert "inverted" not in right.reason and not (right.kept and not right.is_negative)
    label = FlowMaskLabeler().label(_sample(rgb, depth, np.linalg.inv(t_b), a_rgb, a_depth, np.linalg.inv(t_a)))
    assert not label.kept and "large camera motion" in label.reason and "inverted pose?" in label.reason


def test_a_global_model_of_flow_errors_is_not_applied_but_a_real_shift_is():
    # DIS on a plain or grain-textured table is off by pixels in one direction over large areas, and a
    # homography fits such errors as well as a real shift. Only the real shift registers the images better.
    from selfsup_perception.core.labeling.ego_motion import estimate_ego_motion

    rgb, depth, _ = _scene()
    before = RgbdFrame(rgb=rgb, depth=depth, intrinsics=K, camera_to_world=np.eye(4))
    textured = np.ones((H, W), bool)
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = 2.0  # "everything moved 2 px right"
    still = RgbdFrame(rgb=rgb.copy(), depth=depth, intrinsics=K, camera_to_world=np.eye(4))
    wrong = estimate_ego_motion(before, still, flow, textured)
    assert not wrong.compensated and "does not register the images better" in wrong.reason, wrong.reason
    shifted = cv2.warpAffine(rgb, np.float32([[1, 0, 2], [0, 1, 0]]), (W, H), borderMode=cv2.BORDER_REPLICATE)
    moved = RgbdFrame(rgb=shifted, depth=depth, intrinsics=K, camera_to_world=np.eye(4))
    right = estimate_ego_motion(before, moved, flow, textured)
    assert right.source == "homography" and abs(right.flow[..., 0].mean() - 2.0) < 0.05, right.reason
    # the check can be switched off (the earlier behaviour)
    off = estimate_ego_motion(before, still, flow, textured, config=EgoMotionConfig(min_photometric_gain=0.0))
    assert off.source == "homography"
