"""The whole offline path over DDS: simulated robot bag (standard topics) -> replay_bag views -> train_offline
descriptors -> the inference node serves that checkpoint (compute_descriptors), equal to the model loaded
outside the node."""

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from ros_helpers import wait_future

from selfsup_perception.cli import record_sim_bag, replay_bag, train_offline
from selfsup_perception.core.descriptors.matching import compute_descriptor_image
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.nodes.inference_node import InferenceNode
from selfsup_perception.ros.conversions import rgb_to_msg
from selfsup_perception.srv import ComputeDescriptors

pytestmark = [pytest.mark.ros, pytest.mark.sim, pytest.mark.slow]


def test_inference_node_serves_a_checkpoint_trained_offline_from_a_robot_bag(spinner, tmp_path):
    record_sim_bag.record(tmp_path / "bag", "mcap", views=3, width=80, height=60)
    assert replay_bag.main([str(tmp_path / "bag"), "--out", str(tmp_path / "views"), "--mode", "views"]) == 0
    assert train_offline.main(["--task", "descriptors", "--dataset", str(tmp_path / "views"),
                               "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "2",
                               "--input-size", "64", "48", "--widths", "8", "16", "16", "16",
                               "--num-keypoints", "16", "--threads", "1", "--warmup-steps", "0"]) == 0
    checkpoints = tmp_path / "run" / "checkpoints"
    spinner.add(InferenceNode(parameter_overrides=[Parameter("checkpoint_dir", value=str(checkpoints)),
                                                   Parameter("torch_threads", value=1)]))
    client = spinner.add(rclpy.create_node("offline_checkpoint_client")).create_client(
        ComputeDescriptors, "compute_descriptors")
    assert client.wait_for_service(timeout_sec=10)
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    res = wait_future(client.call_async(ComputeDescriptors.Request(image=rgb_to_msg(rgb))), 30)
    assert res.success, res.message
    assert res.descriptors.model_version == "descriptors/v1"
    served = np.asarray(res.descriptors.data, dtype=np.float32).reshape(48, 64, res.descriptors.dimension)
    model, meta = ckpt.load_model_for_inference(checkpoints / "descriptors" / "v00001")
    assert meta["step"] == 2
    np.testing.assert_allclose(served, compute_descriptor_image(model, rgb), atol=1e-5)
