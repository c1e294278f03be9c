"""Bench: RegConsist region-consistency pre-training vs random init on simulated multi-view tabletops.

Protocol (scaled-down RegConsist Sec. IV): a few static scenes (train split, medium clutter), each
captured from ``--views`` cameras on an arc around the table (sim/multiview.py). Pre-training uses
all views without labels; view pairs have IoU in [0.3, 0.9]. Fine-tuning uses the ground truth of
``--label-fraction`` (5 %) of the views with the focal loss; mIoU is measured on all remaining views
(classes 1..7 present in the ground truth; class 0 'unknown' ignored). Rows:

* random init: fine-tuning only;
* RegConsist with Felzenszwalb regions, four sampling/matching modes (Ra/Ba x X/R);
* upper bound: ground-truth segments as regions (semantic class for background, instance id for
  objects), balanced sampling + region matching (the paper's BaR row of Table I).

Every run starts from the same random weights and sees the same labelled views and step counts.
Also measures registration throughput at 640x480 on simulated views. Prints tables (times as wall
clock, runs also as this process's CPU time); ``--json PATH`` writes the same figures with the
settings, load average, wall and CPU time (``bench/bench_report.py``).

    PYTHONPATH=. python bench/region_consistency.py            # full, ~10 min on 2 cores
    PYTHONPATH=. python bench/region_consistency.py --quick    # < 2 min
    PYTHONPATH=. python bench/region_consistency.py --quick --json /tmp/region_consistency.json
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from selfsup_perception.core.learning.tasks.region_consistency import (
    RegionConsistencyConfig,
    RegionConsistencyData,
    RegionConsistencyDataConfig,
    RegionConsistencyTask,
)
from selfsup_perception.core.learning.tasks.semantic import (
    SemanticSegmentationTask,
    SemanticTaskConfig,
    confusion_matrix,
    mean_iou,
    predict,
)
from selfsup_perception.core.registration import (
    FelzenszwalbConfig,
    PixelPairSamplerConfig,
    RegionMatchConfig,
    correspondences,
    felzenszwalb_regions,
    match_regions,
    select_view_pairs,
    view_overlap,
)
from selfsup_perception.core.registration.view_pairs import ViewPair
from selfsup_perception.sim.multiview import MultiViewConfig, capture_scene
from selfsup_perception.sim.realistic import REALISTIC_SEMANTIC_CLASSES
from selfsup_perception.sim.tabletop import SEMANTIC_CLASSES, WORLDS, SimConfig, TabletopSim, replace_camera

from bench_report import BenchRecord, Column, add_json_argument  # bench/ is on sys.path when run as a script


def train(task, model, next_batch, steps: int, lr: float, warmup: int = 0, clip: float = 5.0) -> list[float]:
    """Minimal loop: AdamW, linear warm-up + cosine decay to lr/10, grad-norm clipping, NaN guard."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    losses = []
    model.train()
    for step in range(steps):
        # schedule
        if step < warmup:
            f = (step + 1) / warmup
        else:
            f = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = lr * f
        # forward + loss
        loss, _ = task.compute_loss(model, next_batch())
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss at step {step}")
        # clip + step
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def gt_segments(view) -> np.ndarray:
    """Ground-truth regions: one per object instance, one per background semantic class."""
    return view.semantic.astype(np.int64) * 65536 + view.instance.astype(np.int64)


def registration_throughput(repeats: int, world: str = "simple") -> dict:
    sim = TabletopSim(replace_camera(SimConfig(seed=0, world=world), width=640, height=480))
    try:
        from selfsup_perception.sim.multiview import render_views, ring_camera_poses

        sim.reset_scene(0, clutter="medium")
        views = render_views(sim, ring_camera_poses(MultiViewConfig(num_views=8), np.random.default_rng(0)))
    finally:
        sim.close()
    a, b = views[0], views[1]
    args = (a.depth, a.intrinsics, a.camera_to_world, b.depth, b.intrinsics, b.camera_to_world)

    def timed(fn, n):
        fn()
        t = time.perf_counter()
        for _ in range(n):
            out = fn()
        return (time.perf_counter() - t) / n, out

    t_corr, corr = timed(lambda: correspondences(*args), repeats)
    t_iou1, iou = timed(lambda: view_overlap(*args), repeats)
    t_iou4, iou4 = timed(lambda: view_overlap(*args, stride=4), repeats)
    felz = FelzenszwalbConfig(scale=100.0, sigma=0.8, min_size=480)  # min_size scaled by area from 30 @160x120
    t_felz, ra = timed(lambda: felzenszwalb_regions(a.rgb, felz), max(1, repeats // 3))
    rb = felzenszwalb_regions(b.rgb, felz)
    t_match, _ = timed(lambda: match_regions(ra, rb, corr), repeats)
    return dict(n_corr=len(corr), iou=iou, iou4=iou4, t_corr=t_corr, t_iou1=t_iou1, t_iou4=t_iou4, t_felz=t_felz,
                t_match=t_match, n_regions=(int(ra.max()) + 1, int(rb.max()) + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", choices=WORLDS, default="realistic", help="simulated world")
    ap.add_argument("--quick", action="store_true", help="tiny settings, < 2 min")
    ap.add_argument("--scenes", type=int, default=5)
    ap.add_argument("--views", type=int, default=16, help="views per scene")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--pretrain-steps", type=int, default=250)
    ap.add_argument("--finetune-steps", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=4, help="view pairs per pre-training batch")
    ap.add_argument("--pairs-per-view", type=int, default=1024, help="pixel pairs per view pair")
    ap.add_argument("--label-fraction", type=float, default=0.05)
    ap.add_argument("--pretrain-lr", type=float, default=1e-3)
    ap.add_argument("--finetune-lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: OpenMP spinning on a shared 2-core machine is very slow)")
    ap.add_argument("--seed", type=int, default=0)
    add_json_argument(ap)
    args = ap.parse_args()
    if args.quick:
        args.scenes, args.views, args.width, args.height = 2, 10, 96, 72
        args.pretrain_steps, args.finetune_steps, args.pairs_per_view = 25, 40, 512
    record = BenchRecord("region_consistency", args)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    # ---------------------------------------------------------------- registration throughput
    reg = registration_throughput(repeats=3 if args.quick else 10, world=args.world)

    # ---------------------------------------------------------------- data
    mv = MultiViewConfig(num_views=args.views)
    views, pairs = [], []
    for s in range(args.scenes):
        scene = capture_scene(1000 + s, split="train", clutter="medium", width=args.width, height=args.height, config=mv,
                              world=args.world)
        offset = len(views)
        for p in select_view_pairs(scene, iou_low=0.3, iou_high=0.9):
            pairs.append(ViewPair(p.index_a + offset, p.index_b + offset, p.iou))
        views += scene
    rng = np.random.default_rng(args.seed)
    n_lab = max(2, int(round(args.label_fraction * len(views))))
    labelled = rng.choice(len(views), size=n_lab, replace=False)
    test = np.setdiff1d(np.arange(len(views)), labelled)
    t_data = time.perf_counter() - t0

    classes = REALISTIC_SEMANTIC_CLASSES if args.world == "realistic" else SEMANTIC_CLASSES
    num_classes = len(classes)
    sem_task = SemanticSegmentationTask(SemanticTaskConfig(ignore_index=0, seed=args.seed))
    torch.manual_seed(args.seed)
    init_state = {k: v.clone() for k, v in sem_task.build_model().state_dict().items()}
    lab_rgb = torch.from_numpy(np.stack([views[i].rgb for i in labelled])).permute(0, 3, 1, 2).contiguous()
    lab_sem = torch.from_numpy(np.stack([views[i].semantic for i in labelled]).astype(np.int64))
    test_rgb = torch.from_numpy(np.stack([views[i].rgb for i in test])).permute(0, 3, 1, 2).contiguous()
    test_sem = np.stack([views[i].semantic for i in test])

    def finetune_and_eval(model) -> tuple[float, np.ndarray]:
        frng = np.random.default_rng(args.seed + 1)

        def batch():
            idx = frng.choice(n_lab, size=min(4, n_lab), replace=False)
            return {"rgb": lab_rgb[idx], "semantic": lab_sem[idx]}

        task = SemanticSegmentationTask(SemanticTaskConfig(ignore_index=0, seed=args.seed))
        train(task, model, batch, args.finetune_steps, args.finetune_lr, warmup=10)
        pred = predict(model, test_rgb).numpy()
        return mean_iou(confusion_matrix(pred, test_sem, num_classes, ignore_index=0), ignore_classes=(0,))

    runs = [("random init", None, None, None)]
    for sampling in ("random", "balanced"):
        for matching in ("exact", "region"):
            runs.append((f"RegConsist {sampling[:2].capitalize()}{'X' if matching == 'exact' else 'R'} (Felzenszwalb)",
                         sampling, matching, "felzenszwalb"))
    runs.append(("upper bound BaR (GT regions)", "balanced", "region", "gt"))

    felz = FelzenszwalbConfig(scale=100.0, sigma=0.8, min_size=max(10, int(30 * args.width * args.height / 19200)))
    results = []
    for name, sampling, matching, regions in runs:
        t, c = time.perf_counter(), time.process_time()
        model = sem_task.build_model()
        model.load_state_dict(init_state)
        pre_loss = (float("nan"), float("nan"))
        if sampling is not None:
            data_cfg = RegionConsistencyDataConfig(
                sampler=PixelPairSamplerConfig(sampling=sampling, matching=matching, num_pairs=args.pairs_per_view),
                felzenszwalb=felz, region_match=RegionMatchConfig(criterion="iou", min_overlap=0.3))
            data = RegionConsistencyData(views, pairs, data_cfg,
                                         regions=[gt_segments(v) for v in views] if regions == "gt" else None)
            prng = np.random.default_rng(args.seed + 2)
            task = RegionConsistencyTask(RegionConsistencyConfig(seed=args.seed))
            losses = train(task, model, lambda: data.sample_batch(args.batch_size, prng), args.pretrain_steps,
                           args.pretrain_lr, warmup=max(1, args.pretrain_steps // 20))
            k = max(1, len(losses) // 10)
            pre_loss = (float(np.mean(losses[:k])), float(np.mean(losses[-k:])))
        miou, per_class = finetune_and_eval(model)
        results.append((name, miou, per_class, pre_loss, time.perf_counter() - t, time.process_time() - c))
        print(f"  done: {name:40s} mIoU {100 * miou:5.1f}  ({time.perf_counter() - t:.0f} s)", flush=True)

    # ---------------------------------------------------------------- report
    print(f"\nRegConsist bench ({args.world} simulated tabletop, CPU)")
    print(f"settings: {args.scenes} scenes x {args.views} views at {args.width}x{args.height}, {len(pairs)} view pairs "
          f"(IoU 0.3-0.9), labelled {n_lab} views ({100 * n_lab / len(views):.1f} %), test {len(test)} views; "
          f"pre-train {args.pretrain_steps} steps x {args.batch_size} view pairs x {args.pairs_per_view} pixel pairs "
          f"(lr {args.pretrain_lr}), fine-tune {args.finetune_steps} steps (lr {args.finetune_lr}), "
          f"Felzenszwalb scale={felz.scale} sigma={felz.sigma} min_size={felz.min_size}, threads {args.threads}, "
          f"seed {args.seed}")
    record.add(views=len(views), view_pairs=len(pairs), labelled_views=int(n_lab), test_views=len(test),
               felzenszwalb=felz, classes=list(classes))
    present = [c for c in range(1, num_classes) if (test_sem == c).any()]
    rows = []
    for name, miou, per_class, (l0, l1), dt, dc in results:
        rows.append({"run": name, "miou_pct": 100 * miou,
                     **{f"iou_pct.{classes[c]}": 100 * per_class[c] for c in present},
                     "bt_loss_first": l0, "bt_loss_last": l1, "time_s": dt, "cpu_s": dc})
    record.table("runs", rows, [Column("run"), Column("miou_pct", "mIoU %", ".1f")]
                 + [Column(f"iou_pct.{classes[c]}", classes[c][:6], ".1f") for c in present]
                 + [Column("bt_loss_first", "BT loss first", ".2f"), Column("bt_loss_last", "BT loss last", ".2f"),
                    Column("time_s", "time s", ".0f"), Column("cpu_s", "CPU s", ".0f")],
                 title="mIoU after fine-tuning on the labelled views (IoU per class present in the test views, %)")

    def rate(seconds: float) -> float:
        return 1 / seconds if seconds > 0 else float("nan")

    record.table("registration", [
        {"step": "correspondences A->B", "ms": 1e3 * reg["t_corr"], "per_s": rate(reg["t_corr"]),
         "detail": f"directed pairs; {reg['n_corr']} correspondences"},
        {"step": "view_overlap (both directions), stride 1", "ms": 1e3 * reg["t_iou1"], "per_s": rate(reg["t_iou1"]),
         "detail": f"pairs; IoU {reg['iou']:.3f}"},
        {"step": "view_overlap (both directions), stride 4", "ms": 1e3 * reg["t_iou4"], "per_s": rate(reg["t_iou4"]),
         "detail": f"pairs; IoU {reg['iou4']:.3f}"},
        {"step": "region_overlap + match_regions (Cantor + unique)", "ms": 1e3 * reg["t_match"],
         "per_s": rate(reg["t_match"]), "detail": f"pairs; {reg['n_regions'][0]}x{reg['n_regions'][1]} regions"},
        {"step": "felzenszwalb_regions", "ms": 1e3 * reg["t_felz"], "per_s": rate(reg["t_felz"]),
         "detail": "images"}],
        [Column("step"), Column("ms", fmt=".1f"), Column("per_s", "per s", ".1f"), Column("detail", "what per s")],
        title=f"registration at 640x480 (one simulated view pair, {args.world} world, numpy, 1 process; mean time)")
    record.add(registration=reg, data_capture_s=t_data)
    print(f"total time {time.perf_counter() - t0:.0f} s (data capture {t_data:.0f} s)")
    record.finish(args.json)


if __name__ == "__main__":
    main()
