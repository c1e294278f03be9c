"""Online registration and region-consistency pre-training costs, as the registration and trainer nodes run them.

Renders ``--views`` views of one static simulated scene at 640x480 on the registration node's
default camera arc, then times each step of the node's per-view work (Felzenszwalb regions at
160x120, storing the view, overlap at stride 4 against every stored view, full-resolution
correspondences for a published pair) and one online pre-training round of the trainer node
(``task: semantic_segmentation``) on the stored pairs. Prints medians and the pairs kept.
Run: ``.venv/bin/python bench/registration_online.py [--quick]``.
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
from selfsup_perception.sim.tabletop import CameraConfig, SimConfig, TabletopSim


def _ms(times: list[float]) -> str:
    return f"{1000 * statistics.median(times):.1f} ms" if times else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 views, 4 training steps")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if args.quick:
        args.views, args.steps = 4, 4
    torch.set_num_threads(1)

    with TabletopSim(SimConfig(camera=CameraConfig(width=640, height=480))) as sim:
        sim.reset_scene(7, clutter="medium")
        frames = []
        for pose in ring_camera_poses(MultiViewConfig(num_views=args.views), np.random.default_rng(0)):
            sim.set_camera_pose(pose)
            frames.append(sim.render())

    t_regions, t_write, t_overlap, t_corr, ious = [], [], [], [], []
    with tempfile.TemporaryDirectory() as root:
        store = PairStore(f"{root}/registration")
        for frame in frames:
            t = time.perf_counter()
            small = cv2.resize(frame.rgb, (160, 120), interpolation=cv2.INTER_AREA)
            regions = felzenszwalb_regions(small, FelzenszwalbConfig(scale=100, sigma=0.8, min_size=30))
            t_regions.append(time.perf_counter() - t)
            vid = store.next_view_id()
            t = time.perf_counter()
            store.write_view(vid, frame, regions)
            t_write.append(time.perf_counter() - t)
            pairs = []
            for other in store.registered_view_ids():
                f = store.read_view(other)
                t = time.perf_counter()
                iou = view_overlap(f.depth, f.intrinsics, f.camera_to_world, frame.depth, frame.intrinsics,
                                   frame.camera_to_world, stride=4)
                t_overlap.append(time.perf_counter() - t)
                ious.append(iou)
                if 0.3 <= iou <= 0.9:
                    pairs.append(StoredPair(pair_id_of(other, vid), other, vid, iou))
                    t = time.perf_counter()
                    correspondences(f.depth, f.intrinsics, f.camera_to_world, frame.depth, frame.intrinsics,
                                    frame.camera_to_world)
                    t_corr.append(time.perf_counter() - t)
            store.register_view(vid, pairs)
        kept = sum(0.3 <= i <= 0.9 for i in ious)
        print(f"{len(frames)} views at 640x480 on the default arc: {kept} of {len(ious)} pairs with IoU in "
              f"[0.3, 0.9] (IoU {min(ious):.2f}-{max(ious):.2f})")
        print(f"  Felzenszwalb regions at 160x120   {_ms(t_regions)} per view")
        print(f"  store a view                      {_ms(t_write)} per view")
        print(f"  view overlap, stride 4            {_ms(t_overlap)} per comparison")
        print(f"  correspondences, full resolution  {_ms(t_corr)} per pair")

        online = OnlineRegionConsistencyTrainer(OnlineRegionConsistencyConfig(
            dataset_dir=f"{root}/registration", checkpoint_dir=f"{root}/ck", steps_per_round=args.steps))
        t = time.perf_counter()
        online.dataset.refresh()
        load_s = time.perf_counter() - t
        online.train_round()
        r = online.last_round
        print(f"  pre-training: loading {len(online.dataset)} pairs {load_s:.2f} s; one round of {r['steps']} steps "
              f"at 160x120 (4 view pairs x 1024 pixel pairs per step): {r['steps_per_second']:.2f} steps/s, 1 thread")


if __name__ == "__main__":
    main()
