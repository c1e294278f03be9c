"""Segment-service round trip and training speed of the instance segmentation model on this CPU.

Trains a model for a few steps on toy scenes (speed does not depend on the weights), starts the
inference node as its own process on that checkpoint, and times ``segment_image`` calls from
another process at 640x480 and 320x240 (median and p90 over ``--calls``), each size twice: the RGB
image alone (the model's instances) and with depth + camera_info (the node's default
``combine_with_depth``: the model's instances combined with the depth-aware segments). Beside the
wall-clock round trip, the inference node's CPU time per call (``/proc``; the server's work,
less sensitive to other jobs than wall time). Also prints training steps/s at the online
trainer's input size. Query images: one simulated scene of ``--world`` (medium clutter, novel
objects) per size. ``--json PATH`` writes the same figures with the settings, load average, wall
and CPU time (``bench/bench_report.py``).
Run: ``.venv/bin/python bench/segment_service.py [--world simple|realistic] [--calls N] [--json PATH]``.
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
from selfsup_perception.ros.conversions import depth_to_msg, intrinsics_to_camera_info, rgb_to_msg
from selfsup_perception.ros.service_calls import call_service
from selfsup_perception.sim.tabletop import WORLDS, CameraConfig, SimConfig, TabletopSim
from selfsup_perception.srv import SegmentImage

from bench_report import BenchRecord, Column, add_json_argument, process_cpu_seconds  # bench/ is on sys.path

SIZES = ((640, 480), (320, 240))


def time_calls(client, request: SegmentImage.Request, calls: int, server_pid: int) -> dict:
    """Round trips of ``calls`` requests after one warm-up: wall ms (median, p90), server CPU ms per call,
    instances in the answers (median) and the last answer's message."""
    warm = call_service(client, request, 60.0)
    if not warm.success:
        raise SystemExit(f"segment_image failed: {warm.message}")
    times, instances = [], []
    cpu0 = process_cpu_seconds(server_pid)
    for _ in range(calls):
        t = time.perf_counter()
        res = call_service(client, request, 30.0)
        times.append((time.perf_counter() - t) * 1000)
        if not res.success:
            raise SystemExit(f"segment_image failed: {res.message}")
        instances.append(len(res.segmentation.instances))
    cpu1 = process_cpu_seconds(server_pid)
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)), "calls": calls,
            "server_cpu_ms": None if cpu0 is None or cpu1 is None else 1000 * (cpu1 - cpu0) / calls,
            "instances": statistics.median(instances), "message": res.message}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--input", type=int, nargs=2, default=(160, 120), metavar=("W", "H"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--world", choices=WORLDS, default="simple", help="simulated world of the query images")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto: training and the inference node")
    add_json_argument(parser)
    args = parser.parse_args()
    if args.calls < 1 or args.train_steps < 1:
        parser.error("--calls and --train-steps must be at least 1")
    record = BenchRecord("segment_service", args)
    torch.set_num_threads(args.threads)
    w, h = args.input

    task = InstanceSegmentationTask()
    trainer = Trainer(task, TrainerConfig(log_every=0, input_size=(w, h), device=args.device))
    rng = np.random.default_rng(0)
    items = synthetic_items(32, height=h, width=w, seed=0)
    batches = (collate_samples([items[i] for i in rng.choice(len(items), 8, replace=False)], rng=rng)
               for _ in range(args.train_steps + 3))
    trainer.train_steps(batches, 3)  # warm-up
    t, c = time.perf_counter(), time.process_time()
    trainer.train_steps(batches, args.train_steps)
    sps = args.train_steps / (time.perf_counter() - t)
    cpu_ms = 1000 * (time.process_time() - c) / args.train_steps
    record.table("training", [{
        "losses": f"{task.config.mask_loss} + {task.config.objectness_loss}", "batch": 8, "input": f"{w}x{h}",
        "threads": args.threads, "device": str(trainer.device), "steps": args.train_steps, "steps_per_s": sps,
        "cpu_ms_per_step": cpu_ms}],
        [Column("losses"), Column("batch", fmt="d"), Column("input"), Column("threads", fmt="d"), Column("device"),
         Column("steps", fmt="d"), Column("steps_per_s", "steps/s", ".2f"),
         Column("cpu_ms_per_step", "CPU ms/step (all threads)", ".0f")],
        title="training speed (toy scenes)")

    rows = []
    with tempfile.TemporaryDirectory() as ck:
        trainer.save_checkpoint(ck)
        frames = {}
        for iw, ih in SIZES:
            with TabletopSim(SimConfig(world=args.world, camera=CameraConfig(width=iw, height=ih))) as sim:
                sim.reset_scene(5, split="test", clutter="medium")
                frames[(iw, ih)] = sim.render()
        overrides = {"inference": {"checkpoint_dir": ck, "torch_threads": args.threads, "device": args.device}}
        with rclpy.init(), GraphProcess([INFERENCE], overrides, echo=False) as graph:
            node = rclpy.create_node("bench_segment_client")
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            threading.Thread(target=executor.spin, daemon=True).start()
            client = node.create_client(SegmentImage, "segment_image")
            if not client.wait_for_service(timeout_sec=60):
                raise SystemExit("inference node did not come up")
            pid = graph.procs["inference"].pid
            for (iw, ih), frame in frames.items():
                image = rgb_to_msg(frame.rgb)
                requests = {
                    "rgb": SegmentImage.Request(image=image, return_label_image=True),
                    "rgb + depth": SegmentImage.Request(image=image, depth=depth_to_msg(frame.depth),
                                                        camera_info=intrinsics_to_camera_info(frame.intrinsics),
                                                        return_label_image=True),
                }
                for inputs, request in requests.items():
                    rows.append({"size": f"{iw}x{ih}", "inputs": inputs, "model_input": f"{w}x{h}",
                                 **time_calls(client, request, args.calls, pid)})
            executor.shutdown()
    record.table("segment_image", rows, [
        Column("size"), Column("inputs"), Column("model_input", "model input"), Column("median_ms", "median ms", ".1f"),
        Column("p90_ms", "p90 ms", ".1f"), Column("server_cpu_ms", "node CPU ms/call", ".1f"),
        Column("instances", fmt="g"), Column("calls", fmt="d")],
        title=f"segment_image round trip from another process ({args.world} world, label image returned; "
              f"rgb + depth: model combined with depth-aware segments)")
    for row in rows:
        print(f"  {row['size']} {row['inputs']}: {row['message']}")
    record.finish(args.json)


if __name__ == "__main__":
    main()
