"""Instance segmentation cost on this CPU: forward latency, inference latency, training steps/s.

Synthetic data only (selfsup_perception.core.learning.tasks.instance.synthetic_items), so no
simulator render time is included. Also trains briefly on synthetic scenes and reports
class-agnostic COCO AP on held-out synthetic scenes as a sanity check that learning works.

Every time is given as wall clock and as this process's CPU time (less sensitive to other jobs on a
shared machine). Prints tables; ``--json PATH`` writes the same figures with the settings, load
average, wall and CPU time (``bench/bench_report.py``).

    python bench/train_speed.py --quick      # < 2 min
    python bench/train_speed.py              # full, a few minutes
    python bench/train_speed.py --quick --json /tmp/train_speed.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from selfsup_perception.core.evaluation import evaluate_instances
from selfsup_perception.core.learning.tasks.instance import (
    InstanceSegmentationTask,
    InstanceTaskConfig,
    collate_samples,
    synthetic_items,
)
from selfsup_perception.core.learning.models.instance_segmentation import (
    InstanceSegConfig,
    InstanceSegNet,
    count_parameters,
    predict_instances,
)
from selfsup_perception.core.learning.serving.inference import segment_instances
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig

from bench_report import BenchRecord, Column, add_json_argument  # bench/ is on sys.path when run as a script


def median_ms(fn, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """(wall, CPU) milliseconds of ``fn()``, medians over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return float(np.median(times)), float(np.median(cpu))


def batches(items, batch_size, crop, rng):
    while True:
        idx = rng.choice(len(items), batch_size, replace=len(items) < batch_size)
        yield collate_samples([items[i] for i in idx], crop_size=crop, rng=rng)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and steps (< 2 min)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 4])
    ap.add_argument("--crop", type=int, nargs=2, default=[120, 160], metavar=("H", "W"),
                    help="training crop (default: the whole 160x120 input of config/trainer.yaml)")
    ap.add_argument("--seed", type=int, default=0)
    add_json_argument(ap)
    args = ap.parse_args()
    record = BenchRecord("train_speed", args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    repeats = 3 if args.quick else 15
    train_steps = 4 if args.quick else 20
    batch_sizes = args.batch_sizes[:1] if args.quick else args.batch_sizes

    cfg = InstanceSegConfig()
    net = InstanceSegNet(cfg).eval()
    record.add(model_config=cfg, parameters=count_parameters(net), torch_threads=args.threads, repeats=repeats,
               train_steps=train_steps)
    print(f"InstanceSegNet {cfg}: {count_parameters(net):,} parameters; torch threads = {args.threads}")
    rows = []
    rng = np.random.default_rng(args.seed)
    for h, w in ((480, 640), (240, 320), (120, 160)):
        x = torch.from_numpy(rng.integers(0, 256, (1, 3, h, w), dtype=np.uint8))
        with torch.no_grad():
            fwd, fwd_cpu = median_ms(lambda: net(x), repeats)
        scene = synthetic_items(1, height=h, width=w, seed=1)[0]["rgb"]
        pred, pred_cpu = median_ms(lambda: predict_instances(net, scene, score_threshold=0.0), repeats)
        rows.append({"call": "forward + predict_instances", "input": f"{w}x{h}", "forward_ms": fwd,
                     "forward_cpu_ms": fwd_cpu, "predict_ms": pred, "predict_cpu_ms": pred_cpu})
    # what the inference node does: a 640x480 image resized to the 160x120 training size
    big = synthetic_items(1, height=480, width=640, seed=1)[0]["rgb"]
    seg, seg_cpu = median_ms(lambda: segment_instances(net, big, (160, 120), score_threshold=0.0), repeats)
    rows.append({"call": "segment_instances (input_size 160x120)", "input": "640x480", "predict_ms": seg,
                 "predict_cpu_ms": seg_cpu})
    record.table("inference", rows, [
        Column("call"), Column("input"), Column("forward_ms", "forward ms", ".1f"),
        Column("forward_cpu_ms", "forward CPU ms", ".1f"), Column("predict_ms", "predict ms", ".1f"),
        Column("predict_cpu_ms", "predict CPU ms", ".1f")],
        title=f"inference, medians of {repeats} (predict: predict_instances, or segment_instances as the inference "
              f"node calls it on a 640x480 image)")

    items = synthetic_items(64, height=args.crop[0] + 40, width=args.crop[1] + 40, seed=2)
    variants = {
        "bce": InstanceTaskConfig(mask_loss="bce", objectness_loss="bce"),
        "defaults (soft_iou + bootstrap, balanced objectness)": InstanceTaskConfig(),
        "robust_set + bootstrap": InstanceTaskConfig(mask_loss="robust_set"),
        "co-teaching (+ robust_set + bootstrap)": InstanceTaskConfig(co_teaching=True),
    }
    rows = []
    for name, tcfg in variants.items():
        for bs in batch_sizes:
            trainer = Trainer(InstanceSegmentationTask(tcfg), TrainerConfig(warmup_steps=0, log_every=0))
            it = batches(items, bs, tuple(args.crop), np.random.default_rng(0))
            trainer.train_steps(it, 2)  # warm-up
            t0, c0 = time.perf_counter(), time.process_time()
            trainer.train_steps(it, train_steps)
            dt, dc = (time.perf_counter() - t0) / train_steps, (time.process_time() - c0) / train_steps
            rows.append({"variant": name, "batch": bs, "crop": f"{args.crop[0]}x{args.crop[1]}", "steps_per_s": 1 / dt,
                         "ms_per_step": dt * 1000, "cpu_ms_per_step": dc * 1000})
    record.table("training", rows, [
        Column("variant", "training variant"), Column("batch", fmt="d"), Column("crop", "crop HxW"),
        Column("steps_per_s", "steps/s", ".2f"), Column("ms_per_step", "ms/step", ".0f"),
        Column("cpu_ms_per_step", "CPU ms/step", ".0f")],
        title=f"training speed, mean over {train_steps} steps after 2 warm-up steps")

    # sanity: learning from one noisy mask per image on toy scenes
    if not args.quick:
        sanity(record)
    record.finish(args.json)


def sanity(record: BenchRecord, steps: int = 500) -> None:
    h, w = 64, 80
    train = synthetic_items(256, height=h, width=w, seed=3)
    test = synthetic_items(40, height=h, width=w, negative_fraction=0.0, label_noise=0.0, seed=4)
    rows = []
    for name, tcfg in (("bce", InstanceTaskConfig(mask_loss="bce", objectness_loss="bce")),
                       ("defaults (soft_iou + bootstrap, balanced objectness)", InstanceTaskConfig()),
                       ("robust_set + bootstrap", InstanceTaskConfig(mask_loss="robust_set")),
                       ("robust_set + bootstrap after 250 BCE steps",
                        InstanceTaskConfig(mask_loss="robust_set", noisy_loss_warmup_steps=250))):
        trainer = Trainer(InstanceSegmentationTask(tcfg), TrainerConfig(lr=3e-3, log_every=0))
        t0, c0 = time.perf_counter(), time.process_time()
        trainer.train_steps(batches(train, 8, (h, w), np.random.default_rng(0)), steps)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        preds = [predict_instances(trainer.model, it["rgb"], score_threshold=0.05) for it in test]
        r = evaluate_instances(preds, [it["gt_instances"] for it in test])
        rows.append({"variant": name, "AP30": r["AP30"], "AP50": r["AP50"], "AP": r["AP"], "train_s": secs,
                     "train_cpu_s": cpu})
        print(f"  sanity: {name} done ({secs:.0f} s)", flush=True)
    record.table("sanity", rows, [
        Column("variant"), Column("AP30", fmt=".3f"), Column("AP50", fmt=".3f"), Column("AP", fmt=".3f"),
        Column("train_s", "train s", ".0f"), Column("train_cpu_s", "train CPU s", ".0f")],
        title=f"sanity: toy {w}x{h} scenes, {steps} steps, batch 8, one noisy mask per image; AP on 40 clean scenes")


if __name__ == "__main__":
    main()
