"""Online registration and region-consistency pre-training costs, as the registration and trainer nodes run them.

Renders ``--views`` views of one static simulated scene at 640x480 on the registration node's
default camera arc, then times each step of the node's per-view work (Felzenszwalb regions at
160x120, storing the view, overlap at stride 4 against every stored view, full-resolution
correspondences for a published pair) and one online pre-training round of the trainer node
(``task: semantic_segmentation``) on the stored pairs. Prints tables of the medians (wall clock and
this process's CPU time) and the pairs kept; ``--json PATH`` writes the same figures with the settings,
load average, wall and CPU time (``bench/bench_report.py``).
Run: ``.venv/bin/python bench/registration_online.py [--quick] [--world simple|realistic] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import cv2
import numpy as np
import torch

from selfsup_perception.core.learning.training.online_region_consistency import (
    OnlineRegionConsistencyConfig,
    OnlineRegionConsistencyTrainer,
)
from selfsup_perception.core.registration import FelzenszwalbConfig, correspondences, view_overlap
from selfsup_perception.core.registration.pair_store import PairStore, StoredPair, pair_id_of
from selfsup_perception.core.registration.regions import felzenszwalb_regions
from selfsup_perception.sim.multiview import MultiViewConfig, ring_camera_poses
from selfsup_perception.sim.tabletop import WORLDS, CameraConfig, SimConfig, TabletopSim

from bench_report import BenchRecord, Column, add_json_argument  # bench/ is on sys.path when run as a script


class Timer:
    """Wall and CPU seconds of each timed call; medians in milliseconds."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __call__(self, fn):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        self.wall.append(time.perf_counter() - t)
        self.cpu.append(time.process_time() - c)
        return out

    def row(self, step: str, per: str) -> dict:
        def median_ms(v: list[float]):
            return 1000 * statistics.median(v) if v else None
        return {"step": step, "per": per, "median_ms": median_ms(self.wall), "cpu_median_ms": median_ms(self.cpu),
                "n": len(self.wall)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 views, 4 training steps")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--world", choices=WORLDS, default="realistic",
                        help="simulated world (realistic: noisy depth with holes changes the pairs kept)")
    add_json_argument(parser)
    args = parser.parse_args()
    if args.quick:
        args.views, args.steps = 4, 4
    if args.views < 2:
        parser.error("--views must be at least 2 (pairs of views)")
    record = BenchRecord("registration_online", args)
    torch.set_num_threads(1)

    with TabletopSim(SimConfig(world=args.world, camera=CameraConfig(width=640, height=480))) as sim:
        sim.reset_scene(7, clutter="medium")
        frames = []
        for pose in ring_camera_poses(MultiViewConfig(num_views=args.views), np.random.default_rng(0)):
            sim.set_camera_pose(pose)
            frames.append(sim.render())

    t_regions, t_write, t_overlap, t_corr, ious = Timer(), Timer(), Timer(), Timer(), []
    with tempfile.TemporaryDirectory() as root:
        store = PairStore(f"{root}/registration")
        for frame in frames:
            def regions_of(rgb=frame.rgb):
                small = cv2.resize(rgb, (160, 120), interpolation=cv2.INTER_AREA)
                return felzenszwalb_regions(small, FelzenszwalbConfig(scale=100, sigma=0.8, min_size=30))
            regions = t_regions(regions_of)
            vid = store.next_view_id()
            t_write(lambda: store.write_view(vid, frame, regions))
            pairs = []
            for other in store.registered_view_ids():
                f = store.read_view(other)
                iou = t_overlap(lambda: view_overlap(f.depth, f.intrinsics, f.camera_to_world, frame.depth,
                                                     frame.intrinsics, frame.camera_to_world, stride=4))
                ious.append(iou)
                if 0.3 <= iou <= 0.9:
                    pairs.append(StoredPair(pair_id_of(other, vid), other, vid, iou))
                    t_corr(lambda: correspondences(f.depth, f.intrinsics, f.camera_to_world, frame.depth,
                                                   frame.intrinsics, frame.camera_to_world))
            store.register_view(vid, pairs)
        kept = sum(0.3 <= i <= 0.9 for i in ious)
        record.table("views", [{"world": args.world, "views": len(frames), "size": "640x480",
                                "pairs_compared": len(ious), "pairs_kept": kept, "iou_min": min(ious),
                                "iou_max": max(ious)}],
                     [Column("world"), Column("views", fmt="d"), Column("size"),
                      Column("pairs_compared", "pairs compared", "d"), Column("pairs_kept", "kept (IoU 0.3-0.9)", "d"),
                      Column("iou_min", "IoU min", ".2f"), Column("iou_max", "IoU max", ".2f")],
                     title="views of one static scene on the registration node's default camera arc")
        record.table("registration", [
            t_regions.row("Felzenszwalb regions at 160x120", "view"), t_write.row("store a view", "view"),
            t_overlap.row("view overlap, stride 4", "comparison"),
            t_corr.row("correspondences, full resolution", "pair")],
            [Column("step"), Column("per"), Column("median_ms", "median ms", ".1f"),
             Column("cpu_median_ms", "CPU median ms", ".1f"), Column("n", fmt="d")],
            title="the registration node's work per view")

        online = OnlineRegionConsistencyTrainer(OnlineRegionConsistencyConfig(
            dataset_dir=f"{root}/registration", checkpoint_dir=f"{root}/ck", steps_per_round=args.steps))
        t = time.perf_counter()
        online.dataset.refresh()
        load_s = time.perf_counter() - t
        c = time.process_time()
        online.train_round()
        round_cpu_s = time.process_time() - c
        r = online.last_round
        record.table("pretraining", [{"pairs": len(online.dataset), "load_s": load_s, "steps": r["steps"],
                                      "steps_per_s": r["steps_per_second"], "round_cpu_s": round_cpu_s}],
                     [Column("pairs", "pairs loaded", "d"), Column("load_s", "loading s", ".2f"),
                      Column("steps", fmt="d"), Column("steps_per_s", "steps/s", ".2f"),
                      Column("round_cpu_s", "round CPU s", ".1f")],
                     title="one online pre-training round at 160x120 (4 view pairs x 1024 pixel pairs per step), "
                           "1 torch thread")
    record.finish(args.json)


if __name__ == "__main__":
    main()
