"""Segment-service round trip and training speed of the instance segmentation model on this CPU.

Trains a model for a few steps on toy scenes (speed does not depend on the weights), starts the
inference node as its own process on that checkpoint, and times ``segment_image`` calls from
another process at 640x480 and 320x240 (median over ``--calls``). Also prints training steps/s
at the online trainer's input size. Run: ``.venv/bin/python bench/segment_service.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time

import numpy as np
import rclpy
import torch
from rclpy.executors import SingleThreadedExecutor

from selfsup_perception.core.learning.tasks.instance import InstanceSegmentationTask, collate_samples, synthetic_items
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig
from selfsup_perception.graph import INFERENCE
from selfsup_perception.launcher import GraphProcess
from selfsup_perception.ros.conversions import rgb_to_msg
from selfsup_perception.ros.service_calls import call_service
from selfsup_perception.sim.tabletop import CameraConfig, SimConfig, TabletopSim
from selfsup_perception.srv import SegmentImage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--input", type=int, nargs=2, default=(160, 120), metavar=("W", "H"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    w, h = args.input

    task = InstanceSegmentationTask()
    trainer = Trainer(task, TrainerConfig(log_every=0, input_size=(w, h)))
    rng = np.random.default_rng(0)
    items = synthetic_items(32, height=h, width=w, seed=0)
    batches = (collate_samples([items[i] for i in rng.choice(len(items), 8, replace=False)], rng=rng)
               for _ in range(args.train_steps + 3))
    trainer.train_steps(batches, 3)  # warm-up
    t = time.perf_counter()
    trainer.train_steps(batches, args.train_steps)
    sps = args.train_steps / (time.perf_counter() - t)
    print(f"training ({task.config.mask_loss} + {task.config.objectness_loss}), batch 8 at {w}x{h}, "
          f"{args.threads} threads: {sps:.2f} steps/s")

    with tempfile.TemporaryDirectory() as ck:
        trainer.save_checkpoint(ck)
        images = {}
        for iw, ih in ((640, 480), (320, 240)):
            with TabletopSim(SimConfig(camera=CameraConfig(width=iw, height=ih))) as sim:
                sim.reset_scene(5, split="test", clutter="medium")
                images[(iw, ih)] = sim.render().rgb
        overrides = {"inference": {"checkpoint_dir": ck, "torch_threads": args.threads}}
        with rclpy.init(), GraphProcess([INFERENCE], overrides, echo=False):
            node = rclpy.create_node("bench_segment_client")
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            threading.Thread(target=executor.spin, daemon=True).start()
            client = node.create_client(SegmentImage, "segment_image")
            if not client.wait_for_service(timeout_sec=60):
                raise SystemExit("inference node did not come up")
            for (iw, ih), rgb in images.items():
                msg = rgb_to_msg(rgb)
                call_service(client, SegmentImage.Request(image=msg), 30.0)  # warm-up
                times = []
                for _ in range(args.calls):
                    t = time.perf_counter()
                    res = call_service(client, SegmentImage.Request(image=msg, return_label_image=True), 30.0)
                    times.append((time.perf_counter() - t) * 1000)
                    assert res.success, res.message
                print(f"segment_image round trip at {iw}x{ih} (model input {w}x{h}): median "
                      f"{statistics.median(times):.1f} ms, p90 {np.percentile(times, 90):.1f} ms over {args.calls} calls")
            executor.shutdown()


if __name__ == "__main__":
    main()
