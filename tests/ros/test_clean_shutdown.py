"""Every node stops on SIGINT and SIGTERM within 2 s, without a traceback (the trainer in the middle of a round).

Each node runs as its own process, started exactly as the launcher starts it.
"""

import contextlib
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import rclpy
import torch
from sample_factory import labeled_store as _labeled_store
from sensor_msgs.msg import Image

from selfsup_perception.core.learning.models.instance_segmentation import InstanceSegConfig
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.tasks.instance import InstanceSegmentationTask, InstanceTaskConfig
from selfsup_perception.graph import CAMERA_CAPTURE, INFERENCE, LABELER, TRAINER
from selfsup_perception.launcher import node_command
from selfsup_perception.ros.conversions import rgb_to_msg

pytestmark = [pytest.mark.ros, pytest.mark.slow]
STOP_WITHIN_S = 2.0


def run_and_stop(spec, overrides, sig, ready_line, settle_s=0.5):
    proc = subprocess.Popen(node_command(spec, overrides), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ.copy(), start_new_session=True)
    lines = []
    deadline = time.monotonic() + 60
    while ready_line is not None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if ready_line in line:
            break
    assert ready_line is None or any(ready_line in x for x in lines), "".join(lines)
    time.sleep(settle_s)
    t0 = time.monotonic()
    os.kill(proc.pid, sig)
    try:
        rest, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, _ = proc.communicate()
    elapsed = time.monotonic() - t0
    return elapsed, proc.returncode, "".join(lines) + rest


@contextlib.contextmanager
def camera_stream(topic="camera/color/image_raw", hz=20.0):
    """Publish 320x240 images, so a stream-mode inference node is inside torch when it is stopped."""
    with rclpy.init():
        node = rclpy.create_node("shutdown_test_camera")
        pub = node.create_publisher(Image, topic, 1)
        stop = threading.Event()
        rgb = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)

        def run():
            while not stop.wait(1.0 / hz):
                pub.publish(rgb_to_msg(rgb))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(2)
            node.destroy_node()


def labeled_store(root, n=4, h=96, w=128):
    return _labeled_store(root, n, h, w, box=(2, 20, 1, 20))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_nodes_stop_quickly_and_quietly(tmp_path, sig):
    labeled_store(tmp_path / "ds")
    torch.manual_seed(0)
    task = InstanceSegmentationTask(InstanceTaskConfig(model=InstanceSegConfig()))
    ckpt.save_checkpoint(tmp_path / "ck_serve", task=task.name, model=task.build_model(),
                         model_config=task.model_config(), step=0, inference=ckpt.inference_info((320, 240)))
    cases = [
        (CAMERA_CAPTURE, {}, "capturing", 0.5),
        (LABELER, {"dataset_dir": str(tmp_path / "ds2")}, "ready", 0.5),
        # stream mode with images flowing: the stream worker is inside torch when the signal comes
        (INFERENCE, {"checkpoint_dir": str(tmp_path / "ck_serve"), "stream": True}, "serving instance_segmentation", 2.0),
        # the trainer is mid-round: a round of 100000 steps never ends by itself
        (TRAINER, {"dataset_dir": str(tmp_path / "ds"), "checkpoint_dir": str(tmp_path / "ck"), "min_samples": 2,
                   "steps_per_round": 100000, "batch_size": 2, "input_width": 128, "input_height": 96,
                   "torch_threads": 1}, "training instance_segmentation from", 3.0),
    ]
    for spec, overrides, ready, settle in cases:
        with camera_stream() if spec is INFERENCE else contextlib.nullcontext():
            elapsed, code, output = run_and_stop(spec, overrides, sig, ready, settle)
        assert "Traceback" not in output and "terminate called" not in output and "RCLError" not in output, output
        assert code in (0, -sig, 128 + sig), (spec.name, code, output)
        assert elapsed < STOP_WITHIN_S, f"{spec.name} took {elapsed:.2f} s to stop on {sig.name}:\n{output}"
    assert ckpt.list_versions(tmp_path / "ck", "instance_segmentation") == []  # the interrupted round saved nothing
    assert not list((tmp_path / "ck" / "instance_segmentation").glob(".tmp-*"))
