"""The core on real RGB-D frames (../shared/realdata/ucn_tabletop): table plane without a pose, no labels
from camera shake, synthetic pushes labelled against their known masks, no exception on bad depth."""

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from selfsup_perception.core.dataset.rgbd_folder import frame_ids, load_frame
from selfsup_perception.core.evaluation.bottom_up import bottom_up_instances, depth_bottom_up
from selfsup_perception.core.evaluation.synthetic_push import (
    SyntheticPushConfig,
    shake_frame,
    shake_homography,
    synthetic_push,
)
from selfsup_perception.core.geometry.table_plane import find_table_plane
from selfsup_perception.core.labeling import FlowMaskLabeler, FrameDifferenceLabeler
from selfsup_perception.core.labeling.quality import mask_iou
from selfsup_perception.core.types import InteractionKind, InteractionSample

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT.parent / "shared" / "realdata" / "ucn_tabletop"

pytestmark = pytest.mark.skipif(not (DATA / "camera_params.json").exists(),
                                reason=f"real RGB-D frames not found at {DATA} (shared/ is not beside the clone)")


@pytest.fixture(scope="module")
def frames():
    cv2.setNumThreads(1)
    return [load_frame(DATA, i) for i in frame_ids(DATA)]


def _objects(height: np.ndarray, min_area: int = 1000) -> list[np.ndarray]:
    """Connected regions 2-40 cm above the plane: objects standing on the table."""
    above = np.nan_to_num(height, nan=0.0) > 0.02
    n, lab, stats, _ = cv2.connectedComponentsWithStats(above.astype(np.uint8), connectivity=8)
    out = []
    for k in range(1, n):
        m = lab == k
        if stats[k, cv2.CC_STAT_AREA] >= min_area and np.nanmax(height[m]) < 0.4:
            out.append(m)
    return out


def test_table_plane_found_in_every_real_frame_without_a_pose(frames):
    assert len(frames) == 9
    kernel = np.ones((9, 9), np.uint8)
    for f in frames:
        result = find_table_plane(f)
        assert result.found, f"{f.frame_id}: {result.reason}"
        assert not result.gravity_from_pose and 0 < result.confidence <= 1
        plane = result.plane
        assert result.inlier_fraction > 0.25, f.frame_id
        assert plane.normal[1] < -0.3, f"{f.frame_id}: the table's normal should point up in the image"
        height = plane.height_image(f)
        objects = _objects(height)
        assert objects, f"{f.frame_id}: no object stands on the plane"
        for m in objects:
            # Checked against the depth of the objects on it: each touches the plane (the pixels
            # around it are at height ~0) and none floats or sinks.
            ring = cv2.dilate(m.astype(np.uint8), kernel).astype(bool) & ~m & np.isfinite(height)
            assert np.percentile(np.abs(height[ring]), 10) < 0.02, f"{f.frame_id}: object not on the plane"


def _shake_samples(frame, shakes):
    largest = max(depth_bottom_up(frame).instances, key=lambda t: int(t[0].sum()))[0]
    ys, xs = np.nonzero(largest)
    pixel = (float(xs[len(xs) // 2]), float(ys[len(ys) // 2]))
    for shift, deg, scale in shakes:
        after = shake_frame(frame, shake_homography(frame.shape, shift, deg, scale))
        yield InteractionSample(f"{frame.frame_id}-shake", InteractionKind.PUSH, frame, after, pixel,
                                (0, 0, 0), (0, 0, 0))


def test_camera_shake_alone_gives_no_positive_label_on_real_frames(frames):
    shakes = [((1.0, 0.0), 0.0, 1.0), ((-3.0, 2.0), 0.0, 1.0), ((5.0, 0.0), 0.0, 1.0),
              ((0.0, 0.0), 0.5, 1.0), ((1.5, -1.0), 0.4, 1.004)]
    labeler = FlowMaskLabeler()
    for f in frames:
        for sample in _shake_samples(f, shakes):
            label = labeler.label(sample)
            assert not (label.kept and not label.is_negative), \
                f"{f.frame_id}: kept positive from shake ({label.stats['area']} px): {label.reason}"
            assert label.stats["ego_motion"] == "homography", label.stats["ego_motion_reason"]


def test_synthetic_pushes_on_real_frames_are_labelled_like_their_known_masks(frames):
    labeler = FlowMaskLabeler()
    ious, n = [], 0
    for shaken in (False, True):
        cfg = SyntheticPushConfig(shake_px=4.0 if shaken else 0.0, shake_deg=0.5 if shaken else 0.0)
        for f in frames:
            push, why = synthetic_push(f, np.random.default_rng([int(f.frame_id), int(shaken)]), cfg)
            if push is None:
                continue
            n += 1
            # The pair is plausible: the moved object keeps its height above the table, the hole is table.
            plane = find_table_plane(f).plane
            h_before = np.nanmedian(plane.height_image(f)[push.mask])
            if not shaken:
                h_after = np.nanmedian(plane.height_image(push.sample.after)[push.mask_after])
                assert abs(h_after - h_before) < 0.01
                hole = push.mask & ~push.mask_after
                assert np.nanmedian(np.abs(plane.height_image(push.sample.after)[hole])) < 0.005
            label = labeler.label(push.sample)
            if label.kept and not label.is_negative:
                ious.append(mask_iou(label.mask, push.mask))
    assert n >= 12, f"only {n} synthetic pushes could be made"
    assert len(ious) >= 0.8 * n, f"{len(ious)} of {n} pushes kept"
    assert np.median(ious) >= 0.8, ious
    assert np.mean(ious) >= 0.75, ious


def test_invalid_zero_and_nan_depth_never_raise(frames):
    f = frames[0]
    nan_depth = np.full(f.depth.shape, np.nan, np.float32)
    zero_depth = np.zeros(f.depth.shape, np.float32)
    dark_counter = f.depth.copy()
    dark_counter[:, :] = np.nan
    dark_counter[:4] = f.depth[:4]  # a dark counter top: a few rows of depth, not enough for a table
    holes = f.depth.copy()
    holes[np.random.default_rng(0).uniform(size=holes.shape) < 0.5] = np.nan  # half the pixels invalid
    labelers = (FlowMaskLabeler(), FrameDifferenceLabeler())
    for depth in (nan_depth, zero_depth, dark_counter, holes):
        bad = dataclasses.replace(f, depth=depth)
        plane = find_table_plane(bad)
        if depth is not holes:
            assert not plane.found and plane.reason
        assert isinstance(depth_bottom_up(bad).instances, list)
        assert isinstance(bottom_up_instances(bad), list)
        for before, after in ((bad, f), (f, bad), (bad, bad)):
            sample = InteractionSample("bad", InteractionKind.PUSH, before, after, (320.0, 240.0), (0, 0, 0), (0, 0, 0))
            for labeler in labelers:
                label = labeler.label(sample)
                assert label.mask.shape == f.depth.shape
                if depth is nan_depth or depth is zero_depth:
                    assert label.reason.startswith("skipped: ") and not label.kept
    # A frame without a usable table: the labeler says so instead of raising.
    label = FlowMaskLabeler().label(InteractionSample("no table", InteractionKind.PUSH,
                                                      dataclasses.replace(f, depth=dark_counter), f, (320.0, 240.0),
                                                      (0, 0, 0), (0, 0, 0)))
    assert label.reason.startswith("skipped: ") and ("table" in label.reason or "depth" in label.reason)
