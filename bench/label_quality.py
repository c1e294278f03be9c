"""Label quality of push masks on the simulated tabletop: flow labeler vs frame differencing.

For each clutter level: N scenes (``--scenes``), ``--pushes`` pushes per scene
planned by our planner (table plane -> candidates -> plan_push) and executed with
``TabletopSim.execute_push``; before/after rendered with ground truth. The
ground-truth object is the one whose GT position moved most; its mask is taken
from the *before* instance mask. A push that moved no object by more than 5 mm
is a true negative interaction.

Columns (per labeler):
* mIoU kept: mean IoU of the kept, non-negative labels with the GT mask.
* P / R: keep precision and recall with 'good' = IoU >= 0.5 (computed on the
  candidate mask even when the labeler discarded it). P = good&kept / kept,
  R = good&kept / good. Negatives are counted separately (neg ok = labelled
  negative when nothing moved; neg wrong = labelled negative although something
  moved -- these have an empty mask, so they are not in R's denominator).
* wall ms / cpu ms: median labeling time per interaction (the whole
  ``label()`` call: flow, table plane fit, filters, clustering), wall clock and
  process CPU time (OpenCV limited to 1 thread; the CPU figure is less
  sensitive to other jobs on a shared machine).

Real frames (``--real DIR``, e.g. ``../shared/realdata/ucn_tabletop``): synthetic pushes and shake-only
pairs on real RGB-D frames (see ``bench/real_label_quality.py``), printed after the simulator's table;
``--no-sim`` skips the simulator. ``--json PATH`` writes ``{"real": {labeler: {...}}, "sim": {...}}``.

Usage: PYTHONPATH=. python bench/label_quality.py [--quick] [--scenes N] [--width 640 --height 480]
       [--real DIR [--no-sim]] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

from selfsup_perception.sim.scripted_pushes import simulated_push
from selfsup_perception.core.interaction import PlannerConfig
from selfsup_perception.core.labeling import FlowMaskLabeler, FrameDifferenceLabeler
from selfsup_perception.core.labeling.quality import LabelQuality
from selfsup_perception.sim.tabletop import SimConfig, TabletopSim, replace_camera


def collect(sim: TabletopSim, clutter: str, scenes: int, pushes: int, seed0: int, planner: PlannerConfig):
    """Yield (sample, gt_mask or None, moved metres) for executed pushes."""
    for k in range(scenes):
        seed = seed0 + k
        sim.reset_scene(seed, split="train", clutter=clutter)
        rng = np.random.default_rng([seed, 17])
        for _ in range(pushes):
            result = simulated_push(sim, rng, planner, sample_id=f"{clutter}-{seed}")
            if result is None:
                break
            if result[0] is not None:
                yield result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 scenes x 2 pushes per clutter level")
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--pushes", type=int, default=3, help="pushes per scene")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--push-distance", type=float, default=PlannerConfig().push_distance,
                    help="planner push distance past the contact edge (m)")
    ap.add_argument("--real", default=None, help="folder of real RGB-D frames: synthetic pushes + shake-only pairs")
    ap.add_argument("--no-sim", action="store_true", help="skip the simulator (with --real)")
    ap.add_argument("--json", default=None, help="write the figures as JSON to this path")
    args = ap.parse_args()
    if args.quick:
        args.scenes, args.pushes = 3, 2
    cv2.setNumThreads(1)

    figures: dict = {}
    labelers = [FlowMaskLabeler(), FrameDifferenceLabeler()]
    if not args.no_sim:
        figures["sim"] = run_sim(args, labelers)
    if args.real:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from real_label_quality import evaluate_real, real_table

        figures["real"] = evaluate_real(args.real, labelers)
        print()
        print(real_table(figures["real"], [lab.name for lab in labelers]))
        print(f"# load average {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=1)


def run_sim(args, labelers) -> dict:
    """The simulator's table (printed); returns {clutter: {labeler: figures}}."""
    sim = TabletopSim(replace_camera(SimConfig(seed=0), width=args.width, height=args.height))
    sim_figures: dict = {}
    print(f"# label quality, {args.width}x{args.height}, {args.scenes} scenes x {args.pushes} pushes per clutter "
          f"level, push distance {args.push_distance} m")
    header = (f"{'clutter':8s} {'labeler':17s} {'n':>3s} {'moved':>5s} {'kept':>4s} {'mIoU kept':>9s} "
              f"{'P':>5s} {'R':>5s} {'neg ok':>6s} {'neg wrong':>9s} {'wall ms':>8s} {'cpu ms':>7s}")
    rows = []
    t_start = time.time()
    for clutter in ("low", "medium", "high"):
        data = list(collect(sim, clutter, args.scenes, args.pushes, args.seed,
                            PlannerConfig(push_distance=args.push_distance)))
        for lab in labelers:
            quality, times, cpu = LabelQuality(), [], []
            reasons: dict[str, int] = {}
            for sample, gt, _ in data:
                t, c = time.perf_counter(), time.process_time()
                label = lab.label(sample)
                times.append(1000 * (time.perf_counter() - t))
                cpu.append(1000 * (time.process_time() - c))
                key = label.reason.split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
                quality.add(label, gt)
            q = quality.summary()
            sim_figures.setdefault(clutter, {})[lab.name] = dict(
                q, wall_p50_ms=float(np.median(times)), cpu_p50_ms=float(np.median(cpu)))
            rows.append(f"{clutter:8s} {lab.name:17s} {len(data):3d} {q['moved']:5d} {q['kept']:4d} "
                        f"{q['miou_kept']:9.3f} {q['precision']:5.2f} {q['recall']:5.2f} "
                        f"{q['neg_ok']:6d} {q['neg_wrong']:9d} {np.median(times):8.1f} {np.median(cpu):7.1f}")
            print(rows[-1], "|", ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())), flush=True)
    sim.close()
    print()
    print(header)
    print("\n".join(rows))
    print(f"# total {time.time() - t_start:.0f} s, load average {os.getloadavg()[0]:.1f}")
    return sim_figures


if __name__ == "__main__":
    main()
