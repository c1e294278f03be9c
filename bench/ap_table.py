"""Does self-supervised instance segmentation learn on the simulated tabletop? The AP table of the papers.

Steps (issue 4's evaluation bench; the table structure of Eitel et al. Table I / Pathak et al. Table 1):

1. Collect push interactions in the simulator (train objects, low + medium clutter, pushes
   planned by our planner, 3 pushes per scene as ``bench/label_quality.py``). Each push keeps the
   before image, the action pixel, and the ground-truth mask of the moved object (the object
   whose position moved most, > 5 mm, taken from the *before* instance mask; none moved ->
   a true negative). ``--world simple|realistic`` (default realistic). Cached under
   ``bench/results/ap_table_cache_<world>/`` (one .npz per push), so a
   rerun with the same collection settings skips the simulator.
2. Three label sets from the same interactions: frame differencing (``FrameDifferenceLabeler``),
   optical flow (``FlowMaskLabeler``) -- kept labels and negatives only -- and the ground-truth masks
   of the moved objects (upper bound; every executed push, true negatives included). Optional
   (``--label-sets``): ``flow_points``, the flow labels plus point labels of the pushes the flow
   labeler discarded although the object at the action pixel moved, as the online trainer
   (``LabeledDataset``, ``point_labels``) uses them; diagnostics that look at the ground truth,
   ``ground_truth_flow_kept`` (true masks of the pushes flow kept) and ``flow_iou50`` (flow labels
   with IoU >= 0.5). ``--train-seeds`` trains one model per label set and seed: the table shows
   mean +- sample std, and the flow/GT ratio of the means and per seed.
3. One model per label set, same budget: same steps, batch, input size (160x120 as
   config/trainer.yaml; images resized with ``online_training.resize_item`` and batched with
   ``collate_samples`` as ``LabeledDataset.batches``), the shared ``Trainer``.
4. Held-out scenes of *novel* objects (``render_test_scenes(n, split='test')`` at 640x480, all
   clutter levels), ``segment_instances(model, rgb, (160, 120))``, ``evaluate_segmenter``:
   AP@0.3, AP@0.5, AP@0.75, AP@[.5:.95] for the bottom-up baseline, random weights and the three
   trained models.

Usage::

    PYTHONPATH=. python bench/ap_table.py            # full (~15 min on 2 shared cores)
    PYTHONPATH=. python bench/ap_table.py --quick    # < 3 min (fewer pushes, steps, test scenes)
    # issue 12's comparison: 3 training seeds (27 min wall / 10 min CPU at load average 9 with a warm cache)
    PYTHONPATH=. python bench/ap_table.py --label-sets flow flow_points ground_truth frame_difference \
        --train-seeds 0 1 2 --json bench/results/ap_table_realistic_3seeds.json
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
from selfsup_perception.core.evaluation.bottom_up import bottom_up_instances
from selfsup_perception.sim.evaluation_scenes import evaluate_segmenter, render_test_scenes
from selfsup_perception.sim.scripted_pushes import simulated_push
from selfsup_perception.core.interaction import PlannerConfig
from selfsup_perception.core.labeling import FlowMaskLabeler, FrameDifferenceLabeler
from selfsup_perception.core.learning.serving.inference import segment_instances
from selfsup_perception.core.learning.tasks.instance import (
    InstanceSegmentationTask,
    InstanceTaskConfig,
    collate_samples,
)
from selfsup_perception.core.learning.models.instance_segmentation import InferenceConfig
from selfsup_perception.core.learning.training.online import OnlineTrainingConfig, point_label_evidence, resize_item
from selfsup_perception.core.types import MaskLabel
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig
from selfsup_perception.sim.tabletop import WORLDS, SimConfig, TabletopSim, replace_camera

LABEL_SETS = ("frame_difference", "flow", "ground_truth")
# flow_points: the flow labels plus point labels of the pushes the flow labeler discarded although the object
# at the action pixel moved (online.point_label_evidence, as the online trainer's point_labels): what the robot
# trains on by default
SELF_SUPERVISED_EXTRA = ("flow_points",)
# where does the flow/GT gap come from? (--label-sets; they look at the ground truth, so diagnostics only)
#   ground_truth_flow_kept: the true masks of the pushes whose flow label was kept (fewer labels, none wrong)
#   flow_iou50: the kept flow labels whose IoU with the true mask is >= 0.5 (the wholly wrong ones left out)
DIAGNOSTIC_SETS = ("ground_truth_flow_kept", "flow_iou50")
# 2: flow labels with hole filling, completion, flow check and depth fallback. Files written since also keep the
# labels' reasons and numeric stats (same labels, so the version stayed); older files load without them.
# 3: the third-pass flow labeler (object check, holes are not depth jumps) and the realistic world without
# restless objects (sim/realistic.remove_restless_objects): other pushes and other labels.
# 4: the fourth-pass flow labeler (the residual ego-motion model must register the images better, a
# depth-fallback object joins its parts across a 4 px fold, static plain pieces leave a flow mask): other labels.
CACHE_VERSION = 4


def cpu_s() -> float:
    """CPU seconds of this process and its waited-for children (less sensitive to other jobs than wall time)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------------- 1. collection


def collect_pushes(num_pushes: int, *, seed0: int, pushes_per_scene: int, clutters: tuple[str, ...],
                   width: int = 640, height: int = 480, world: str = "realistic"):
    """Yield dicts {rgb, gt_mask or None, action_pixel, moved_m, labels: {name: (mask, kept, negative)}, scene}."""
    labelers = {"flow": FlowMaskLabeler(), "frame_difference": FrameDifferenceLabeler()}
    done, k = 0, 0
    with TabletopSim(replace_camera(SimConfig(seed=0, world=world), width=width, height=height)) as sim:
        while done < num_pushes:
            seed = seed0 + k
            clutter = clutters[k % len(clutters)]
            k += 1
            sim.reset_scene(seed, split="train", clutter=clutter)
            rng = np.random.default_rng([seed, 17])
            for _ in range(pushes_per_scene):
                if done >= num_pushes:
                    break
                result = simulated_push(sim, rng, PlannerConfig(), sample_id=f"{clutter}-{seed}")
                if result is None:
                    break
                sample, gt, moved_m = result
                if sample is None:
                    continue
                labels, info = {}, {}
                for name, lab in labelers.items():
                    label = lab.label(sample)
                    labels[name] = (label.mask.astype(bool), bool(label.kept), bool(label.is_negative))
                    info[name] = (label.reason, {k: float(v) for k, v in label.stats.items()
                                                 if isinstance(v, (bool, int, float, np.number))})
                done += 1
                yield {"rgb": sample.before.rgb, "gt_mask": gt,
                       "action_pixel": tuple(float(x) for x in sample.action_pixel),
                       "moved_m": moved_m, "labels": labels, "label_info": info, "scene": f"{clutter}-{seed}"}


def _save_push(path: Path, p: dict) -> None:
    arrays = {"rgb": p["rgb"], "action_pixel": np.asarray(p["action_pixel"], np.float32),
              "moved_m": np.float32(p["moved_m"]), "has_gt": np.bool_(p["gt_mask"] is not None),
              "gt_mask": p["gt_mask"] if p["gt_mask"] is not None else np.zeros(p["rgb"].shape[:2], bool)}
    for name, (mask, kept, neg) in p["labels"].items():
        arrays[f"{name}_mask"], arrays[f"{name}_kept"], arrays[f"{name}_negative"] = mask, np.bool_(kept), np.bool_(neg)
        reason, stats = p["label_info"][name]
        arrays[f"{name}_reason"], arrays[f"{name}_stats"] = np.str_(reason), np.str_(json.dumps(stats))
    atomic_write_bytes(path, lambda f: np.savez_compressed(f, **arrays))


def _load_push(path: Path) -> dict:
    z = np.load(path)
    names = ("flow", "frame_difference")
    labels = {n: (z[f"{n}_mask"], bool(z[f"{n}_kept"]), bool(z[f"{n}_negative"])) for n in names}
    info = {n: (str(z[f"{n}_reason"]), json.loads(str(z[f"{n}_stats"]))) if f"{n}_reason" in z else ("", {})
            for n in names}  # ("", {}): a file written before cache version 3
    return {"rgb": z["rgb"], "gt_mask": z["gt_mask"] if bool(z["has_gt"]) else None,
            "action_pixel": tuple(float(x) for x in z["action_pixel"]), "moved_m": float(z["moved_m"]),
            "labels": labels, "label_info": info}


def load_or_collect(cache_dir: Path, num_pushes: int, seed0: int, pushes_per_scene: int,
                    clutters: tuple[str, ...], world: str = "realistic") -> tuple[list[dict], float]:
    """The first ``num_pushes`` pushes of the collection (seed0, pushes_per_scene, clutters, world), cached."""
    settings = {"version": CACHE_VERSION, "seed": seed0, "pushes_per_scene": pushes_per_scene,
                "clutters": list(clutters), "size": [640, 480], "world": world}
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta_path = cache_dir / "settings.json"
    if meta_path.exists() and json.loads(meta_path.read_text()) != settings:
        for f in cache_dir.glob("push_*.npz"):
            f.unlink()
    meta_path.write_text(json.dumps(settings))
    have = sorted(cache_dir.glob("push_*.npz"))
    t0 = time.perf_counter()
    if len(have) < num_pushes:
        # the collection is deterministic, so a longer run repeats the cached prefix and extends it
        for i, p in enumerate(collect_pushes(num_pushes, seed0=seed0, pushes_per_scene=pushes_per_scene,
                                             clutters=clutters, world=world)):
            path = cache_dir / f"push_{i:04d}.npz"
            if not path.exists():
                _save_push(path, p)
            if (i + 1) % 10 == 0:
                print(f"  collected {i + 1}/{num_pushes} pushes ({time.perf_counter() - t0:.0f} s)", flush=True)
    pushes = [_load_push(cache_dir / f"push_{i:04d}.npz") for i in range(num_pushes)]
    return pushes, time.perf_counter() - t0


# --------------------------------------------------------------------------- 2. label sets


def label_set(pushes: list[dict], name: str, size: tuple[int, int]) -> list[dict]:
    """Training items (resized to ``size`` = (w, h)) of one label set; see module doc."""
    items = []
    for p in pushes:
        if name in DIAGNOSTIC_SETS:
            flow_mask, kept, neg = p["labels"]["flow"]
            gt = p["gt_mask"] if p["gt_mask"] is not None else np.zeros(p["rgb"].shape[:2], bool)
            if not kept or neg != (p["gt_mask"] is None):
                continue
            if name == "flow_iou50" and not neg and (flow_mask & gt).sum() < 0.5 * (flow_mask | gt).sum():
                continue
            mask = gt if name == "ground_truth_flow_kept" else flow_mask
        elif name == "flow_points":
            mask, kept, neg = p["labels"]["flow"]
            if not kept:
                reason, stats = p["label_info"]["flow"]
                if not stats:  # a file without the label's stats: its candidate mask's area is stats['area']
                    stats = {"area": float(mask.sum())}
                label = MaskLabel(mask, neg, kept, reason, "flow", stats)
                if point_label_evidence(label):
                    item = resize_item(p["rgb"], np.zeros_like(mask), p["action_pixel"], size)
                    items.append({**item, "is_negative": False, "is_point": True})
                continue
        elif name == "ground_truth":
            neg = p["gt_mask"] is None
            mask = np.zeros(p["rgb"].shape[:2], bool) if neg else p["gt_mask"]
        else:
            mask, kept, neg = p["labels"][name]
            if not kept:
                continue
        item = resize_item(p["rgb"], mask, p["action_pixel"], size)
        item["is_negative"] = bool(neg)
        if not neg and not item["mask"].any():
            continue
        items.append(item)
    return items


def label_quality(pushes: list[dict], name: str) -> tuple[int, int, float]:
    """(positives, negatives, mean IoU of the positives with the ground-truth mask)."""
    pos = neg = 0
    ious = []
    for p in pushes:
        mask, kept, is_neg = p["labels"][name]
        if not kept:
            continue
        if is_neg:
            neg += 1
            continue
        pos += 1
        gt = p["gt_mask"] if p["gt_mask"] is not None else np.zeros_like(mask)
        union = (mask | gt).sum()
        ious.append((mask & gt).sum() / union if union else 0.0)
    return pos, neg, float(np.mean(ious)) if ious else float("nan")


# --------------------------------------------------------------------------- 3. training


def batches(items: list[dict], batch_size: int, rng: np.random.Generator, color_jitter: float = 0.0):
    """As ``LabeledDataset.batches``: random batches with horizontal flips (and ``color_jitter``) of the whole
    resized images."""
    while True:
        idx = rng.choice(len(items), size=min(batch_size, len(items)), replace=False)
        yield collate_samples([items[i] for i in idx], rng=rng, color_jitter=color_jitter)


def train_model(items: list[dict], task_config: InstanceTaskConfig, trainer_config: TrainerConfig, steps: int,
                batch_size: int, seed: int, color_jitter: float = 0.0):
    trainer = Trainer(InstanceSegmentationTask(task_config), trainer_config)
    records = trainer.train_steps(batches(items, batch_size, np.random.default_rng(seed), color_jitter), steps)
    return trainer.model.eval(), records


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", choices=WORLDS, default="realistic", help="simulated world")
    ap.add_argument("--quick", action="store_true", help="40 pushes, 150 steps, 9 test scenes (< 3 min with a warm cache)")
    ap.add_argument("--pushes", type=int, default=120, help="push interactions collected")
    ap.add_argument("--pushes-per-scene", type=int, default=3)
    ap.add_argument("--steps", type=int, default=400, help="optimizer steps per model")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--input", type=int, nargs=2, default=[160, 120], metavar=("W", "H"))
    ap.add_argument("--test-scenes", type=int, default=30)
    d = InstanceTaskConfig()
    ap.add_argument("--mask-loss", default=d.mask_loss, choices=["bce", "robust_set", "soft_iou"])
    ap.add_argument("--objectness-loss", default=d.objectness_loss, choices=["bce", "bootstrap"])
    ap.add_argument("--unlabelled-weight", type=float, default=d.unlabelled_weight)
    ap.add_argument("--noisy-warmup", type=int, default=d.noisy_loss_warmup_steps, help="noisy_loss_warmup_steps")
    ap.add_argument("--small-loss-forget-rate", type=float, default=d.small_loss_forget_rate,
                    help="small_loss_forget_rate: each step leaves out this share of the batch with the largest loss")
    ap.add_argument("--forget-ramp", type=int, default=d.forget_ramp_steps, help="forget_ramp_steps")
    ap.add_argument("--color-jitter", type=float, default=OnlineTrainingConfig().color_jitter,
                    help="photometric jitter of the training images (collate_samples; the online trainer's default)")
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0],
                    help="one model per label set and seed (initial weights, batches); the table shows mean +- std")
    ap.add_argument("--json", default="", help="write settings, per-seed and summary figures to this path")
    ap.add_argument("--label-sets", nargs="+", default=list(LABEL_SETS), choices=LABEL_SETS + SELF_SUPERVISED_EXTRA + DIAGNOSTIC_SETS,
                    help=f"label sets to train on (diagnostics that look at the ground truth: {', '.join(DIAGNOSTIC_SETS)})")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--seed", type=int, default=1000, help="first training-scene seed")
    ap.add_argument("--cache-dir", default="", help="default: bench/results/ap_table_cache_<world>")
    ap.add_argument("--collect-only", action="store_true")
    args = ap.parse_args()
    args.cache_dir = args.cache_dir or f"bench/results/ap_table_cache_{args.world}"
    if args.quick:
        args.pushes, args.steps, args.test_scenes = min(args.pushes, 40), 150, 9
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    size = (args.input[0], args.input[1])
    t_start, c_start, load0 = time.perf_counter(), cpu_s(), os.getloadavg()[0]
    print(f"# AP table, world {args.world}: {args.pushes} pushes (train objects, low+medium clutter, {args.pushes_per_scene} per scene, "
          f"seed {args.seed}); {args.steps} steps, batch {args.batch_size}, lr {args.lr}, input {size[0]}x{size[1]}, "
          f"mask loss {args.mask_loss}, objectness loss {args.objectness_loss} (balanced, unlabelled weight "
          f"{args.unlabelled_weight}), noisy warm-up {args.noisy_warmup}, small-loss forget rate "
          f"{args.small_loss_forget_rate} (ramp {args.forget_ramp}); colour jitter {args.color_jitter}; training seeds {args.train_seeds}; {InferenceConfig()}; "
          f"{args.test_scenes} test scenes (novel objects, 640x480, low/medium/high); torch threads {args.threads}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    pushes, collect_s = load_or_collect(Path(args.cache_dir), args.pushes, args.seed, args.pushes_per_scene,
                                        ("low", "medium"), args.world)
    n_moved = sum(p["gt_mask"] is not None for p in pushes)
    print(f"pushes: {len(pushes)} ({n_moved} moved an object), collection/cache load {collect_s:.0f} s")
    for name in ("frame_difference", "flow"):
        pos, neg, miou = label_quality(pushes, name)
        print(f"  {name:17s} kept positives {pos:3d}, negatives {neg:3d}, mIoU of kept positives with GT {miou:.3f}")
    if args.collect_only:
        return

    t0 = time.perf_counter()
    scenes = render_test_scenes(args.test_scenes, split="test", world=args.world)
    print(f"test scenes rendered in {time.perf_counter() - t0:.0f} s", flush=True)

    task_config = InstanceTaskConfig(mask_loss=args.mask_loss, objectness_loss=args.objectness_loss,
                                     unlabelled_weight=args.unlabelled_weight,
                                     noisy_loss_warmup_steps=args.noisy_warmup,
                                     small_loss_forget_rate=args.small_loss_forget_rate,
                                     forget_ramp_steps=args.forget_ramp)
    infer = InferenceConfig()
    rows: list[dict] = []  # one per (method, seed)

    def evaluate(model) -> tuple[dict, float]:
        t = time.perf_counter()
        r = evaluate_segmenter(lambda s: segment_instances(model, s.rgb, size, config=infer), scenes)
        return r, 1000 * (time.perf_counter() - t) / len(scenes)

    t = time.perf_counter()
    r = evaluate_segmenter(lambda s: bottom_up_instances(s.frame), scenes)
    rows.append({"method": "bottom-up (Felzenszwalb on RGB above the table)", "labels": "-", "seed": None, **r,
                 "train_s": 0.0, "ms_per_image": 1000 * (time.perf_counter() - t) / len(scenes)})
    print(rows[-1]["method"], {k: round(v, 3) for k, v in r.items()}, flush=True)
    for seed in args.train_seeds:
        trainer_config = TrainerConfig(lr=args.lr, warmup_steps=20, schedule="cosine", total_steps=args.steps,
                                       log_every=0, seed=seed)
        random_model = Trainer(InstanceSegmentationTask(task_config), trainer_config).model.eval()
        r, ms = evaluate(random_model)
        rows.append({"method": "random weights", "labels": "-", "seed": seed, **r, "train_s": 0.0, "ms_per_image": ms})
        print(rows[-1]["method"], f"seed {seed}", {k: round(v, 3) for k, v in r.items()}, flush=True)
        for name in args.label_sets:
            items = label_set(pushes, name, size)
            n_point = sum(bool(it.get("is_point")) for it in items)
            n_pos = sum(not it["is_negative"] for it in items) - n_point
            t, c = time.perf_counter(), cpu_s()
            model, records = train_model(items, task_config, trainer_config, args.steps, args.batch_size, seed=seed,
                                         color_jitter=args.color_jitter)
            train_s, train_cpu = time.perf_counter() - t, cpu_s() - c
            r, ms = evaluate(model)
            last = records[-20:]
            tail = {k: float(np.mean([x[k] for x in last if k in x])) for k in ("loss", "mask_iou") if any(k in x for x in last)}
            rows.append({"method": f"{name} labels", "labels": f"{n_pos}+{len(items) - n_pos - n_point}"
                         + (f" + {n_point} points" if n_point else ""), "seed": seed, **r,
                         "train_s": train_s, "train_cpu_s": train_cpu, "ms_per_image": ms})
            print(f"{rows[-1]['method']} seed {seed}: {len(items)} items, train {train_s:.0f} s wall / {train_cpu:.0f} s CPU, "
                  f"last-20 {tail}", {k: round(v, 3) for k, v in r.items()}, flush=True)

    summary = summarize(rows)
    seeds = ", ".join(str(x) for x in args.train_seeds)
    print(f"\n| method | train labels (pos+neg) | AP@0.3 | AP@0.5 | AP@0.75 | AP@[.5:.95] | train s | ms/image |"
          f"   (mean +- sample std over training seeds {seeds})")
    print("|---|---|---|---|---|---|---|---|")
    for m in summary:
        cols = " | ".join(f"{m[k]:.3f}" if m["n"] < 2 else f"{m[k]:.3f} ± {m[k + '_std']:.3f}"
                          for k in ("AP30", "AP50", "AP75", "AP"))
        print(f"| {m['method']} | {m['labels']} | {cols} | {m['train_s']:.0f} | {m['ms_per_image']:.0f} |")
    ratio = flow_gt_ratio(rows)
    if ratio is not None:
        per_seed = ", ".join(f"{x:.2f}" for x in ratio["per_seed"])
        print(f"\nflow / GT-label AP@0.5 = {ratio['of_means']:.2f} (ratio of the means; per seed {per_seed}; target >= 0.9)")
    total = {"wall_s": time.perf_counter() - t_start, "cpu_s": cpu_s() - c_start, "load_average_end": os.getloadavg()[0]}
    print(f"# total {total['wall_s']:.0f} s wall, {total['cpu_s']:.0f} s CPU, load average {total['load_average_end']:.1f}")
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        label_stats = {n: dict(zip(("positives", "negatives", "miou"), label_quality(pushes, n)))
                       for n in ("frame_difference", "flow")}
        Path(args.json).write_text(json.dumps({"settings": settings, "task_config": task_config.to_dict(),
                                               "label_quality": label_stats, "rows": rows, "summary": summary,
                                               "flow_gt_ap50": ratio, "total": total, "load_average_start": load0},
                                              indent=1))
        print(f"wrote {args.json}")


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and sample std over the seeds of each method, in the order the methods first appear."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        m = {"method": method, "labels": rs[0]["labels"], "n": len(rs)}
        for k in ("AP30", "AP50", "AP75", "AP", "train_s", "ms_per_image"):
            x = np.array([r[k] for r in rs], float)
            m[k], m[k + "_std"] = float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0
        out.append(m)
    return out


def flow_gt_ratio(rows: list[dict]) -> dict | None:
    """AP@0.5 of flow labels / ground-truth labels: of the means over seeds, and per seed."""
    flow = {r["seed"]: r["AP50"] for r in rows if r["method"] == "flow labels"}
    gt = {r["seed"]: r["AP50"] for r in rows if r["method"] == "ground_truth labels"}
    seeds = [s for s in flow if s in gt]
    if not seeds or np.mean([gt[s] for s in seeds]) <= 0:
        return None
    return {"of_means": float(np.mean([flow[s] for s in seeds]) / np.mean([gt[s] for s in seeds])),
            "per_seed": [flow[s] / gt[s] if gt[s] > 0 else float("nan") for s in seeds], "seeds": seeds}

if __name__ == "__main__":
    main()
