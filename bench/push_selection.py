"""Which pushes teach most? Pushes needed to reach a given AP with uncertainty-driven, random and
most-confident choice of the object to push (issue 14, build item 4).

The loop of the robot, in one process on the simulator (no ROS):

1. a fresh training scene every ``--scene-every`` pushes (train objects, low and medium clutter);
2. the robot's hypotheses on the before image: the depth-aware bottom-up segments, and once a model
   exists its masks (``segment_instances``, as the inference node serves them); the policy ranks them
   (``core/interaction/selection.py``: ``uncertain`` = the hypothesis depth and model disagree on
   most first, ``confident`` = most agreed first, ``random``) and the planner pushes the first one with
   a feasible push (``choose_action``); before any model the three choose alike;
3. the push is executed in the simulator and labelled with optical flow (``FlowMaskLabeler``); kept
   labels join the training set;
4. every ``--eval-every`` pushes the model trains ``--steps`` more steps on all labels so far (the
   trainer's settings of config/trainer.yaml: 160x120, batch 8, EMA 0.99) and is evaluated (AP@0.5
   on held-out scenes of novel objects, ``render_test_scenes``; the same scenes for every policy).

Per policy: AP@0.5 after each evaluation (mean over seeds) and the pushes needed to first reach
each ``--target-ap`` level (per seed; '>N' when not reached). Every seed uses the same scene seeds for the three
policies; the scenes diverge once the policies push different objects.

Usage::

    PYTHONPATH=. python bench/push_selection.py --quick --json /tmp/push_selection.json
    PYTHONPATH=. python bench/push_selection.py --world realistic --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from selfsup_perception.core.dataset.atomic_io import atomic_write_bytes
from selfsup_perception.core.evaluation.bottom_up import depth_bottom_up
from selfsup_perception.core.interaction import PlannerConfig
from selfsup_perception.core.interaction.episode import choose_action
from selfsup_perception.core.interaction.selection import POLICIES
from selfsup_perception.core.labeling import FlowMaskLabeler
from selfsup_perception.core.learning.serving.inference import segment_instances
from selfsup_perception.core.learning.tasks.instance import InstanceSegmentationTask, InstanceTaskConfig
from selfsup_perception.core.learning.training.online import resize_item
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig
from selfsup_perception.core.types import InteractionKind, InteractionOutcome, InteractionSample
from selfsup_perception.sim.evaluation_scenes import evaluate_segmenter, render_test_scenes
from selfsup_perception.sim.tabletop import WORLDS, SimConfig, TabletopSim, replace_camera

INPUT = (160, 120)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def batches(items: list[dict], batch_size: int, rng: np.random.Generator):
    from selfsup_perception.core.learning.tasks.instance import collate_samples

    while True:
        idx = rng.choice(len(items), size=min(batch_size, len(items)), replace=False)
        yield collate_samples([items[i] for i in idx], rng=rng)


def run(policy: str, seed: int, args, scenes) -> dict:
    """One robot: ``args.pushes`` pushes chosen by ``policy``; AP@0.5 after every ``eval_every``."""
    rng = np.random.default_rng([seed, 7])
    labeler = FlowMaskLabeler()
    trainer = Trainer(InstanceSegmentationTask(InstanceTaskConfig()),
                      TrainerConfig(lr=1e-3, warmup_steps=20, seed=seed, ema_decay=0.99, log_every=0,
                                    input_size=INPUT))
    items: list[dict] = []
    curve, sources = [], {"depth": 0, "model": 0, "geometry": 0}
    model_ready = False
    done = attempts = 0
    with TabletopSim(replace_camera(SimConfig(seed=seed, world=args.world), width=args.width,
                                    height=args.height)) as sim:
        while done < args.pushes and attempts < 3 * args.pushes:
            if attempts % args.scene_every == 0:
                sim.reset_scene(100_000 * (seed + 1) + attempts, split="train",
                                clutter=("low", "medium")[(attempts // args.scene_every) % 2])
            attempts += 1
            before = sim.render()
            masks, scores = [], []
            if model_ready:
                inst = segment_instances(trainer.serving_model.eval(), before.rgb, INPUT)
                masks, scores = [i.mask for i in inst], [float(i.score) for i in inst]
            try:
                action, source = choose_action(before, InteractionKind.PUSH, rng, PlannerConfig(), masks, scores,
                                               policy=policy)
            except ValueError:
                continue
            if action is None:
                continue
            ok, message = sim.execute_push(action.start_point, action.end_point)
            if not ok:
                continue
            after = sim.render()
            sample = InteractionSample(f"{policy}-{seed}-{done}", InteractionKind.PUSH, before, after,
                                       action.action_pixel, action.start_point, action.end_point,
                                       InteractionOutcome.EXECUTED, message)
            label = labeler.label(sample)
            done += 1
            sources[source] += 1
            if label.kept:
                item = resize_item(before.rgb, label.mask, sample.action_pixel, INPUT)
                item["is_negative"] = bool(label.is_negative)
                if item["is_negative"] or item["mask"].any():
                    items.append(item)
            if done % args.eval_every == 0 and items:
                trainer.model.train()
                trainer.train_steps(batches(items, 8, rng), args.steps)
                model_ready = True
                model = trainer.serving_model.eval()
                ap = evaluate_segmenter(lambda s: segment_instances(model, s.rgb, INPUT), scenes)["AP50"]
                curve.append({"pushes": done, "labels": len(items), "ap50": float(ap)})
                print(f"  {policy:9s} seed {seed}: {done:3d} pushes, {len(items):3d} labels, AP@0.5 {ap:.3f}",
                      flush=True)
    reached = {str(t): next((c["pushes"] for c in curve if c["ap50"] >= t), None) for t in args.target_ap}
    return {"policy": policy, "seed": seed, "curve": curve, "pushes_to_target": reached, "sources": sources,
            "labels": len(items)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", choices=WORLDS, default="simple")
    ap.add_argument("--quick", action="store_true", help="16 pushes, evaluation every 4, 4 test scenes (~7 min)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pushes", type=int, default=36)
    ap.add_argument("--eval-every", type=int, default=6, help="train and evaluate every N pushes")
    ap.add_argument("--steps", type=int, default=60, help="training steps after every evaluation interval")
    ap.add_argument("--scene-every", type=int, default=3)
    ap.add_argument("--test-scenes", type=int, default=9)
    ap.add_argument("--target-ap", type=float, nargs="+", default=[0.10, 0.15], help="AP@0.5 levels to reach")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="", help="write the figures as JSON here")
    args = ap.parse_args()
    if args.quick:
        args.pushes, args.eval_every, args.test_scenes = 16, 4, 4
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    t0, c0 = time.perf_counter(), cpu_s()
    load0 = os.getloadavg()[0]
    print(f"# push selection, world {args.world}: {args.pushes} pushes at {args.width}x{args.height}, "
          f"{args.steps} steps every {args.eval_every} pushes (160x120, batch 8), {args.test_scenes} test scenes, "
          f"seeds {args.seeds}, target AP@0.5 {args.target_ap}; load average {load0:.1f}", flush=True)
    scenes = render_test_scenes(args.test_scenes, seed=20_000, width=args.width, height=args.height,
                                world=args.world)
    depth_ap = evaluate_segmenter(lambda s: depth_bottom_up(s.frame).instances, scenes)["AP50"]
    print(f"  depth-aware bottom-up baseline on the test scenes: AP@0.5 {depth_ap:.3f}", flush=True)
    results = [run(policy, seed, args, scenes) for seed in args.seeds for policy in args.policies]

    checkpoints = sorted({c["pushes"] for r in results for c in r["curve"]})
    targets = [str(t) for t in args.target_ap]
    print(f"\n| policy | {' | '.join(f'AP@0.5 after {n}' for n in checkpoints)} | "
          f"{' | '.join(f'pushes to AP@0.5 >= {t} (per seed)' for t in targets)} | labels kept |")
    print("|---|" + "---|" * (len(checkpoints) + len(targets)) + "---|")
    summary = {}
    for policy in args.policies:
        rs = [r for r in results if r["policy"] == policy]
        cells = []
        for n in checkpoints:
            v = [c["ap50"] for r in rs for c in r["curve"] if c["pushes"] == n]
            cells.append(f"{np.mean(v):.3f} ± {np.std(v):.3f}" if v else "-")
        need = {t: [r["pushes_to_target"][t] for r in rs] for t in targets}
        summary[policy] = {"ap50_mean": {str(n): float(np.mean([c["ap50"] for r in rs for c in r["curve"]
                                                                   if c["pushes"] == n] or [np.nan]))
                                         for n in checkpoints},
                           "pushes_to_target": need, "labels": [r["labels"] for r in rs]}
        reached = [", ".join(str(n) if n is not None else f">{args.pushes}" for n in need[t]) for t in targets]
        print(f"| {policy} | {' | '.join(cells)} | {' | '.join(reached)} | "
              f"{', '.join(str(r['labels']) for r in rs)} |")
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    print(f"# total {wall:.0f} s wall, {cpu:.0f} s CPU, load average {load0:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end")
    if args.json:
        out = {"world": args.world, "settings": {k: v for k, v in vars(args).items() if k != "json"},
               "depth_bottom_up_ap50": float(depth_ap), "runs": results, "summary": summary,
               "wall_s": wall, "cpu_s": cpu, "load_average": [load0, os.getloadavg()[0]]}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(args.json), lambda f: f.write(json.dumps(out, indent=1).encode()))


if __name__ == "__main__":
    main()
