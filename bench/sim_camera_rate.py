"""Simulated camera rate and capture-service round trip.

Prints: render time of the pybullet camera (RGB + depth) at 640x480 and 320x240, the rate
at which a subscriber in another process receives complete RGB-D sets from the simulator
node, and the median round trip of the capture_view service (a synchronised snapshot newer
than the request) at 640x480, as tables; ``--json PATH`` writes the same figures with the settings, load
average, wall and CPU time (``bench/bench_report.py``).
Run: ``make bench`` or ``.venv/bin/python bench/sim_camera_rate.py [--json PATH]``.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from selfsup_perception.graph import CAMERA_CAPTURE, SIM_WORLD
from selfsup_perception.launcher import GraphProcess
from selfsup_perception.ros.service_calls import call_service
from selfsup_perception.sim.tabletop import WORLDS, CameraConfig, SimConfig, TabletopSim
from selfsup_perception.srv import CaptureView

from bench_report import BenchRecord, Column, add_json_argument  # bench/ is on sys.path when run as a script


def render_ms(width: int, height: int, n: int, world: str = "simple") -> tuple[float, float]:
    """(wall, CPU) median milliseconds of one render (pybullet runs in this process)."""
    with TabletopSim(SimConfig(world=world, camera=CameraConfig(width=width, height=height))) as sim:
        sim.reset_scene(0, clutter="medium")
        sim.render()
        times, cpu = [], []
        for _ in range(n):
            t, c = time.perf_counter(), time.process_time()
            sim.render()
            times.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
    return statistics.median(times), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=10)
    parser.add_argument("--captures", type=int, default=20)
    parser.add_argument("--rate-window-s", type=float, default=10.0)
    parser.add_argument("--world", choices=WORLDS, default="simple",
                        help="simulated world (realistic: two light passes and sensor noise per frame)")
    add_json_argument(parser)
    args = parser.parse_args()
    record = BenchRecord("sim_camera_rate", args)

    print(f"simulated camera ({args.world} world, pybullet TinyRenderer, RGB + depth, medium clutter)", flush=True)
    rows = []
    for w, h in ((640, 480), (320, 240)):
        ms, cpu_ms = render_ms(w, h, args.renders, args.world)
        rows.append({"size": f"{w}x{h}", "render_median_ms": ms, "render_cpu_median_ms": cpu_ms,
                     "max_frames_per_s": 1000 / ms})
    record.table("render", rows, [Column("size"), Column("render_median_ms", "render median ms", ".1f"),
                                  Column("render_cpu_median_ms", "render CPU median ms", ".1f"),
                                  Column("max_frames_per_s", "frames/s max", ".1f")],
                 title=f"render, median of {args.renders}")

    overrides = {"sim_world": {"width": 640, "height": 480, "publish_rate_hz": 30.0, "clutter": "medium",
                               "world": args.world}}
    with rclpy.init():
        with GraphProcess([SIM_WORLD, CAMERA_CAPTURE], overrides, echo=False):
            node = rclpy.create_node("bench_client")
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            stamps = []
            qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
            node.create_subscription(Image, "camera/depth/image_raw", lambda m: stamps.append(time.monotonic()), qos)
            client = node.create_client(CaptureView, "capture_view")
            deadline = time.monotonic() + 60
            while not stamps and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
            if not stamps:
                raise SystemExit("no depth image from the simulator node within 60 s")
            stamps.clear()
            end = time.monotonic() + args.rate_window_s
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.05)
            rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0

            spin = threading.Thread(target=executor.spin, daemon=True)
            spin.start()
            rtts = []
            for _ in range(args.captures):
                t = time.perf_counter()
                res = call_service(client, CaptureView.Request(timeout_s=5.0), 10.0)
                if res.success:
                    rtts.append((time.perf_counter() - t) * 1000)
            executor.shutdown()
    record.table("capture", [{
        "size": "640x480", "sets_per_s": rate, "capture_median_ms": statistics.median(rtts) if rtts else None,
        "capture_min_ms": min(rtts) if rtts else None, "captures_ok": len(rtts), "captures": args.captures}],
        [Column("size"), Column("sets_per_s", "RGB-D sets received /s", ".2f"),
         Column("capture_median_ms", "capture_view median ms", ".0f"),
         Column("capture_min_ms", "capture_view min ms", ".0f"), Column("captures_ok", "calls ok", "d"),
         Column("captures", "calls", "d")],
        title=f"simulator node publishing at 30 Hz asked (rendering is the limit), received in another process over "
              f"{args.rate_window_s:.0f} s; capture_view waits for a set newer than the request")
    record.finish(args.json)


if __name__ == "__main__":
    main()
