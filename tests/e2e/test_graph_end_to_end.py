"""The whole loop as a user starts it: every node in its own process over DDS, on the simulated world.

interaction (pushes through the action) -> labeler (flow labels on disk) -> trainer (model versions)
-> inference (hot-swapped), then ``segment_image`` is answered by a version the trainer served.
Small images and a handful of pushes keep it to about a minute.
"""

import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor

from selfsup_perception.action import ExecuteInteraction
from selfsup_perception.core.dataset.sample_store import SampleStore
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.graph import data_overrides, learning_graph, merge_overrides
from selfsup_perception.launcher import GraphProcess
from selfsup_perception.ros.conversions import rgb_to_msg
from selfsup_perception.ros.service_calls import call_service
from selfsup_perception.srv import SegmentImage, SimResetScene

pytestmark = [pytest.mark.slow, pytest.mark.ros, pytest.mark.sim]


def wait_future(future, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while not future.done():
        assert time.monotonic() < deadline, "no answer in time"
        time.sleep(0.02)
    return future.result()


def test_pushes_become_labels_become_a_served_model(tmp_path):
    overrides = merge_overrides(data_overrides(tmp_path), {
        "sim_world": {"width": 320, "height": 240, "seed": 3},
        "interaction": {"seed": 3},
        "trainer": {"input_width": 80, "input_height": 60, "min_samples": 2, "steps_per_round": 5,
                    "batch_size": 2, "update_interval_s": 0.5, "torch_threads": 1},
        "inference": {"torch_threads": 1},
    })
    checkpoints = tmp_path / "checkpoints"
    with rclpy.init():
        with GraphProcess(learning_graph(with_simulator=True), overrides, log_dir=tmp_path / "logs", echo=False) as graph:
            node = rclpy.create_node("e2e_client")
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            spin = threading.Thread(target=executor.spin, daemon=True)
            spin.start()
            try:
                action = ActionClient(node, ExecuteInteraction, "execute_interaction")
                assert action.wait_for_server(timeout_sec=90), f"interaction node did not start: {graph.dead()}"
                reset = node.create_client(SimResetScene, "/sim/reset_scene")
                executed = 0
                for i in range(6):
                    if i % 3 == 0:
                        assert call_service(reset, SimResetScene.Request(seed=i, split="train", clutter="low"),
                                            30.0).success
                    goal = ExecuteInteraction.Goal(kind=ExecuteInteraction.Goal.KIND_PUSH, auto_select=True,
                                                   record=True)
                    handle = wait_future(action.send_goal_async(goal), 30)
                    executed += bool(wait_future(handle.get_result_async(), 120).result.success)
                assert executed >= 3
                store = SampleStore(tmp_path / "interactions")
                deadline = time.monotonic() + 120
                while store.unlabeled_ids("flow") and time.monotonic() < deadline:
                    time.sleep(0.5)
                assert not store.unlabeled_ids("flow"), "the labeler did not label every stored push"
                deadline = time.monotonic() + 180
                while ckpt.latest_version(checkpoints, "instance_segmentation") is None and time.monotonic() < deadline:
                    time.sleep(1.0)
                latest = ckpt.latest_version(checkpoints, "instance_segmentation")
                assert latest is not None, f"no model version written; nodes dead: {graph.dead()}"
                assert ckpt.serving_input_size(latest.meta) == (80, 60)
                segment = node.create_client(SegmentImage, "segment_image")
                rgb = np.ascontiguousarray(store.read_sample(store.sample_ids()[0]).before.rgb)
                deadline = time.monotonic() + 60
                while True:  # the inference node picks the version up from trainer/model_versions
                    res = call_service(segment, SegmentImage.Request(image=rgb_to_msg(rgb), return_label_image=True), 30.0)
                    if res.success or time.monotonic() > deadline:
                        break
                    time.sleep(1.0)
                assert res.success, res.message
                assert res.segmentation.model_version.startswith("instance_segmentation/v")
                assert (res.segmentation.label_image.height, res.segmentation.label_image.width) == rgb.shape[:2]
                assert not graph.dead()
            finally:
                executor.shutdown()
                node.destroy_node()
