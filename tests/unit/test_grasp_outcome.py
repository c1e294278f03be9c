"""Grasp-outcome labeler on synthetic top-down scenes (320x240): a lifted object is a mask, nothing at the pick
is a negative, bad data is skipped with the reason."""

import dataclasses

import cv2
import numpy as np
import pytest

from selfsup_perception.core.dataset.provenance import label_provenance
from selfsup_perception.core.labeling import GraspOutcomeConfig, GraspOutcomeLabeler
from selfsup_perception.core.labeling.quality import mask_iou
from selfsup_perception.core.types import (
    CameraIntrinsics,
    InteractionKind,
    InteractionOutcome,
    InteractionSample,
    RgbdFrame,
)

H, W = 240, 320
K = CameraIntrinsics(fx=300.0, fy=300.0, cx=(W - 1) / 2, cy=(H - 1) / 2, width=W, height=H)
T_WC = np.eye(4)
T_WC[:3, :3] = np.diag([1.0, -1.0, -1.0])  # looking straight down from 1 m
T_WC[:3, 3] = [0.5, 0.0, 1.0]


def _texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.uniform(0, 255, (H, W, 3)).astype(np.float32), (0, 0), 2.0)
    return ((t - t.min()) / (t.max() - t.min()) * 200 + 25).astype(np.uint8)


def _disk(u, v, r):
    yy, xx = np.ogrid[0:H, 0:W]
    return (xx - u) ** 2 + (yy - v) ** 2 <= r * r


def _frame(objects, camera_to_world=T_WC):
    """objects: list of (mask, height m, colour); the table is 1 m below the camera."""
    rgb, depth = _texture(0), np.ones((H, W), np.float32)
    for mask, height, colour in objects:
        rgb[mask] = colour
        depth[mask] = 1.0 - height
    return RgbdFrame(rgb=rgb, depth=depth, intrinsics=K, camera_to_world=camera_to_world)


def _world(u, v, z=0.0):
    """The world point of pixel (u, v) at height z above the table."""
    d = 1.0 - z
    return (0.5 + (u - K.cx) / K.fx * d, -(v - K.cy) / K.fy * d, z)


def _grasp(before, after, pixel, place=(250.0, 60.0), outcome=InteractionOutcome.EXECUTED):
    return InteractionSample("g", InteractionKind.GRASP, before, after, pixel, _world(*pixel), _world(*place),
                             outcome, "grasped and moved object 1")


A = _disk(120, 120, 22)  # the grasped object, 4 cm tall
B = _disk(220, 150, 18)  # another object that stays
PLACED = _disk(250, 60, 22)


def test_a_lifted_object_is_the_mask_and_appears_at_the_place():
    before = _frame([(A, 0.04, (200, 40, 40)), (B, 0.05, (40, 200, 40))])
    after = _frame([(PLACED, 0.04, (200, 40, 40)), (B, 0.05, (40, 200, 40))])
    label = GraspOutcomeLabeler().label(_grasp(before, after, (122.0, 118.0)))
    assert label.kept and not label.is_negative, label.reason
    assert mask_iou(label.mask, A) >= 0.95 and not (label.mask & B).any()
    assert label.stats["vacated_fraction"] == 1.0 and label.stats["appeared_at_place"] > 0.9
    assert label.labeler == "grasp_outcome" and "confirmed" in label.reason


def test_an_object_without_depth_is_labelled_whole():
    """A dark object: the depth sensor saw only its middle; the rest had no depth before and is table after."""
    before = _frame([(A, 0.04, (20, 20, 20))])
    before.depth[A & ~_disk(120, 120, 8)] = np.nan
    after = _frame([(PLACED, 0.04, (20, 20, 20))])
    label = GraspOutcomeLabeler().label(_grasp(before, after, (120.0, 120.0)))
    assert label.kept and not label.is_negative, label.reason
    assert mask_iou(label.mask, A) >= 0.9


def test_nothing_at_the_pick_is_a_negative_and_a_slipped_grasp_is_not():
    scene = _frame([(A, 0.04, (200, 40, 40)), (B, 0.05, (40, 200, 40))])
    same = _frame([(A, 0.04, (200, 40, 40)), (B, 0.05, (40, 200, 40))])
    empty = GraspOutcomeLabeler().label(_grasp(scene, same, (60.0, 200.0)))
    assert empty.kept and empty.is_negative and not empty.mask.any(), empty.reason
    assert "rejected" in empty.reason and not empty.stats["grasp_failed"]
    # the fingers closed on the object but it stayed: the hypothesis is rejected, the pixel is not background
    slipped = GraspOutcomeLabeler().label(_grasp(scene, same, (120.0, 120.0)))
    assert not slipped.kept and not slipped.is_negative and slipped.stats["grasp_failed"], slipped.reason
    forced = GraspOutcomeLabeler(GraspOutcomeConfig(negative_on_failed_grasp=True)).label(
        _grasp(scene, same, (120.0, 120.0)))
    assert forced.kept and forced.is_negative


def test_an_object_only_pushed_aside_is_discarded():
    before = _frame([(A, 0.04, (200, 40, 40))])
    after = _frame([(_disk(135, 120, 22), 0.04, (200, 40, 40))])  # moved 15 px: most of it still there
    label = GraspOutcomeLabeler().label(_grasp(before, after, (120.0, 120.0)))
    assert not label.kept and not label.is_negative and "not lifted" in label.reason, label.reason


def test_camera_motion_with_known_poses_is_removed():
    before = _frame([(A, 0.04, (200, 40, 40)), (B, 0.05, (40, 200, 40))])
    moved = T_WC.copy()
    moved[:3, 3] += [0.006, -0.004, 0.0]  # the mount shook: 1.8 px, 1.2 px
    shift = np.float32([[1, 0, -0.006 * K.fx], [0, 1, -0.004 * K.fy]])  # a top-down camera: a pure image shift
    after = _frame([(PLACED, 0.04, (200, 40, 40)), (B, 0.05, (40, 200, 40))], moved)
    after = dataclasses.replace(after, rgb=cv2.warpAffine(after.rgb, shift, (W, H), borderMode=cv2.BORDER_REFLECT),
                                depth=cv2.warpAffine(after.depth, shift, (W, H), flags=cv2.INTER_NEAREST,
                                                     borderMode=cv2.BORDER_REFLECT))
    label = GraspOutcomeLabeler().label(_grasp(before, after, (120.0, 120.0)))
    assert label.kept and not label.is_negative, label.reason
    assert label.stats["ego_motion"].startswith("poses") and mask_iou(label.mask, A) >= 0.9
    assert not (label.mask & B).any()


def test_failures_and_bad_data_are_skipped_with_the_reason():
    before = _frame([(A, 0.04, (200, 40, 40))])
    after = _frame([(PLACED, 0.04, (200, 40, 40))])
    good = _grasp(before, after, (120.0, 120.0))
    labeler = GraspOutcomeLabeler()
    cases = [
        (dataclasses.replace(good, outcome=InteractionOutcome.FAILED, message="UNREACHABLE: pick out of reach"),
         "the arm failed: UNREACHABLE"),
        (dataclasses.replace(good, kind=InteractionKind.PUSH), "not a grasp"),
        (dataclasses.replace(good, before=dataclasses.replace(before, depth=None)), "has no depth image"),
        (dataclasses.replace(good, after=dataclasses.replace(after, depth=np.full((H, W), np.nan, np.float32))),
         "no valid pixel"),
        (dataclasses.replace(good, before=dataclasses.replace(before, depth=np.zeros((H, W), np.float32))),
         "no valid pixel"),
    ]
    for sample, reason in cases:
        label = labeler.label(sample)
        assert not label.kept and not label.is_negative and label.stats["skipped"], label.reason
        assert label.reason.startswith("skipped: ") and reason in label.reason, label.reason
        assert label.mask.shape == (H, W) and not label.mask.any()
    with pytest.raises(ValueError, match="not finite"):
        labeler.label(dataclasses.replace(good, action_pixel=(np.nan, 3.0)))


def test_provenance_names_the_grasp_labeler_and_its_config():
    rec = label_provenance(GraspOutcomeLabeler(), _grasp(_frame([]), _frame([]), (10.0, 10.0)))
    other = label_provenance(GraspOutcomeLabeler(GraspOutcomeConfig(min_vacated_fraction=0.8)),
                             _grasp(_frame([]), _frame([]), (10.0, 10.0)))
    assert rec["labeler"] == "grasp_outcome" and rec["labeler_version"] == "1"
    assert rec["config"]["min_vacated_fraction"] == 0.6 and rec["config_hash"] != other["config_hash"]


def test_relabel_sends_grasps_to_the_grasp_labeler(tmp_path):
    from selfsup_perception.cli.relabel import main
    from selfsup_perception.core.dataset.sample_store import SampleStore

    before = _frame([(A, 0.04, (200, 40, 40))])
    after = _frame([(PLACED, 0.04, (200, 40, 40))])
    store = SampleStore(tmp_path)
    store.write_sample(dataclasses.replace(_grasp(before, after, (120.0, 120.0)), sample_id="grasp"))
    store.write_sample(dataclasses.replace(_grasp(before, after, (120.0, 120.0)), sample_id="push",
                                           kind=InteractionKind.PUSH))
    assert main([str(tmp_path), "--labeler", "flow"]) == 0
    grasp, push = store.read_label("grasp", "flow"), store.read_label("push", "flow")
    assert grasp.labeler == grasp.provenance["labeler"] == "grasp_outcome" and grasp.kept and not grasp.is_negative
    assert push.labeler == push.provenance["labeler"] == "flow"
    assert main([str(tmp_path), "--labeler", "flow", "--grasp-labeler", "push"]) == 0
    assert store.read_label("grasp", "flow").labeler == "flow"
