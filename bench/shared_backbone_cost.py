"""What one training step of each task on the shared backbone costs (the online trainer's ``auxiliary_tasks``).

Builds the online trainer's instance network and a descriptor head on the same backbone
(``training/multitask.SharedBackboneTrainers``, EMA on, as the trainer node runs them), then times
``--steps`` steps of each after 2 warm-up steps: the instance task on synthetic items (batch
``--batch``, soft-IoU + bootstrap as trainer.yaml) and the descriptor task on image pairs (``--pairs``
per step). Prints wall and CPU ms per step and what a round of ``--round`` instance steps plus
``--aux`` auxiliary steps costs relative to the instance steps alone. CPU time is the measure on a
shared machine; the load average is printed beside it.

    .venv/bin/python bench/shared_backbone_cost.py [--width 160 --height 120 --threads 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from selfsup_perception.core.learning.models.descriptor_net import DescriptorNetConfig
from selfsup_perception.core.learning.tasks.descriptors import DescriptorTask, DescriptorTaskConfig
from selfsup_perception.core.learning.tasks.instance import (
    InstanceSegmentationTask,
    InstanceTaskConfig,
    collate_samples,
    synthetic_items,
)
from selfsup_perception.core.learning.training.multitask import SharedBackboneTrainers
from selfsup_perception.core.learning.training.trainer import TrainerConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--batch", type=int, default=8, help="instance items per step (trainer.yaml batch_size)")
    ap.add_argument("--pairs", type=int, default=4, help="view pairs per descriptor step (auxiliary_batch_size)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per task")
    ap.add_argument("--round", type=int, default=20, help="instance steps per round (the demo's steps_per_round)")
    ap.add_argument("--aux", type=int, default=10, help="auxiliary steps per round (auxiliary_steps_per_round)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the demo's trainer uses 1)")
    ap.add_argument("--json", default="", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    inst = InstanceSegmentationTask(InstanceTaskConfig(mask_loss="soft_iou", objectness_loss="bootstrap"))
    desc = DescriptorTask(DescriptorTaskConfig(model=DescriptorNetConfig(backbone=inst.config.model.backbone_config())))
    shared = SharedBackboneTrainers([inst, desc], TrainerConfig(warmup_steps=0, log_every=0, ema_decay=0.99))
    rng = np.random.default_rng(0)
    n = max(args.batch, 2 * args.pairs)
    items = synthetic_items(n, height=args.height, width=args.width, seed=0)
    rgb = torch.from_numpy(np.stack([it["rgb"] for it in items])).permute(0, 3, 1, 2).contiguous()

    def instance_batches():
        while True:
            yield collate_samples([items[i] for i in rng.choice(n, args.batch, replace=False)], rng=rng)

    def descriptor_batches():
        while True:
            i = rng.choice(n, 2 * args.pairs, replace=False)
            yield {"rgb_a": rgb[i[:args.pairs]], "rgb_b": rgb[i[args.pairs:]]}

    load = os.getloadavg()
    out = {"width": args.width, "height": args.height, "threads": args.threads, "load_before": load[0], "tasks": {}}
    for name, batches in (("instance_segmentation", instance_batches()), ("descriptors", descriptor_batches())):
        trainer = shared.trainers[name]
        trainer.train_steps(batches, 2)  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.train_steps(batches, args.steps)
        out["tasks"][name] = {"wall_ms": (time.perf_counter() - wall) / args.steps * 1000,
                              "cpu_ms": (time.process_time() - cpu) / args.steps * 1000}
    i, d = out["tasks"]["instance_segmentation"]["cpu_ms"], out["tasks"]["descriptors"]["cpu_ms"]
    out["round_cpu_ratio"] = (args.round * i + args.aux * d) / (args.round * i)
    out["load_after"] = os.getloadavg()[0]
    print(f"{args.width}x{args.height}, {args.threads} thread(s), "
          f"load average {load[0]:.1f} -> {out['load_after']:.1f}")
    print("| task | per step | wall ms | CPU ms |\n|---|---|---|---|")
    for name, what in (("instance_segmentation", f"{args.batch} items"), ("descriptors", f"{args.pairs} view pairs")):
        t = out["tasks"][name]
        print(f"| {name} | {what} | {t['wall_ms']:.0f} | {t['cpu_ms']:.0f} |")
    print(f"a round of {args.round} instance + {args.aux} descriptor steps costs {out['round_cpu_ratio']:.2f}x "
          f"the instance steps alone (CPU)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
