"""Grasp-outcome labels in the simulator: mask IoU against the ground truth of the object the grasp
lifted (or knocked away), and negatives
for grasps at empty table. Prints a table; ``--json PATH`` writes the rows.

    python bench/grasp_outcome_quality.py --world simple --seeds 1 2 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import cv2
import numpy as np

from selfsup_perception.core.interaction import PlannerConfig, find_object_candidates, fit_table_plane, plan_grasp
from selfsup_perception.core.labeling.grasp_outcome import GraspOutcomeLabeler
from selfsup_perception.core.labeling.quality import mask_iou
from selfsup_perception.core.types import InteractionKind, InteractionOutcome, InteractionSample
from selfsup_perception.sim.tabletop import CameraConfig, SimConfig, TabletopSim


def free_table_point(frame, plane, sim, rng, clearance_m=0.12):
    """A world point on the table at least ``clearance_m`` from every object (for a grasp at empty table)."""
    poses = [p[0][:2] for p in sim.object_poses().values()]
    for _ in range(200):
        xy = np.array([rng.uniform(0.35, 0.65), rng.uniform(-0.2, 0.2)])
        if all(np.linalg.norm(xy - q) > clearance_m for q in poses):
            pt = (float(xy[0]), float(xy[1]), 0.0)
            u, v = sim.project((xy[0], xy[1], float(np.mean([p[0][2] for p in sim.object_poses().values()]))))
            h, w = frame.rgb.shape[:2]
            if 20 <= u < w - 20 and 20 <= v < h - 20:
                return pt
    return None


def grasp_sample(sim, seed, world_empty=False, rng=None):
    """One real simulated pick-and-place; returns (sample, gt mask of the object lifted or knocked away, or None,
    message)."""
    before, gt = sim.render_with_ground_truth()
    plane = fit_table_plane(before, rng=np.random.default_rng(0))
    if world_empty:
        pick = free_table_point(before, plane, sim, rng)
        if pick is None:
            return None, None, "no free table point"
        place = (pick[0], pick[1] + (0.1 if pick[1] < 0 else -0.1), 0.0)
        u, v = sim.project((pick[0], pick[1], 0.0))
        action_pixel = (u, v)
    else:
        g = plan_grasp(before, find_object_candidates(before, plane), np.random.default_rng(seed), PlannerConfig())
        if g is None:
            return None, None, "no grasp planned"
        pick, place, action_pixel = g.pick_point, g.place_point, g.action_pixel
    poses = sim.object_poses()
    ok, message = sim.execute_grasp(pick, place)
    after = sim.render()
    moved = {i for i, (pos, _) in sim.object_poses().items() if np.linalg.norm(pos - poses[i][0]) > 0.01}
    sample = InteractionSample(f"grasp{seed}", InteractionKind.GRASP, before, after, action_pixel, tuple(pick),
                               tuple(place), InteractionOutcome.EXECUTED if ok else InteractionOutcome.FAILED, message)
    gt_mask = None
    if ok and "grasped and moved object" in message:
        gt_mask = gt["instance_mask"] == int(message.rsplit(" ", 1)[1])
    else:  # not held, but the fingers may have knocked the object at the pick away: its mask is still the truth
        u, v = (int(round(x)) for x in action_pixel)
        inst = gt["instance_mask"][max(v - 3, 0):v + 4, max(u - 3, 0):u + 4]
        hit = [i for i in np.unique(inst) if i > 0 and i in moved]
        if hit:
            gt_mask = gt["instance_mask"] == hit[0]
            message += f" (object {hit[0]} at the pick was knocked away)"
    return sample, gt_mask, message


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="simple", choices=["simple", "realistic"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--size", type=int, nargs=2, default=[320, 240], metavar=("W", "H"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    labeler = GraspOutcomeLabeler()
    rows = []
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    with TabletopSim(SimConfig(seed=0, world=args.world, camera=CameraConfig(width=args.size[0],
                                                                             height=args.size[1]))) as sim:
        for seed in args.seeds:
            for empty in (False, True):
                sim.reset_scene(seed=seed)
                sample, gt_mask, message = grasp_sample(sim, seed, empty, np.random.default_rng(seed))
                if sample is None:
                    rows.append({"seed": seed, "target": "table" if empty else "object", "result": message})
                    continue
                c0 = time.process_time()
                label = labeler.label(sample)
                rows.append({
                    "seed": seed, "target": "table" if empty else "object", "arm": message,
                    "moved": gt_mask is not None,  # lifted, or knocked away (the arm message says which)
                    "kept": label.kept, "negative": label.is_negative,
                    "iou": mask_iou(label.mask, gt_mask) if gt_mask is not None else float("nan"),
                    "cpu_ms": 1000 * (time.process_time() - c0), "reason": label.reason})
    print(f"grasp-outcome labels, world {args.world}, {args.size[0]}x{args.size[1]}, load {os.getloadavg()[0]:.2f}")
    print(f"  {'seed':>4s} {'target':6s} {'moved':6s} {'kept':4s} {'neg':3s} {'IoU':>5s} {'cpu ms':>6s}  reason")
    for r in rows:
        if "kept" not in r:
            print(f"  {r['seed']:4d} {r['target']:6s} -- {r['result']}")
            continue
        print(f"  {r['seed']:4d} {r['target']:6s} {str(r['moved']):6s} {str(r['kept']):4s} "
              f"{'y' if r['negative'] else 'n':3s} {r['iou']:5.3f} {r['cpu_ms']:6.0f}  {r['reason']}")
    ious = [r["iou"] for r in rows if r.get("moved") and r.get("kept") and not r.get("negative")]
    moved = sum(1 for r in rows if r.get("moved"))
    neg_ok = sum(1 for r in rows if r.get("target") == "table" and r.get("negative") and r.get("kept"))
    n_table = sum(1 for r in rows if r.get("target") == "table" and "kept" in r)
    summary = {"world": args.world, "moved_objects": moved, "kept_positive": len(ious),
               "miou_kept": float(np.mean(ious)) if ious else float("nan"),
               "min_iou_kept": float(np.min(ious)) if ious else float("nan"),
               "negatives_ok": neg_ok, "table_grasps": n_table,
               "wall_s": time.perf_counter() - t_wall, "cpu_s": time.process_time() - t_cpu,
               "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(f"  object moved {moved}, kept positive {len(ious)}, mIoU {summary['miou_kept']:.3f} "
          f"(min {summary['min_iou_kept']:.3f}); table grasps {n_table}, negatives {neg_ok}; "
          f"wall {summary['wall_s']:.1f} s, cpu {summary['cpu_s']:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
