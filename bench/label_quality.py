"""Label quality of push masks on the simulated tabletop: flow labeler vs frame differencing.

``--world simple|realistic`` (default realistic: mesh objects in clutter, textures, stereo
depth noise and holes, exposure drift, camera-mount shake; see ``sim/tabletop.py``).
For each clutter level: N scenes (``--scenes``), ``--pushes`` pushes per scene
planned by our planner (table plane -> candidates -> plan_push) and executed with
``TabletopSim.execute_push``; before/after rendered with ground truth. A push that moved
no object by more than 5 mm is a true negative interaction. Masks are scored against the
*before* instance mask of one moved object, by three definitions (``docs/labeling.md``):

* pushed (the table's figures): the moved object under the push's action pixel, else the moved
  object nearest to it (``core/labeling/quality.pushed_instance``) -- what the robot pushed;
* moved most (the earlier definition, kept for comparison): the object whose position changed most;
  in chained pushes often one the pushed object ran into, or one that slid or toppled far away;
* best moved (a diagnostic): the moved object the mask matches best -- is the mask at least *an*
  object that moved? Each scene also gets ``--shake-pairs`` planned pushes
whose arm only moves through the air above the start (``execute_free_motion``):
nothing moves but the camera mount shakes (in the realistic world).

Columns (per labeler):
* mIoU kept: mean IoU of the kept, non-negative labels with the pushed object's mask; (most) and
  (best): the same with the other two definitions. P / R use the pushed object.
* wrong pos: kept positive labels of interactions where nothing moved (shake-only
  pairs and pushes that missed). disc: labels a filter discarded.
* P / R: keep precision and recall with 'good' = IoU >= 0.5 (computed on the
  candidate mask even when the labeler discarded it). P = good&kept / kept,
  R = good&kept / good. Negatives are counted separately (neg ok = labelled
  negative when nothing moved; neg wrong = labelled negative although something
  moved -- these have an empty mask, so they are not in R's denominator).
* p50 / p95 ms: wall-clock labeling time per interaction (the whole ``label()``
  call: flow, table plane fit, filters, clustering); cpu ms: median process CPU
  time (OpenCV limited to 1 thread; less sensitive to other jobs on a shared machine).

Real frames (``--real DIR``, e.g. ``../shared/realdata/ucn_tabletop``): synthetic pushes and shake-only
pairs on real RGB-D frames (see ``bench/real_label_quality.py``), printed after the simulator's table;
``--no-sim`` skips the simulator. ``--json PATH`` writes ``{"real": {labeler: {...}}, "sim": {clutter:
{labeler: {...}}}, "sim_settings": {world, shake, sensor noise, ...}}``; a simulator entry's top-level
figures use the pushed object, ``by_ground_truth`` holds the summary under each definition
(``miou_moved_most``, ``miou_best_moved`` for short), and ``pushes_moving_several`` /
``pushes_pushed_not_moved_most`` count the pushes where the definitions can differ.

Usage: PYTHONPATH=. python bench/label_quality.py [--world simple|realistic] [--quick] [--scenes N] [--no-poses]
       [--width 640 --height 480] [--real DIR [--no-sim]] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import cv2
import numpy as np

from selfsup_perception.sim.scripted_pushes import simulated_push_truth
from selfsup_perception.core.interaction import PlannerConfig
from selfsup_perception.core.labeling import FlowMaskLabeler, FrameDifferenceLabeler
from selfsup_perception.core.labeling.quality import LabelQuality, mask_iou, pushed_instance
from selfsup_perception.sim.sensor import ShakeConfig
from selfsup_perception.sim.tabletop import WORLDS, SimConfig, TabletopSim, replace_camera


GT_DEFINITIONS = ("pushed", "moved_most", "best_moved")


def collect(sim: TabletopSim, clutter: str, scenes: int, pushes: int, seed0: int, planner: PlannerConfig,
            shake_pairs: int = 1):
    """Yield (sample, truth, kind) for executed pushes ('push') and free arm motions ('shake': nothing
    touched, the camera mount shakes); ``truth`` is the :class:`PushTruth` of the interaction."""
    for k in range(scenes):
        seed = seed0 + k
        sim.reset_scene(seed, split="train", clutter=clutter)
        rng = np.random.default_rng([seed, 17])
        kinds = ["shake"] * shake_pairs + ["push"] * pushes
        for kind in kinds:
            truth = simulated_push_truth(sim, rng, planner, sample_id=f"{clutter}-{seed}", free_motion=kind == "shake")
            if truth is None:
                break
            if truth.sample is not None:
                yield truth.sample, truth, kind


def without_poses(sample):
    """``sample`` with identity camera poses on both frames (the labelers then treat the poses as unknown)."""
    return dataclasses.replace(sample, before=dataclasses.replace(sample.before, camera_to_world=np.eye(4)),
                               after=dataclasses.replace(sample.after, camera_to_world=np.eye(4)))


def ground_truth_masks(truth, label_mask: np.ndarray) -> dict:
    """{definition: before-image mask of the moved object, or None when nothing moved} (see the module doc)."""
    if not truth.moved_most:
        return {name: None for name in GT_DEFINITIONS}
    pushed, _ = pushed_instance(truth.instance_before, truth.moved, truth.sample.action_pixel)
    best = max(truth.moved, key=lambda i: (mask_iou(label_mask, truth.mask(i)), -i))
    return {"pushed": truth.mask(pushed or truth.moved_most), "moved_most": truth.mask(truth.moved_most),
            "best_moved": truth.mask(best)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", choices=WORLDS, default="realistic", help="simulated world")
    ap.add_argument("--quick", action="store_true", help="3 scenes x 2 pushes per clutter level")
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--pushes", type=int, default=3, help="pushes per scene")
    ap.add_argument("--shake-pairs", type=int, default=1, help="free arm motions (nothing touched) per scene")
    ap.add_argument("--shake-scale", type=float, default=1.0,
                    help="multiply the world's camera-shake amplitude (0: no shake; an ablation)")
    ap.add_argument("--no-sensor-noise", action="store_true", help="exact depth and colour (an ablation)")
    ap.add_argument("--no-poses", action="store_true",
                    help="hide the camera poses from the labelers (identity on both frames: a robot without the "
                         "camera in TF; the shake is then compensated from the images alone)")
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
        figures["sim"], figures["sim_settings"] = run_sim(args, labelers)
    if args.real:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from real_label_quality import evaluate_real, real_table

        figures["real"] = evaluate_real(args.real, labelers)
        print()
        print(real_table(figures["real"], [lab.name for lab in labelers]))
        print(f"# load average {os.getloadavg()[0]:.1f}")
    if args.json:
        from bench_report import write_json  # bench/ is on sys.path when run as a script

        write_json(args.json, figures)  # atomic, strict JSON (NaN as null)


def run_sim(args, labelers) -> tuple[dict, dict]:
    """The simulator's table (printed); returns ({clutter: {labeler: figures}}, settings)."""
    base = SimConfig(seed=0, world=args.world)
    shake = ShakeConfig(base.shake_config.translation_m * args.shake_scale,
                        base.shake_config.rotation_deg * args.shake_scale)
    config = SimConfig(seed=0, world=args.world, shake=shake, sensor_noise=False if args.no_sensor_noise else None)
    sim = TabletopSim(replace_camera(config, width=args.width, height=args.height))
    print(f"# label quality, world {args.world}, {args.width}x{args.height}, {args.scenes} scenes x "
          f"{args.pushes} pushes + {args.shake_pairs} free motions per clutter level, "
          f"push distance {args.push_distance} m, shake {shake.translation_m * 1000:.1f} mm / "
          f"{shake.rotation_deg:.2f} deg, sensor noise {'on' if config.noise_on else 'off'}, camera poses "
          f"{'hidden' if args.no_poses else 'given'}")
    header = (f"{'clutter':8s} {'labeler':17s} {'n':>3s} {'moved':>5s} {'kept':>4s} {'mIoU kept':>9s} "
              f"{'(most)':>9s} {'(best)':>9s} "
              f"{'P':>5s} {'R':>5s} {'neg ok':>6s} {'neg wrong':>9s} {'wrong pos':>9s} {'disc':>4s} "
              f"{'p50 ms':>7s} {'p95 ms':>7s} {'cpu ms':>7s}")
    rows, chain_notes = [], []
    figures: dict = {}
    t_start = time.time()
    for clutter in ("low", "medium", "high"):
        data = list(collect(sim, clutter, args.scenes, args.pushes, args.seed,
                            PlannerConfig(push_distance=args.push_distance), args.shake_pairs))
        several = sum(len([d for d in t.moved.values() if d > 0.01]) > 1 for _, t, k in data if k == "push")
        other = sum(bool(t.moved_most) and pushed_instance(t.instance_before, t.moved, t.sample.action_pixel)[0]
                    != t.moved_most for _, t, k in data if k == "push")
        for lab in labelers:
            quality = {name: LabelQuality() for name in GT_DEFINITIONS}
            times, cpu = [], []
            reasons: dict[str, int] = {}
            wrong_pos = wrong_pos_shake = discarded = 0
            for sample, truth, kind in data:
                t, c = time.perf_counter(), time.process_time()
                label = lab.label(without_poses(sample) if args.no_poses else sample)
                times.append(1000 * (time.perf_counter() - t))
                cpu.append(1000 * (time.process_time() - c))
                key = label.reason.split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
                for name, gt in ground_truth_masks(truth, label.mask).items():
                    quality[name].add(label, gt)
                positive = label.kept and not label.is_negative
                discarded += int(not label.kept)
                if not truth.moved_most and positive:
                    wrong_pos += 1
                    wrong_pos_shake += int(kind == "shake")
            q = quality["pushed"].summary()
            by_definition = {name: quality[name].summary() for name in GT_DEFINITIONS}
            p50, p95 = (float(np.percentile(times, 50)), float(np.percentile(times, 95))) if times else (np.nan,) * 2
            figures.setdefault(clutter, {})[lab.name] = {
                **q, "wall_p50_ms": p50, "cpu_p50_ms": float(np.median(cpu)) if cpu else float("nan"),
                "n": len(data), "shake_pairs": sum(k == "shake" for *_, k in data), "moved": q["moved"],
                "kept": q["kept"], "miou": q["miou_kept"], "precision": q["precision"], "recall": q["recall"],
                "neg_ok": q["neg_ok"], "neg_wrong": q["neg_wrong"], "wrong_positives": wrong_pos,
                "wrong_positives_shake": wrong_pos_shake, "discarded": discarded, "p50_ms": p50, "p95_ms": p95,
                "cpu_ms": float(np.median(cpu)) if cpu else float("nan"), "reasons": reasons,
                "ground_truth": "pushed", "by_ground_truth": by_definition,
                "miou_moved_most": by_definition["moved_most"]["miou_kept"],
                "miou_best_moved": by_definition["best_moved"]["miou_kept"],
                "pushes_moving_several": several, "pushes_pushed_not_moved_most": other}
            rows.append(f"{clutter:8s} {lab.name:17s} {len(data):3d} {q['moved']:5d} {q['kept']:4d} "
                        f"{q['miou_kept']:9.3f} {by_definition['moved_most']['miou_kept']:9.3f} "
                        f"{by_definition['best_moved']['miou_kept']:9.3f} {q['precision']:5.2f} {q['recall']:5.2f} "
                        f"{q['neg_ok']:6d} {q['neg_wrong']:9d} {wrong_pos:9d} {discarded:4d} "
                        f"{p50:7.1f} {p95:7.1f} {np.median(cpu):7.1f}")
            print(rows[-1], "|", ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())), flush=True)
        chain_notes.append(f"# {clutter}: {several} of {sum(k == 'push' for *_, k in data)} pushes moved more than one "
                           f"object by > 1 cm; in {other} the pushed object is not the one that moved most")
    sim.close()
    print()
    print(header)
    print("\n".join(rows))
    print("# mIoU kept: with the pushed object; (most): with the object that moved most (the earlier definition);\n"
          "# (best): with the moved object the mask matches best")
    print("\n".join(chain_notes))
    print(f"# total {time.time() - t_start:.0f} s, load average {os.getloadavg()[0]:.1f}")
    settings = {"world": args.world, "width": args.width, "height": args.height,
                "shake_translation_m": shake.translation_m, "shake_rotation_deg": shake.rotation_deg,
                "sensor_noise": config.noise_on, "poses_given": not args.no_poses, "scenes": args.scenes,
                "pushes": args.pushes, "shake_pairs": args.shake_pairs}
    return figures, settings


if __name__ == "__main__":
    main()
