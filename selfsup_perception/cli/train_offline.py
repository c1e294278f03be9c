"""Train the class-agnostic instance segmenter offline from a recorded dataset, then evaluate.

    python -m selfsup_perception.cli.train_offline --dataset DATA_DIR --labeler flow \\
        --out runs/instance --steps 2000 --batch-size 8 --crop 240 320
    python -m selfsup_perception.cli.train_offline --synthetic 200 --out /tmp/run --steps 100   # smoke test

Writes to ``--out``: ``checkpoints/instance_segmentation/vNNNNN/`` (see core/learning/serving/checkpoints.py),
``report/loss.png`` (loss over steps), ``report/examples.png`` (predicted masks on evaluation
images), ``report/metrics.json`` (training summary and COCO AP when ground truth is available).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from selfsup_perception.core.learning.tasks.instance import (
    InstanceSegmentationTask,
    InstanceTaskConfig,
    collate_samples,
    synthetic_items,
)
from selfsup_perception.core.learning.models.instance_segmentation import (
    InferenceConfig,
    Instance,
    InstanceSegConfig,
    predict_instances,
)
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig

LOG = logging.getLogger("train_offline")


# ============================================================================ LEAD: dataset adapter
# The only place that knows the on-disk dataset format. It must yield dicts
#   {'rgb' (H,W,3) uint8, 'mask' (H,W) bool, 'action_pixel' (u,v), 'is_negative' bool,
#    optional 'depth' (H,W) float32, optional 'gt_instances' (H,W) int (evaluation only)}
# Written against core/dataset/sample_store.py as it stood when this was written; adjust here.
def load_labeled_samples(dataset_dir: str | Path, labeler: str, with_ground_truth: bool = True,
                         size: tuple[int, int] | None = None) -> list[dict]:
    """Labelled, kept samples of ``labeler`` from a SampleStore directory, resized to ``size`` = (W, H) if given.

    The online trainer and the inference node work at a reduced size (config/trainer.yaml);
    offline training should use the same so its checkpoints serve unchanged.
    """
    import cv2

    from selfsup_perception.core.dataset.sample_store import CorruptSampleError, SampleStore
    from selfsup_perception.core.learning.training.online import resize_item

    store = SampleStore(dataset_dir)
    items = []
    for sample_id in store.labeled_ids(labeler):
        try:
            label = store.read_label(sample_id, labeler)
            if not label.kept:
                continue
            sample = store.read_sample(sample_id, with_ground_truth=with_ground_truth)
        except (CorruptSampleError, FileNotFoundError) as e:
            LOG.warning("skipping %s: %s", sample_id, e)
            continue
        item = {
            "rgb": sample.before.rgb,
            "depth": sample.before.depth,
            "mask": label.mask,
            "action_pixel": sample.action_pixel,
            "is_negative": label.is_negative,
        }
        gt = sample.ground_truth or {}
        if "instance_mask_before" in gt:  # simulator ground truth, evaluation only
            item["gt_instances"] = np.asarray(gt["instance_mask_before"])
        if size is not None and item["rgb"].shape[1::-1] != tuple(size):
            item.update(resize_item(item["rgb"], item["mask"], item["action_pixel"], size))
            item["depth"] = cv2.resize(item["depth"], size, interpolation=cv2.INTER_NEAREST)
            if "gt_instances" in item:
                item["gt_instances"] = cv2.resize(item["gt_instances"], size, interpolation=cv2.INTER_NEAREST)
        items.append(item)
    return items
# ============================================================================ end of adapter


def infinite_batches(
    items: Sequence[dict], batch_size: int, crop: tuple[int, int] | None, rng: np.random.Generator
) -> Iterator[dict]:
    """Epochs of shuffled mini-batches (random flips/crops) forever."""
    if not items:
        raise ValueError("no training samples")
    while True:
        order = rng.permutation(len(items))
        for i in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
            idx = order[i : i + batch_size]
            yield collate_samples([items[j] for j in idx], crop_size=crop, rng=rng)


def write_report(out: Path, history: list[dict], eval_items: list[dict], predictions: list[list[Instance]],
                 metrics: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in history]
    for key in ("loss", "loss_objectness", "loss_mask"):
        if history and key in history[0]:
            ax.plot(steps, [r.get(key, np.nan) for r in history], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)

    n = min(6, len(eval_items))
    if n:
        fig, axes = plt.subplots(2, n, figsize=(3 * n, 5), squeeze=False)
        for k in range(n):
            rgb = eval_items[k]["rgb"]
            axes[0, k].imshow(rgb)
            axes[0, k].set_title("input" + (" (label)" if eval_items[k]["mask"].any() else ""), fontsize=8)
            if eval_items[k]["mask"].any():
                axes[0, k].contour(eval_items[k]["mask"], levels=[0.5], colors="yellow", linewidths=0.8)
            overlay = rgb.astype(np.float32) / 255.0 * 0.5
            colours = np.random.default_rng(0).uniform(0.2, 1.0, (max(1, len(predictions[k])), 3))
            for j, inst in enumerate(predictions[k]):
                overlay[inst.mask] = 0.5 * overlay[inst.mask] + 0.5 * colours[j]
            axes[1, k].imshow(overlay.clip(0, 1))
            axes[1, k].set_title(f"{len(predictions[k])} instances", fontsize=8)
            for a in axes[:, k]:
                a.axis("off")
        fig.tight_layout()
        fig.savefig(out / "examples.png", dpi=100)
        plt.close(fig)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", type=Path, help="recorded dataset directory (SampleStore)")
    src.add_argument("--synthetic", type=int, metavar="N", help="train on N toy scenes instead (smoke test)")
    ap.add_argument("--eval-dataset", type=Path, help="evaluation dataset (default: hold out --eval-fraction)")
    ap.add_argument("--eval-fraction", type=float, default=0.1)
    ap.add_argument("--labeler", default="flow", help="label set to train on ('flow' | 'frame_difference')")
    ap.add_argument("--out", type=Path, required=True, help="output directory (checkpoints + report)")
    ap.add_argument("--input-size", type=int, nargs=2, metavar=("W", "H"), default=(160, 120),
                    help="train (and evaluate) at this size, as the online trainer does")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), default=None, help="random training crop")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--mask-loss", choices=["bce", "robust_set", "soft_iou"], default="robust_set")
    ap.add_argument("--objectness-loss", choices=["bce", "bootstrap"], default="bootstrap")
    ap.add_argument("--co-teaching", action="store_true")
    ap.add_argument("--noisy-loss-warmup-steps", type=int, default=0)
    ap.add_argument("--use-depth", action="store_true")
    ap.add_argument("--checkpoint-every", type=int, default=500)
    ap.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in --out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from tqdm import tqdm

    from selfsup_perception.core.evaluation import evaluate_instances

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    if args.synthetic is not None:
        items = synthetic_items(args.synthetic, height=96, width=128, seed=args.seed)
    else:
        items = load_labeled_samples(args.dataset, args.labeler, size=tuple(args.input_size))
    if args.eval_dataset is not None:
        train_items, eval_items = items, load_labeled_samples(args.eval_dataset, args.labeler,
                                                              size=tuple(args.input_size))
    else:
        order = rng.permutation(len(items))
        n_eval = int(round(args.eval_fraction * len(items)))
        eval_items = [items[i] for i in order[:n_eval]]
        train_items = [items[i] for i in order[n_eval:]]
    if not train_items:
        LOG.error("no training samples found")
        return 1
    LOG.info("%d training samples, %d evaluation samples", len(train_items), len(eval_items))

    task = InstanceSegmentationTask(
        InstanceTaskConfig(
            model=InstanceSegConfig(use_depth=args.use_depth),
            mask_loss=args.mask_loss,
            objectness_loss=args.objectness_loss,
            co_teaching=args.co_teaching,
            noisy_loss_warmup_steps=args.noisy_loss_warmup_steps,
        )
    )
    ckpt_dir = args.out / "checkpoints"
    trainer = Trainer(
        task,
        TrainerConfig(
            lr=args.lr, total_steps=args.steps, checkpoint_every=args.checkpoint_every,
            checkpoint_dir=str(ckpt_dir), dataset_size=len(train_items), seed=args.seed, log_every=0,
        ),
    )
    if args.resume:
        info = trainer.resume(ckpt_dir)
        LOG.info("resumed from %s", info.path if info else "nothing (no valid checkpoint)")
    crop = tuple(args.crop) if args.crop else None
    batches = infinite_batches(train_items, min(args.batch_size, len(train_items)), crop, rng)
    remaining = max(0, args.steps - trainer.step)
    with tqdm(total=remaining, desc="train", unit="step") as bar:
        while remaining > 0:
            chunk = trainer.train_steps(batches, min(25, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            bar.update(len(chunk))
            bar.set_postfix(loss=f"{chunk[-1]['loss']:.4f}")
    path = trainer.save_checkpoint(ckpt_dir)
    LOG.info("saved %s", path)

    metrics: dict = {"steps": trainer.step, "skipped_steps": trainer.skipped_steps, "checkpoint": str(path),
                     "train_samples": len(train_items), "eval_samples": len(eval_items)}
    predictions = [
        predict_instances(trainer.model, it["rgb"], it.get("depth") if args.use_depth else None,
                          config=InferenceConfig())
        for it in tqdm(eval_items, desc="predict", unit="img")
    ]
    with_gt = [k for k, it in enumerate(eval_items) if "gt_instances" in it and np.any(it["gt_instances"])]
    if with_gt:
        metrics["coco"] = evaluate_instances([predictions[k] for k in with_gt], [eval_items[k]["gt_instances"] for k in with_gt])
        LOG.info("COCO mask AP: %s", {k: round(v, 3) for k, v in metrics["coco"].items()})
    else:
        LOG.info("no ground-truth instance masks in the evaluation set: AP not computed")
    write_report(args.out / "report", trainer.history, eval_items, predictions, metrics)
    LOG.info("report written to %s", args.out / "report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
