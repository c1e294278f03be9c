"""The issue's bad-input matrix over DDS: every bad request is answered, and the node still serves afterwards.

Real inference node (real checkpoints written by ``save_checkpoint``), real clients over DDS.
"""

import json
import shutil
import time

import cv2
import numpy as np
import pytest
import rclpy
import torch
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo
from ros_helpers import wait_future

from selfsup_perception.core.learning.models.backbone import BackboneConfig
from selfsup_perception.core.learning.models.descriptor_net import DescriptorNetConfig
from selfsup_perception.core.learning.models.instance_segmentation import InstanceSegConfig
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.tasks.descriptors import DescriptorTask, DescriptorTaskConfig
from selfsup_perception.core.learning.tasks.instance import InstanceSegmentationTask, InstanceTaskConfig
from selfsup_perception.nodes.inference_node import InferenceNode
from selfsup_perception.core.evaluation.bottom_up import depth_bottom_up
from selfsup_perception.core.types import CameraIntrinsics
from selfsup_perception.ros.conversions import depth_to_msg, instance_masks_from_msg, intrinsics_to_camera_info, rgb_to_msg
from selfsup_perception.sim.tabletop import CameraConfig, SimConfig, TabletopSim
from selfsup_perception.srv import ComputeDescriptors, FindCorrespondences, LoadModel, SegmentImage

pytestmark = pytest.mark.ros
H, W = 48, 64
INSTANCE = InstanceTaskConfig(model=InstanceSegConfig(widths=(8, 8, 8, 8), decoder_channels=8, embedding_dim=4))
DESCRIPTORS = DescriptorTaskConfig(mode="identical", model=DescriptorNetConfig(
    descriptor_dim=8, head_channels=8, backbone=BackboneConfig(widths=(8, 8, 8, 8), output_stride=4)))


def save(root, task, n=1):
    torch.manual_seed(0)
    return [ckpt.save_checkpoint(root, task=task.name, model=task.build_model(), model_config=task.model_config(),
                                 step=i, inference=ckpt.inference_info((W, H))) for i in range(n)]


@pytest.fixture
def clients(spinner, tmp_path):
    def start(n_instance=2, extra=()):
        save(tmp_path / "ck", InstanceSegmentationTask(INSTANCE), n_instance)
        save(tmp_path / "ck", DescriptorTask(DESCRIPTORS))
        node = spinner.add(InferenceNode(parameter_overrides=[
            Parameter("checkpoint_dir", value=str(tmp_path / "ck")), Parameter("torch_threads", value=1),
            Parameter("follow_trainer", value=False),
            *extra]))
        c = spinner.add(rclpy.create_node("robustness_clients"))
        out = {"node": node, "segment": c.create_client(SegmentImage, "segment_image"),
               "load": c.create_client(LoadModel, "load_model"),
               "describe": c.create_client(ComputeDescriptors, "compute_descriptors"),
               "match": c.create_client(FindCorrespondences, "find_correspondences")}
        assert all(v.wait_for_service(timeout_sec=10) for k, v in out.items() if k != "node")
        return out
    return start


def rgb(seed=0, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def texture(seed=0, h=H, w=W):
    """Blurred noise: a texture whose descriptors are distinctive even with random weights."""
    img = cv2.GaussianBlur(np.random.default_rng(seed).random((h, w, 3)).astype(np.float32), (0, 0), 1.5)
    return ((img - img.min()) / np.ptp(img) * 255).astype(np.uint8)


def camera_info(w=W, h=H):
    return intrinsics_to_camera_info(CameraIntrinsics(0.8 * w, 0.8 * w, w / 2, h / 2, w, h))


def call(client, request, timeout=30):
    return wait_future(client.call_async(request), timeout)


def still_serves(c):
    res = call(c["segment"], SegmentImage.Request(image=rgb_to_msg(rgb())))
    assert res.success, res.message
    return res


MALFORMED_META = {
    "bare number": lambda m: 42,
    "model_config 42": lambda m: {**m, "model_config": 42},
    "negative width": lambda m: {**m, "model_config": {**m["model_config"], "model": {
        **m["model_config"]["model"], "widths": [-8, 8, 8, 8]}}},
    "embedding_dim x": lambda m: {**m, "model_config": {**m["model_config"], "model": {
        **m["model_config"]["model"], "embedding_dim": "x"}}},
    "version null": lambda m: {**m, "version": None},
    "descriptors without its config": lambda m: {**m, "task": "descriptors"},
    "one extra model_config key": lambda m: {**m, "model_config": {**m["model_config"], "model": {
        **m["model_config"]["model"], "extra": 1}}},
}


def test_malformed_meta_variants_to_load_model_are_answered_and_the_node_keeps_serving(clients, tmp_path):
    c = clients()
    good = tmp_path / "ck" / "instance_segmentation" / "v00001"
    meta = json.loads((good / ckpt.META_FILE).read_text())
    for i, (name, mutate) in enumerate(MALFORMED_META.items()):
        bad = tmp_path / "ck" / "uploads" / f"v{i + 1:05d}"
        shutil.copytree(good, bad)
        (bad / ckpt.META_FILE).write_text(json.dumps(mutate(meta)))
        task = "descriptors" if "descriptors" in name else "instance_segmentation"
        res = call(c["load"], LoadModel.Request(task=task, version=-1, checkpoint_path=str(bad)))
        assert not res.success and res.message, name
        assert "internal error" not in res.message, (name, res.message)  # a clear reason, not a crash
        still_serves(c)
    assert c["node"].guard.counts["unexpected"] == 0
    # a path outside checkpoint_dir is refused unless allowed
    outside = tmp_path / "elsewhere" / "v00001"
    shutil.copytree(good, outside)
    res = call(c["load"], LoadModel.Request(task="instance_segmentation", version=-1, checkpoint_path=str(outside)))
    assert not res.success and "outside checkpoint_dir" in res.message
    res = call(c["load"], LoadModel.Request(task="instance_segmentation", version=-1,
                                           checkpoint_path=str(tmp_path / "ck" / "instance_segmentation" / ".." / ".." / "elsewhere" / "v00001")))
    assert not res.success and "outside checkpoint_dir" in res.message
    res = call(c["load"], LoadModel.Request(task="instance_segmentation", version=1))
    assert res.success and res.active.version == 1
    assert (good / ckpt.PIN_FILE).read_text().strip() == "served"


def test_start_up_serves_the_newest_version_that_loads(clients, tmp_path):
    root = tmp_path / "ck"
    save(root, InstanceSegmentationTask(INSTANCE), 3)
    newest = root / "instance_segmentation" / "v00003"
    meta = json.loads((newest / ckpt.META_FILE).read_text())
    meta["model_config"]["model"]["extra"] = 1
    (newest / ckpt.META_FILE).write_text(json.dumps(meta))
    (root / "instance_segmentation" / "v00002" / ckpt.MODEL_FILE).write_bytes(b"truncated")
    c = clients(n_instance=0)
    assert c["node"].registry.active_names()["instance_segmentation"] == "instance_segmentation/v1"
    assert still_serves(c).segmentation.model_version == "instance_segmentation/v1"


def test_bad_segment_requests_are_refused_with_a_reason(clients):
    c = clients(extra=[Parameter("max_image_pixels", value=W * H * 4)])
    cases = {
        "NaN score threshold": (dict(score_threshold=float("nan")), "score_threshold"),
        "score threshold above 1": (dict(score_threshold=3.0), "score_threshold"),
        "image too large": (dict(image=rgb_to_msg(rgb(h=H * 5, w=W))), "max_image_pixels"),
        "depth of another size": (dict(depth=depth_to_msg(np.ones((H // 2, W // 2), np.float32))), "depth is"),
        "depth in a wrong encoding": (dict(depth=rgb_to_msg(rgb())), "depth"),
        "depth without a valid value": (dict(depth=depth_to_msg(np.full((H, W), np.nan, np.float32)),
                                             camera_info=camera_info()), "no valid"),
        "depth without camera_info": (dict(depth=depth_to_msg(np.ones((H, W), np.float32))), "camera_info"),
        "camera_info of another size": (dict(depth=depth_to_msg(np.ones((H, W), np.float32)),
                                             camera_info=camera_info(w=W * 2, h=H * 2)), "camera_info is for"),
        "camera_info without a focal length": (dict(depth=depth_to_msg(np.ones((H, W), np.float32)),
                                                    camera_info=CameraInfo(width=W, height=H)), "focal"),
    }
    for name, (fields, expected) in cases.items():
        req = SegmentImage.Request(image=rgb_to_msg(rgb()))
        for k, v in fields.items():
            setattr(req, k, v)
        res = call(c["segment"], req)
        assert not res.success and expected in res.message, (name, res.message)
        still_serves(c)
    ok = SegmentImage.Request(image=rgb_to_msg(rgb()), depth=depth_to_msg(np.ones((H, W), np.float32)),
                              camera_info=camera_info(), max_instances=10**9)  # clamped to 1000
    assert call(c["segment"], ok).success


@pytest.fixture(scope="module")
def tabletop_view():
    """One rendered RGB-D view of the simulated tabletop (320x240) and its depth-aware segments."""
    with TabletopSim(SimConfig(camera=CameraConfig(width=320, height=240))) as sim:
        sim.reset_scene(7, clutter="medium")
        frame = sim.render()
    return frame, depth_bottom_up(frame).instances


def _rgbd_request(frame):
    return SegmentImage.Request(image=rgb_to_msg(frame.rgb), depth=depth_to_msg(frame.depth),
                                camera_info=intrinsics_to_camera_info(frame.intrinsics))


@pytest.mark.parametrize("n_instance", [2, 0])
def test_segment_image_with_depth_answers_the_model_combined_with_the_depth_aware_segments(
        clients, tabletop_view, n_instance):
    frame, depth_segments = tabletop_view
    assert depth_segments, "the scene has objects on the table"
    c = clients(n_instance=n_instance)
    res = call(c["segment"], _rgbd_request(frame))
    assert res.success and "depth-aware segments" in res.message, res.message
    assert res.segmentation.model_version == ("instance_segmentation/v2" if n_instance else "")
    masks, _ = instance_masks_from_msg(res.segmentation, frame.shape)
    covered = np.any(masks, axis=0) if masks else np.zeros(frame.shape, bool)
    for mask, _ in depth_segments:  # every object depth sees is answered, whole or split by the model
        assert (covered & mask).sum() >= 0.5 * mask.sum()
    if not n_instance:
        assert len(masks) == len(depth_segments)
    # the parameter turns it off: the model alone, and the answer says depth was not used
    c["node"].set_parameters([Parameter("combine_with_depth", value=False)])
    res = call(c["segment"], _rgbd_request(frame))
    if n_instance:
        assert res.success and "depth not used" in res.message, res.message
    else:
        assert not res.success  # no model and no depth: nothing to answer with


def test_explicit_version_requests_keep_the_model_cache_bounded(clients):
    c = clients(n_instance=6, extra=[Parameter("max_cached_models", value=2)])
    for v in [1, 2, 3, 4, 5, 6, 1, 2, 3] * 2:
        res = call(c["segment"], SegmentImage.Request(image=rgb_to_msg(rgb()), model_version=f"v{v}"))
        assert res.success and res.segmentation.model_version == f"instance_segmentation/v{v}"
    stats = c["node"].registry.cache_stats()
    assert stats["cached"] <= 2 and stats["evicted"] > 0
    assert c["node"].registry.active_names()["instance_segmentation"] == "instance_segmentation/v6"


def test_descriptor_modes_and_limits(clients):
    c = clients(extra=[Parameter("max_dense_pixels", value=W * H)])
    img = texture(3)
    dense = call(c["describe"], ComputeDescriptors.Request(image=rgb_to_msg(img)))
    assert dense.success and (dense.descriptors.height, dense.descriptors.width, dense.dimension) == (H, W, 8)
    full = np.asarray(dense.descriptors.data, np.float32).reshape(H, W, 8)
    grid = call(c["describe"], ComputeDescriptors.Request(image=rgb_to_msg(img), mode=ComputeDescriptors.Request.MODE_GRID))
    assert grid.success and grid.grid_stride == 4  # the network's output stride
    g = np.asarray(grid.descriptors.data, np.float32).reshape(grid.descriptors.height, grid.descriptors.width, 8)
    assert np.allclose(g, full[::4, ::4], atol=1e-5)
    px = [[5.0, 7.0], [60.0, 40.0], [0.0, 0.0]]
    sparse = call(c["describe"], ComputeDescriptors.Request(
        image=rgb_to_msg(img), mode=ComputeDescriptors.Request.MODE_PIXELS, pixels=list(np.ravel(px))))
    assert sparse.success and sparse.dimension == 8
    s = np.asarray(sparse.sparse_descriptors, np.float32).reshape(-1, 8)
    assert np.allclose(s, [full[7, 5], full[40, 60], full[0, 0]], atol=1e-5)
    kp = call(c["describe"], ComputeDescriptors.Request(image=rgb_to_msg(img), mode=ComputeDescriptors.Request.MODE_KEYPOINTS,
                                                        max_keypoints=10))
    assert kp.success and 0 < len(kp.pixels) // 2 <= 10 and len(kp.sparse_descriptors) == 8 * (len(kp.pixels) // 2)
    big = rgb_to_msg(rgb(h=H * 2, w=W))
    res = call(c["describe"], ComputeDescriptors.Request(image=big))
    assert not res.success and "max_dense_pixels" in res.message and "MODE_GRID" in res.message
    assert call(c["describe"], ComputeDescriptors.Request(image=big, mode=ComputeDescriptors.Request.MODE_GRID)).success
    for bad, expected in ((dict(mode=9), "unknown mode"), (dict(mode=2, pixels=[1.0]), "(u, v) pairs"),
                          (dict(mode=2, pixels=[float("nan"), 1.0]), "NaN"), (dict(mode=2, pixels=[1e9, 1.0]), "inside")):
        res = call(c["describe"], ComputeDescriptors.Request(image=rgb_to_msg(img), **bad))
        assert not res.success and expected in res.message, (bad, res.message)
    # find_correspondences without dense images: the image matches itself
    pts = np.array([[10.0, 12.0], [30.0, 20.0], [50.0, 33.0]])
    m = call(c["match"], FindCorrespondences.Request(reference_image=rgb_to_msg(img), target_image=rgb_to_msg(img),
                                                   reference_pixels=list(pts.ravel())))
    assert m.success and np.allclose(np.asarray(m.target_pixels).reshape(-1, 2), pts)
    res = call(c["match"], FindCorrespondences.Request(reference_image=big, target_image=big, reference_pixels=[1.0, 1.0],
                                                     exhaustive=True))
    assert not res.success and "max_dense_pixels" in res.message
    still_serves(c)


def test_descriptor_requests_do_not_block_segment_image(clients):
    """While several heavy descriptor requests queue up, a segment_image request is answered before they finish."""
    c = clients(extra=[Parameter("max_dense_pixels", value=1200 * 1200)])
    big = rgb_to_msg(texture(5, h=1200, w=1200))
    heavy = [c["describe"].call_async(ComputeDescriptors.Request(image=big)) for _ in range(3)]
    time.sleep(0.3)  # the first one is being computed, the others wait in their own callback group
    res = call(c["segment"], SegmentImage.Request(image=rgb_to_msg(rgb())))
    assert res.success
    pending = sum(not f.done() for f in heavy)
    assert pending >= 1, "segment_image was answered only after every descriptor request"
    for f in heavy:
        assert wait_future(f, 120).success
