"""Instance segmentation cost on this CPU: forward latency, inference latency, training steps/s.

Synthetic data only (selfsup_perception.core.learning.tasks.instance.synthetic_items), so no
simulator render time is included. Also trains briefly on synthetic scenes and reports
class-agnostic COCO AP on held-out synthetic scenes as a sanity check that learning works.

    python bench/train_speed.py --quick      # < 2 min
    python bench/train_speed.py              # full, a few minutes
"""

from __future__ import annotations

import argparse
import os
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


def median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    repeats = 3 if args.quick else 15
    train_steps = 4 if args.quick else 20
    batch_sizes = args.batch_sizes[:1] if args.quick else args.batch_sizes
    print(f"load average at start (1, 5, 15 min): {os.getloadavg()} on {os.cpu_count()} cores")

    cfg = InstanceSegConfig()
    net = InstanceSegNet(cfg).eval()
    print(f"InstanceSegNet {cfg}: {count_parameters(net):,} parameters; torch threads = {args.threads}")
    print("\n| input | forward ms (median) | predict_instances ms (median) |\n|---|---|---|")
    rng = np.random.default_rng(args.seed)
    for h, w in ((480, 640), (240, 320), (120, 160)):
        x = torch.from_numpy(rng.integers(0, 256, (1, 3, h, w), dtype=np.uint8))
        with torch.no_grad():
            fwd = median_ms(lambda: net(x), repeats)
        scene = synthetic_items(1, height=h, width=w, seed=1)[0]["rgb"]
        pred = median_ms(lambda: predict_instances(net, scene, score_threshold=0.0), repeats)
        print(f"| {w}x{h} | {fwd:.1f} | {pred:.1f} |")
    # what the inference node does: a 640x480 image resized to the 160x120 training size
    big = synthetic_items(1, height=480, width=640, seed=1)[0]["rgb"]
    seg = median_ms(lambda: segment_instances(net, big, (160, 120), score_threshold=0.0), repeats)
    print(f"\nsegment_instances(640x480 image, input_size 160x120): {seg:.1f} ms (median)")

    print("\n| training variant | batch | crop HxW | steps/s | ms/step |\n|---|---|---|---|---|")
    items = synthetic_items(64, height=args.crop[0] + 40, width=args.crop[1] + 40, seed=2)
    variants = {
        "bce": InstanceTaskConfig(mask_loss="bce", objectness_loss="bce"),
        "defaults (soft_iou + bootstrap, balanced objectness)": InstanceTaskConfig(),
        "robust_set + bootstrap": InstanceTaskConfig(mask_loss="robust_set"),
        "co-teaching (+ robust_set + bootstrap)": InstanceTaskConfig(co_teaching=True),
    }
    for name, tcfg in variants.items():
        for bs in batch_sizes:
            trainer = Trainer(InstanceSegmentationTask(tcfg), TrainerConfig(warmup_steps=0, log_every=0))
            it = batches(items, bs, tuple(args.crop), np.random.default_rng(0))
            trainer.train_steps(it, 2)  # warm-up
            t0 = time.perf_counter()
            trainer.train_steps(it, train_steps)
            dt = (time.perf_counter() - t0) / train_steps
            print(f"| {name} | {bs} | {args.crop[0]}x{args.crop[1]} | {1 / dt:.2f} | {dt * 1000:.0f} |")

    # sanity: learning from one noisy mask per image on toy scenes
    if args.quick:
        print(f"\nload average at end: {os.getloadavg()}")
        return
    steps = 500
    h, w = 64, 80
    train = synthetic_items(256, height=h, width=w, seed=3)
    test = synthetic_items(40, height=h, width=w, negative_fraction=0.0, label_noise=0.0, seed=4)
    print(f"\n| sanity (toy {w}x{h} scenes, {steps} steps, batch 8) | AP30 | AP50 | AP | train s |\n|---|---|---|---|---|")
    for name, tcfg in (("bce", InstanceTaskConfig(mask_loss="bce", objectness_loss="bce")),
                       ("defaults (soft_iou + bootstrap, balanced objectness)", InstanceTaskConfig()),
                       ("robust_set + bootstrap", InstanceTaskConfig(mask_loss="robust_set")),
                       ("robust_set + bootstrap after 250 BCE steps",
                        InstanceTaskConfig(mask_loss="robust_set", noisy_loss_warmup_steps=250))):
        trainer = Trainer(InstanceSegmentationTask(tcfg), TrainerConfig(lr=3e-3, log_every=0))
        t0 = time.perf_counter()
        trainer.train_steps(batches(train, 8, (h, w), np.random.default_rng(0)), steps)
        secs = time.perf_counter() - t0
        preds = [predict_instances(trainer.model, it["rgb"], score_threshold=0.05) for it in test]
        r = evaluate_instances(preds, [it["gt_instances"] for it in test])
        print(f"| {name} | {r['AP30']:.3f} | {r['AP50']:.3f} | {r['AP']:.3f} | {secs:.0f} |")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
