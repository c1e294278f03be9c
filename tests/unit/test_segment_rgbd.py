"""Serving on RGB-D (``segment_rgbd``): the model's instances combined with the depth-aware segments, on real
frames (../shared/realdata/ucn_tabletop) and on a frame without a table."""

from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup_perception.core.dataset.rgbd_folder import frame_ids, load_frame
from selfsup_perception.core.evaluation.bottom_up import depth_bottom_up
from selfsup_perception.core.learning.models.instance_segmentation import InstanceSegConfig
from selfsup_perception.core.learning.serving.inference import segment_instances, segment_rgbd
from selfsup_perception.core.learning.tasks.instance import InstanceSegmentationTask, InstanceTaskConfig
from selfsup_perception.core.types import CameraIntrinsics, RgbdFrame

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "ucn_tabletop"
needs_real_frames = pytest.mark.skipif(not (DATA / "camera_params.json").exists(),
                                       reason=f"real RGB-D frames not found at {DATA} (shared/ is not beside the clone)")
SIZE = (160, 120)


def _model():
    torch.manual_seed(0)
    config = InstanceTaskConfig(model=InstanceSegConfig(widths=(8, 8, 8, 8), decoder_channels=8, embedding_dim=4))
    return InstanceSegmentationTask(config).build_model().eval()


def _consistent(instances, shape, threshold, limit):
    assert len(instances) <= limit
    for inst in instances:
        assert inst.mask.shape == shape and inst.mask.any() and inst.score >= threshold
        ys, xs = np.nonzero(inst.mask)
        assert inst.box == (xs.min(), ys.min(), xs.max(), ys.max())
    assert [i.score for i in instances] == sorted((i.score for i in instances), reverse=True)


@needs_real_frames
@pytest.mark.parametrize("index", [0, 4, 8])
def test_without_a_model_the_answer_is_the_depth_aware_segments_of_the_real_frame(index):
    frame = load_frame(DATA, frame_ids(DATA)[index])
    instances, note = segment_rgbd(None, frame, None, score_threshold=0.0, max_instances=100)
    expected = depth_bottom_up(frame).instances
    assert expected, "every real frame shows objects on a table"
    assert "combined with" in note and len(instances) == len(expected)
    for inst, (mask, score) in zip(instances, sorted(expected, key=lambda t: -t[1])):
        assert np.array_equal(inst.mask, mask) and inst.score == pytest.approx(score)


@needs_real_frames
def test_with_a_model_every_depth_object_is_kept_and_the_limits_hold():
    frame = load_frame(DATA, frame_ids(DATA)[2])
    model = _model()
    depth = depth_bottom_up(frame).instances
    instances, _ = segment_rgbd(model, frame, SIZE, score_threshold=0.3, max_instances=50)
    _consistent(instances, frame.shape, 0.3, 50)
    # each depth segment is either kept or split into model instances that lie inside it
    covered = np.zeros(frame.shape, bool)
    for inst in instances:
        covered |= inst.mask
    for mask, _ in depth:
        assert (covered & mask).sum() >= 0.5 * mask.sum()
    few, _ = segment_rgbd(model, frame, SIZE, score_threshold=0.3, max_instances=2)
    assert len(few) == min(2, len(instances))


def test_a_frame_without_a_table_gives_the_models_instances_and_says_why():
    rng = np.random.default_rng(0)
    h, w = 120, 160
    rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    depth = rng.uniform(0.3, 3.0, (h, w)).astype(np.float32)  # no plane anywhere
    frame = RgbdFrame(rgb=rgb, depth=depth, intrinsics=CameraIntrinsics(150.0, 150.0, w / 2, h / 2, w, h)).validate()
    model = _model()
    instances, note = segment_rgbd(model, frame, SIZE, score_threshold=0.0, max_instances=20)
    assert note.startswith("no depth-aware segments")
    alone = segment_instances(model, rgb, SIZE, score_threshold=0.0, max_instances=20)
    assert [(i.score, i.box) for i in instances] == [(i.score, i.box) for i in alone]
