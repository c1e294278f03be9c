"""Train offline from a recorded dataset, on one process or many (torchrun + DDP), then evaluate.

    python -m selfsup_perception.cli.train_offline --task instance_segmentation --dataset DATA_DIR \
        --labeler flow --out runs/instance --steps 2000 --batch-size 8 --crop 240 320
    python -m selfsup_perception.cli.train_offline --task region_consistency --dataset VIEWS_DIR --out runs/rc
    python -m selfsup_perception.cli.train_offline --task descriptors --dataset VIEWS_DIR --out runs/desc
    python -m selfsup_perception.cli.train_offline --task instance_segmentation --dataset DATA_DIR --out runs/ft \
        --pretrained-backbone runs/rc/checkpoints/semantic_segmentation   # fine-tune on a pre-trained backbone
    torchrun --nproc_per_node=2 -m selfsup_perception.cli.train_offline --task descriptors ...   # 2 processes
    python -m selfsup_perception.cli.train_offline --synthetic 200 --out /tmp/run --steps 100     # smoke test

Datasets: ``instance_segmentation`` reads a labeled SampleStore (``replay_bag --mode interactions`` or
the labeler node); ``region_consistency`` (RegConsist pre-training of the semantic network) reads a
registration PairStore (``replay_bag --mode views`` or the registration node); ``descriptors`` reads
either (view pairs of a PairStore, or the before/after images of a SampleStore).

Under ``torchrun`` every process trains a replica (DistributedDataParallel: gloo on CPU, NCCL on GPU);
``--batch-size`` is the *global* batch, split over the processes; rank 0 alone writes checkpoints and
the report; ``--resume`` continues from the newest valid checkpoint on every rank. A rank that fails
stops the job (torchrun ends the others; a rank whose peer vanished stops at its next collective with
an error), and no partial checkpoint is ever visible (atomic rename). See core/learning/training/distributed.py.

Writes to ``--out``: ``checkpoints/<task>/vNNNNN/`` (see core/learning/serving/checkpoints.py; the region-consistency
checkpoint is a ``semantic_segmentation`` network), ``report/metrics.json`` (training summary, COCO AP
when ground truth is available), and for instance segmentation ``report/loss.png`` and ``report/examples.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
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
from selfsup_perception.core.learning.training.trainer import TrainerConfig

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


TASKS = ("instance_segmentation", "region_consistency", "descriptors")


class DatasetError(ValueError):
    """The --dataset folder cannot be trained on; the message says what to do."""


def check_dataset(path: Path, task: str) -> str:
    """'samples' (SampleStore) or 'views' (PairStore) for ``path``; DatasetError otherwise. Creates nothing."""
    from selfsup_perception.ros.bag_files import looks_like_bag

    if not path.exists():
        raise DatasetError(f"dataset {path} does not exist")
    if looks_like_bag(path):
        raise DatasetError(
            f"{path} is a rosbag2 bag, not a dataset: replay it into a dataset first, e.g. "
            f"`python -m selfsup_perception.cli.replay_bag {path} --out DATASET_DIR`, then train on DATASET_DIR")
    has_samples = (path / "samples").is_dir()
    has_views = (path / "pairs.json").is_file() and (path / "views").is_dir()
    wanted = {"instance_segmentation": ("samples",), "region_consistency": ("views",),
              "descriptors": ("views", "samples")}[task]
    for kind in wanted:
        if (kind == "samples" and has_samples) or (kind == "views" and has_views):
            return kind
    what = {"samples": "an interaction SampleStore (samples/, labels/; replay_bag --mode interactions)",
            "views": "a registration PairStore (views/, pairs.json; replay_bag --mode views)"}
    raise DatasetError(f"{path} is not a dataset for --task {task}: it needs "
                       f"{' or '.join(what[k] for k in wanted)}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=TASKS, default="instance_segmentation")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", type=Path, help="dataset directory (SampleStore or PairStore, see above)")
    src.add_argument("--synthetic", type=int, metavar="N",
                     help="instance segmentation on N toy scenes instead (smoke test)")
    ap.add_argument("--eval-dataset", type=Path, help="evaluation dataset (default: hold out --eval-fraction)")
    ap.add_argument("--eval-fraction", type=float, default=0.1)
    ap.add_argument("--labeler", default="flow", help="label set to train on ('flow' | 'frame_difference')")
    ap.add_argument("--out", type=Path, required=True, help="output directory (checkpoints + report)")
    ap.add_argument("--input-size", type=int, nargs=2, metavar=("W", "H"), default=(160, 120),
                    help="train (and evaluate) at this size, as the online trainers do")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=8, help="global batch (split over torchrun processes)")
    ap.add_argument("--micro-batch-size", type=int, default=None,
                    help="accumulate gradients over micro-batches of this size (default: the per-process batch)")
    ap.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), default=None, help="random training crop")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup-steps", type=int, default=20)
    ap.add_argument("--mask-loss", choices=["bce", "robust_set", "soft_iou"], default="robust_set")
    ap.add_argument("--objectness-loss", choices=["bce", "bootstrap"], default="bootstrap")
    ap.add_argument("--co-teaching", action="store_true")
    ap.add_argument("--noisy-loss-warmup-steps", type=int, default=0)
    ap.add_argument("--use-depth", action="store_true")
    ap.add_argument("--pretrained-backbone", type=Path, default=None, metavar="CHECKPOINT",
                    help="instance segmentation: start the backbone from this checkpoint (a version directory "
                         "<root>/<task>/vNNNNN or a task directory, newest version), e.g. the region-consistency "
                         "run's checkpoints/semantic_segmentation; its backbone settings must equal this "
                         "network's (same --widths, no --use-depth); recorded in meta.json 'initialization'")
    ap.add_argument("--widths", type=int, nargs="+", default=None,
                    help="backbone channel widths (stem + stages) of the task's network (default: the task's)")
    ap.add_argument("--descriptor-mode", default="cycle_identical", choices=["identical", "cycle", "cycle_identical"])
    ap.add_argument("--num-keypoints", type=int, default=200, help="descriptors: keypoints per image")
    ap.add_argument("--pixel-pairs", type=int, default=256, help="region consistency: pixel pairs per view pair")
    ap.add_argument("--checkpoint-every", type=int, default=500)
    ap.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in --out")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto: CUDA when available (each torchrun process on its LOCAL_RANK GPU), else CPU; "
                         "CUDA trains under torch.autocast (float16)")
    ap.add_argument("--no-mixed-precision", dest="mixed_precision", action="store_false",
                    help="on CUDA, train in float32 instead of float16 autocast with loss scaling")
    ap.add_argument("--dist-timeout", type=float, default=300.0,
                    help="seconds a rank waits for the others in a collective before stopping with an error")
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluation/report after training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.synthetic is not None and args.task != "instance_segmentation":
        ap.error("--synthetic is for --task instance_segmentation")
    if args.pretrained_backbone is not None and args.task != "instance_segmentation":
        ap.error("--pretrained-backbone is for --task instance_segmentation")
    return args


# ============================================================================ per-task data
def instance_data(args, rank_log: bool):
    """(task, train items, eval items, make_batch)."""
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
    task = InstanceSegmentationTask(InstanceTaskConfig(
        model=InstanceSegConfig(use_depth=args.use_depth, **({"widths": tuple(args.widths)} if args.widths else {})),
        mask_loss=args.mask_loss,
        objectness_loss=args.objectness_loss, co_teaching=args.co_teaching,
        noisy_loss_warmup_steps=args.noisy_loss_warmup_steps,
        pretrained_backbone=str(args.pretrained_backbone) if args.pretrained_backbone else ""))
    crop = tuple(args.crop) if args.crop else None

    def make_batch(indices, rng):
        return collate_samples([train_items[int(i)] for i in indices], crop_size=crop, rng=rng)

    return task, train_items, eval_items, make_batch


def region_consistency_data(args, rank: int):
    from dataclasses import replace

    from selfsup_perception.core.learning.training.online_region_consistency import RegisteredPairDataset
    from selfsup_perception.core.learning.tasks.region_consistency import (
        RegionConsistencyConfig,
        RegionConsistencyDataConfig,
        RegionConsistencyTask,
    )
    from selfsup_perception.core.registration.pair_store import PairStore

    data_config = RegionConsistencyDataConfig()
    data_config = replace(data_config, sampler=replace(data_config.sampler, num_pairs=args.pixel_pairs))
    dataset = RegisteredPairDataset(PairStore(args.dataset), tuple(args.input_size), data_config)
    dataset.refresh()
    # each rank draws its own photometric augmentations (a task-level generator)
    from selfsup_perception.core.learning.models.semantic_segmentation import SemanticSegConfig

    model = SemanticSegConfig(widths=tuple(args.widths)) if args.widths else SemanticSegConfig()
    task = RegionConsistencyTask(RegionConsistencyConfig(model=model, seed=args.seed + rank))

    def make_batch(indices, rng):
        parts = [dataset.items[int(i)].sample_batch(1, rng) for i in indices]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    return task, dataset.items, make_batch, {"unusable_pairs": dataset.num_unusable}


def descriptor_data(args, rank: int, kind: str):
    import cv2

    from selfsup_perception.core.learning.tasks.descriptors import DescriptorTask, DescriptorTaskConfig

    size = tuple(args.input_size)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    if kind == "views":
        from selfsup_perception.core.registration.pair_store import PairStore

        store = PairStore(args.dataset)
        cache: dict[str, np.ndarray] = {}

        def rgb(view_id: str):
            if view_id not in cache:
                frame = store.load_view_or_quarantine(view_id)
                cache[view_id] = None if frame is None else cv2.resize(frame.rgb, size, interpolation=cv2.INTER_AREA)
            return cache[view_id]

        for p in store.pairs():
            a, b = rgb(p.view_a), rgb(p.view_b)
            if a is not None and b is not None:
                pairs.append((a, b))
    else:
        from selfsup_perception.core.dataset.sample_store import SampleStore
        from selfsup_perception.core.learning.training.online_descriptors import InteractionImages

        images = InteractionImages(SampleStore(args.dataset), size)
        images.refresh()
        pairs = images.pairs
    from selfsup_perception.core.learning.models.backbone import BackboneConfig
    from selfsup_perception.core.learning.models.descriptor_net import DescriptorNetConfig

    net = DescriptorNetConfig()
    if args.widths:
        net = DescriptorNetConfig(descriptor_dim=net.descriptor_dim, head_channels=max(args.widths),
                                  backbone=BackboneConfig(widths=tuple(args.widths)))
    task = DescriptorTask(DescriptorTaskConfig(mode=args.descriptor_mode, model=net, num_keypoints=args.num_keypoints,
                                               seed=args.seed + rank))

    def make_batch(indices, rng):
        a, b = [], []
        for i in indices:
            first, second = pairs[int(i)] if rng.random() < 0.5 else pairs[int(i)][::-1]
            a.append(first)
            b.append(second)
        to_tensor = lambda imgs: torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        return {"rgb_a": to_tensor(a), "rgb_b": to_tensor(b)}  # (B, 3, H, W) uint8

    return task, pairs, make_batch


# ============================================================================ main
# how gloo and NCCL word a peer that died or hung
_PEER_LOST = ("Connection reset", "Connection closed", "Connection refused", "Broken pipe", "timed out",
              "Timed out", "NCCL communicator was aborted", "ncclRemoteError", "peer")


def _on_sigterm(signum, frame):  # torchrun ends the other ranks with SIGTERM when one fails
    raise SystemExit(128 + signum)  # unwinds: a checkpoint being written removes its temp folder


def main(argv: Sequence[str] | None = None) -> int:
    from selfsup_perception.core.learning.training.distributed import DistributedError, init_distributed, shutdown

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    try:
        kind = check_dataset(args.dataset, args.task) if args.dataset is not None else "synthetic"
        ctx = init_distributed(args.device, args.dist_timeout)
    except (DatasetError, DistributedError, ValueError) as exc:
        LOG.error("%s", exc)
        return 2
    if ctx.backend:
        signal.signal(signal.SIGTERM, _on_sigterm)
        LOG.info("rank %d of %d (%s on %s)", ctx.rank, ctx.world_size, ctx.backend, ctx.device)
    try:
        return _train(args, ctx, kind)
    except DistributedError as exc:
        LOG.error("rank %d: %s", ctx.rank, exc)
        return 1
    except RuntimeError as exc:
        text = str(exc)
        if not ctx.backend or not any(m in text for m in _PEER_LOST):
            if ctx.backend:
                LOG.error("rank %d failed: %s", ctx.rank, text.splitlines()[0] if text else type(exc).__name__)
            raise
        # gloo/NCCL report a vanished peer as a RuntimeError from the collective
        LOG.error("rank %d stopping: another rank failed or left the job (%s); no checkpoint is written",
                  ctx.rank, text.splitlines()[0])
        return 1
    finally:
        shutdown(ctx)


def _train(args, ctx, kind: str) -> int:
    from selfsup_perception.core.learning.training.distributed import (
        DDPTrainer,
        DistributedBatchSampler,
        check_same_on_all_ranks,
        step_batches,
    )

    extra: dict = {}
    eval_items: list = []
    if args.task == "instance_segmentation":
        task, train_items, eval_items, make_batch = instance_data(args, ctx.is_main)
    elif args.task == "region_consistency":
        task, train_items, make_batch, extra = region_consistency_data(args, ctx.rank)
    else:
        task, train_items, make_batch = descriptor_data(args, ctx.rank, kind)
    if not train_items:
        what = {"instance_segmentation": f"kept '{args.labeler}' labels", "region_consistency": "usable view pairs",
                "descriptors": "image pairs"}[args.task]
        LOG.error("no training samples found in %s: it has no %s", args.dataset, what)
        return 1
    if ctx.is_main:
        LOG.info("%d training items, %d evaluation items", len(train_items), len(eval_items))
    ckpt_dir = args.out / "checkpoints"
    try:
        trainer = DDPTrainer(task, TrainerConfig(
            lr=args.lr, warmup_steps=args.warmup_steps, total_steps=max(1, args.steps),
            checkpoint_every=args.checkpoint_every, checkpoint_dir=str(ckpt_dir), dataset_size=len(train_items),
            seed=args.seed, log_every=0, device=ctx.device, mixed_precision=args.mixed_precision), ctx)
    except ValueError as exc:  # e.g. a --pretrained-backbone that is missing or built for another network
        LOG.error("%s", exc)
        return 2
    if ctx.is_main and args.task == "instance_segmentation":
        init = task.initialization()
        LOG.info("backbone: %s", "random weights" if init["backbone"] == "random" else
                 f"pre-trained, from {init['source']['path']} ({init['source']['task']} step {init['source']['step']})")
    check_same_on_all_ranks(ctx, len(train_items), "the number of training items (is --dataset the same data on "
                                                   "every machine?)")
    if args.resume:
        info = trainer.resume(ckpt_dir)
        if ctx.is_main:
            LOG.info("resumed from %s", info.path if info else "nothing (no valid checkpoint)")
        check_same_on_all_ranks(ctx, trainer.step, "the step resumed from (is --out on a filesystem every machine "
                                                   "reads?)")
    sampler = DistributedBatchSampler(len(train_items), args.batch_size, rank=ctx.rank, world_size=ctx.world_size,
                                      seed=args.seed, micro_batch_size=args.micro_batch_size)
    batches = step_batches(sampler, make_batch, args.seed, start_step=trainer.step)
    remaining = max(0, args.steps - trainer.step)
    from tqdm import tqdm

    t_train = time.perf_counter()
    with tqdm(total=remaining, desc="train", unit="step", disable=not ctx.is_main) as bar:
        while remaining > 0:
            chunk = trainer.train_steps(batches, min(25, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            bar.update(len(chunk))
            bar.set_postfix(loss=f"{chunk[-1]['loss']:.4f}")
    train_s = time.perf_counter() - t_train
    steps_run = len(trainer.history)  # steps taken in this run (after a resume: only the new ones)
    path = trainer.save_checkpoint(ckpt_dir)
    if not ctx.is_main:
        return 0
    LOG.info("saved %s", path)
    metrics: dict = {"task": args.task, "steps": trainer.step, "skipped_steps": trainer.skipped_steps,
                     "checkpoint": str(path), "train_items": len(train_items), "eval_items": len(eval_items),
                     "processes": ctx.world_size, "global_batch": args.batch_size,
                     "final_loss": trainer.history[-1]["loss"] if trainer.history else None,
                     "train_seconds": train_s,
                     "samples_per_second": steps_run * args.batch_size / train_s if train_s > 0 and steps_run else None,
                     **extra}
    report = args.out / "report"
    if args.task != "instance_segmentation" or args.no_eval:
        report.mkdir(parents=True, exist_ok=True)
        (report / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        print(f"trained {args.task} for {trainer.step} steps on {ctx.world_size} process(es): {path}")
        return 0
    from selfsup_perception.core.evaluation import evaluate_instances

    model = trainer.model.eval()
    predictions = [predict_instances(model, it["rgb"], it.get("depth") if args.use_depth else None,
                                     config=InferenceConfig()) for it in eval_items]
    with_gt = [k for k, it in enumerate(eval_items) if "gt_instances" in it and np.any(it["gt_instances"])]
    if with_gt:
        metrics["coco"] = evaluate_instances([predictions[k] for k in with_gt],
                                             [eval_items[k]["gt_instances"] for k in with_gt])
        LOG.info("COCO mask AP: %s", {k: round(v, 3) for k, v in metrics["coco"].items()})
    else:
        LOG.info("no ground-truth instance masks in the evaluation set: AP not computed")
    write_report(report, trainer.history, eval_items, predictions, metrics)
    LOG.info("report written to %s", report)
    print(f"trained {args.task} for {trainer.step} steps on {ctx.world_size} process(es): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
