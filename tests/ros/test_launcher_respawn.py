"""The graph outlives a node: under the launcher, a killed node is restarted and the others keep serving.

Real node processes started by ``launcher.GraphProcess`` exactly as ``python -m selfsup_perception.launcher``
does, real DDS between them and this test's client.
"""

import math
import os
import signal
import threading
import time

import numpy as np
import pytest
import rclpy
import torch
from rclpy.executors import SingleThreadedExecutor

from selfsup_perception.core.learning.models.instance_segmentation import InstanceSegConfig
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.tasks.instance import InstanceSegmentationTask, InstanceTaskConfig
from selfsup_perception.graph import CAMERA_CAPTURE, INFERENCE
from selfsup_perception.launcher import GraphProcess
from selfsup_perception.ros.conversions import rgb_to_msg
from selfsup_perception.srv import CaptureView, SegmentImage

pytestmark = [pytest.mark.ros, pytest.mark.slow]
H, W = 48, 64


def call(client, request, timeout=30.0):
    future = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert future.done(), f"{client.srv_name} did not answer"
    return future.result()


def test_a_killed_node_is_restarted_and_the_rest_of_the_graph_keeps_serving(tmp_path):
    torch.manual_seed(0)
    task = InstanceSegmentationTask(InstanceTaskConfig(model=InstanceSegConfig(widths=(8, 8, 8, 8), decoder_channels=8,
                                                                               embedding_dim=4)))
    ckpt.save_checkpoint(tmp_path / "ck", task=task.name, model=task.build_model(), model_config=task.model_config(),
                         step=0, inference=ckpt.inference_info((W, H)))
    overrides = {"inference": {"checkpoint_dir": str(tmp_path / "ck"), "torch_threads": 1},
                 "camera_capture": {"default_timeout_s": 0.3, "max_timeout_s": 0.5}}
    graph = GraphProcess([CAMERA_CAPTURE, INFERENCE], overrides, echo=False, respawn=True, backoff_s=(0.5, 2.0))
    with graph, rclpy.init():
        node = rclpy.create_node("respawn_test_client")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        try:
            inference_pid = kill_one_node_while_the_other_serves(graph, node)
        finally:
            executor.shutdown()
            node.destroy_node()
    assert graph.procs["inference"].pid == inference_pid and graph.restarts == {"camera_capture": 1}


def kill_one_node_while_the_other_serves(graph, node) -> int:
    """Returns the pid of the inference node (which must never change)."""
    capture = node.create_client(CaptureView, "capture_view")
    segment = node.create_client(SegmentImage, "segment_image")
    assert capture.wait_for_service(timeout_sec=60) and segment.wait_for_service(timeout_sec=60), graph.logs
    image = rgb_to_msg(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8))
    assert call(segment, SegmentImage.Request(image=image)).success

    # the fatal request: an infinite timeout is clamped (no camera here: a timeout answer), no death
    for timeout in (math.inf, 1e300):
        res = call(capture, CaptureView.Request(timeout_s=timeout))
        assert not res.success and "within 0.5 s" in res.message, res.message
    res = call(capture, CaptureView.Request(timeout_s=math.nan))
    assert not res.success and "NaN" in res.message
    assert not graph.dead()

    camera_pid, inference_pid = graph.procs["camera_capture"].pid, graph.procs["inference"].pid
    os.killpg(camera_pid, signal.SIGKILL)
    t0 = time.monotonic()
    served = 0
    while graph.restarts.get("camera_capture", 0) < 1 and time.monotonic() - t0 < 30:
        assert call(segment, SegmentImage.Request(image=image)).success  # the rest keeps serving
        served += 1
    assert graph.restarts.get("camera_capture") == 1, graph.events
    assert served >= 1
    assert any("camera_capture died (killed by SIGKILL)" in e for e in graph.events), graph.events
    assert graph.procs["camera_capture"].pid != camera_pid and graph.procs["inference"].pid == inference_pid
    deadline = time.monotonic() + 60
    answered = None
    while answered is None and time.monotonic() < deadline:  # the restarted node answers again
        if capture.wait_for_service(timeout_sec=1.0):
            try:
                answered = call(capture, CaptureView.Request(timeout_s=0.2), timeout=5)
            except AssertionError:
                continue
    assert answered is not None and "within 0.2 s" in answered.message
    assert call(segment, SegmentImage.Request(image=image)).success
    return inference_pid
