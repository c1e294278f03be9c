"""Descriptor services of the inference node over DDS: compute_descriptors, find_correspondences, bad requests.

The served model is a tiny DescriptorNet with random weights, saved with ``checkpoint.save_checkpoint`` exactly
as the trainer does. A convolutional net is translation-equivariant away from the borders, so on a random
texture and a copy shifted by a multiple of the output stride even random descriptors are unique and the
matches must land at the known shift.
"""

import cv2
import numpy as np
import pytest
import rclpy
import torch
from rclpy.parameter import Parameter
from ros_helpers import wait_future
from sensor_msgs.msg import Image

from selfsup_perception.core.descriptors.matching import compute_descriptor_image
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.tasks.descriptors import DescriptorTask, DescriptorTaskConfig
from selfsup_perception.core.learning.models.backbone import BackboneConfig
from selfsup_perception.core.learning.models.descriptor_net import DescriptorNetConfig
from selfsup_perception.nodes.inference_node import InferenceNode
from selfsup_perception.ros.conversions import rgb_to_msg
from selfsup_perception.srv import ComputeDescriptors, FindCorrespondences

pytestmark = pytest.mark.ros
H, W, D, SHIFT = 64, 80, 16, 8  # SHIFT: a multiple of the output stride (4)
TINY = DescriptorNetConfig(descriptor_dim=D, head_channels=16,
                           backbone=BackboneConfig(widths=(8, 16, 16, 16), output_stride=4))


@pytest.fixture(scope="module")
def scene():
    """(reference, target) uint8 RGB with target(x + SHIFT, y) = reference(x, y)."""
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.random((H, W + SHIFT, 3)).astype(np.float32), (0, 0), 1.5)
    big = ((big - big.min()) / np.ptp(big) * 255).astype(np.uint8)
    return np.ascontiguousarray(big[:, SHIFT:]), np.ascontiguousarray(big[:, :W])


def serve_descriptors(spinner, tmp_path, client_name: str, **checkpoint_meta):
    """A descriptors checkpoint (v1) in tmp_path, an inference node serving it, and clients of both services."""
    torch.manual_seed(0)
    task = DescriptorTask(DescriptorTaskConfig(mode="identical", model=TINY))
    version_dir = ckpt.save_checkpoint(tmp_path, task=task.name, model=task.build_model(),
                                       model_config=task.model_config(), step=0, **checkpoint_meta)
    spinner.add(InferenceNode(parameter_overrides=[Parameter("checkpoint_dir", value=str(tmp_path)),
                                                   Parameter("torch_threads", value=1)]))
    client_node = spinner.add(rclpy.create_node(client_name))
    cd = client_node.create_client(ComputeDescriptors, "compute_descriptors")
    fc = client_node.create_client(FindCorrespondences, "find_correspondences")
    assert cd.wait_for_service(timeout_sec=10) and fc.wait_for_service(timeout_sec=10)
    return version_dir, cd, fc


@pytest.fixture
def served(spinner, tmp_path):
    """A descriptors checkpoint without a recorded training size, served by an inference node."""
    return serve_descriptors(spinner, tmp_path, "descriptor_clients")


def correspondences(fc, ref, tgt, pixels, model_version="", ref_msg=None):
    req = FindCorrespondences.Request(reference_image=ref_msg or rgb_to_msg(ref), target_image=rgb_to_msg(tgt),
                                      reference_pixels=list(np.asarray(pixels, np.float32).reshape(-1)),
                                      model_version=model_version)
    return wait_future(fc.call_async(req), 20)


def test_compute_descriptors_and_find_correspondences(served, scene):
    version_dir, cd, fc = served
    ref, tgt = scene
    res = wait_future(cd.call_async(ComputeDescriptors.Request(image=rgb_to_msg(ref, frame_id="cam"))), 20)
    assert res.success, res.message
    d = res.descriptors
    assert (d.height, d.width, d.dimension) == (H, W, D)
    assert d.model_version == "descriptors/v1" and d.header.frame_id == "cam"
    desc = np.asarray(d.data, dtype=np.float32).reshape(H, W, D)
    assert np.allclose(np.linalg.norm(desc, axis=-1), 1.0, atol=1e-5)
    model, meta = ckpt.load_model_for_inference(version_dir)  # the same model, outside the node
    assert meta["task"] == "descriptors"
    assert np.allclose(desc, compute_descriptor_image(model, ref), atol=1e-6)

    ys, xs = np.mgrid[16:48:4, 16:60:4]  # interior pixels (away from the zero-padded borders)
    px = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    res = correspondences(fc, ref, tgt, px)
    assert res.success, res.message
    assert res.model_version == "descriptors/v1" and str(len(px)) in res.message
    out = np.asarray(res.target_pixels, dtype=np.float64).reshape(-1, 2)
    conf = np.asarray(res.confidences)
    assert out.shape == px.shape and conf.shape == (len(px),)
    err = np.linalg.norm(out - (px + [SHIFT, 0]), axis=1)
    assert np.median(err) == 0.0 and np.mean(err <= 2.0) >= 0.95, err
    assert ((conf > 0) & (conf <= 1)).all()
    # identical images: every pixel matches itself
    same = correspondences(fc, ref, ref, px[:10])
    assert same.success and np.allclose(np.asarray(same.target_pixels).reshape(-1, 2), px[:10])


def test_bad_requests_get_clear_errors_and_the_node_keeps_serving(served, scene):
    _, cd, fc = served
    ref, tgt = scene
    yuv = Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8))
    res = wait_future(cd.call_async(ComputeDescriptors.Request(image=yuv)), 20)
    assert not res.success and "yuv422" in res.message
    res = wait_future(cd.call_async(ComputeDescriptors.Request(image=rgb_to_msg(ref), model_version="descriptors/v42")), 20)
    assert not res.success and "version 42 does not exist" in res.message
    cases = {
        "odd number of coordinates": (dict(pixels=[1.0, 2.0, 3.0]), "(u, v) pairs"),
        "pixel outside the image": (dict(pixels=[[W + 5.0, 3.0]]), f"inside the {W}x{H} reference image"),
        "NaN pixel": (dict(pixels=[[np.nan, 3.0]]), "NaN"),
        "wrong encoding": (dict(pixels=[[3.0, 3.0]], ref_msg=yuv), "yuv422"),
        "unknown model version": (dict(pixels=[[3.0, 3.0]], model_version="descriptors/v42"), "version 42 does not exist"),
        "malformed model version": (dict(pixels=[[3.0, 3.0]], model_version="newest"), "not of the form"),
    }
    for name, (kwargs, expected) in cases.items():
        res = correspondences(fc, ref, tgt, **kwargs)
        assert not res.success and expected in res.message, (name, res.message)
        assert len(res.target_pixels) == 0
    # still serving, and the version can be named explicitly
    res = correspondences(fc, ref, tgt, [[20.0, 20.0]], model_version="descriptors/v1")
    assert res.success and res.model_version == "descriptors/v1"
    assert np.allclose(res.target_pixels, [20.0 + SHIFT, 20.0])
    res = wait_future(cd.call_async(ComputeDescriptors.Request(image=rgb_to_msg(tgt))), 20)
    assert res.success and res.descriptors.width == W


def test_descriptors_are_served_at_the_checkpoints_training_size(spinner, tmp_path, scene):
    """A checkpoint trained at W x H serves 4x larger images: the network runs at W x H, matches come back in
    full-resolution pixels, and the dense image equals the core call at the training size."""
    version_dir, cd, fc = serve_descriptors(spinner, tmp_path, "descriptor_clients_training_size",
                                            inference=ckpt.inference_info((W, H)))
    s = 4
    ref, tgt = (cv2.resize(im, (W * s, H * s), interpolation=cv2.INTER_LINEAR) for im in scene)
    res = wait_future(cd.call_async(ComputeDescriptors.Request(image=rgb_to_msg(ref))), 20)
    assert res.success, res.message
    desc = np.asarray(res.descriptors.data, dtype=np.float32).reshape(H * s, W * s, D)
    model, _ = ckpt.load_model_for_inference(version_dir)
    assert np.allclose(desc, compute_descriptor_image(model, ref, input_size=(W, H)), atol=1e-5)
    ys, xs = np.mgrid[16:48:4, 16:60:4]
    px = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64) * s
    res = correspondences(fc, ref, tgt, px)
    assert res.success, res.message
    err = np.linalg.norm(np.asarray(res.target_pixels, dtype=np.float64).reshape(-1, 2) - (px + [SHIFT * s, 0]), axis=1)
    assert np.median(err) <= 1.0 and np.mean(err <= s) >= 0.9, err
