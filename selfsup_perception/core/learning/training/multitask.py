"""Several tasks on one backbone, trained in alternation (instance segmentation + dense descriptors, ...).

Each task keeps its own heads, optimizer, learning-rate schedule and checkpoints; only the
:class:`~selfsup_perception.core.learning.models.backbone.Backbone` module is shared (the same
``nn.Module`` object, ``models.backbone.share_backbone``), so a step of any task moves the features
every task uses. Checkpoints stay ordinary, self-describing, one per task (``<dir>/<task>/vNNNNN``)
and serve as before; ``meta.json`` records ``shared_backbone`` (the tasks that trained it)::

    shared = SharedBackboneTrainers([InstanceSegmentationTask(...), DescriptorTask(DescriptorTaskConfig(
        model=DescriptorNetConfig(backbone=InstanceSegConfig().backbone_config())))], TrainerConfig(...))
    shared.train_alternating({"instance_segmentation": inst_batches, "descriptors": view_pair_batches},
                             steps={"instance_segmentation": 20, "descriptors": 10}, rounds=5)
    shared.save_checkpoints("data/checkpoints")

The first task's model is built first (with its ``pretrained_backbone``, if any); the others'
backbones are replaced by it before their optimizers are made. With ``ema_decay`` > 0 every
trainer averages (and serves) its own copy of the weights, shared backbone included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from selfsup_perception.core.learning.models.backbone import share_backbone
from selfsup_perception.core.learning.tasks.base import TrainingTask
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig


class SharedBackboneTrainers:
    """One :class:`Trainer` per task (``trainers[task.name]``), all training the same backbone."""

    def __init__(self, tasks: Sequence[TrainingTask], config: TrainerConfig | Sequence[TrainerConfig] = TrainerConfig()):
        if not tasks:
            raise ValueError("no tasks")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must differ (they name the checkpoint folders): {names}")
        configs = [config] * len(tasks) if isinstance(config, TrainerConfig) else list(config)
        if len(configs) != len(tasks):
            raise ValueError(f"{len(tasks)} tasks but {len(configs)} trainer configs")
        first = Trainer(tasks[0], configs[0])
        self.trainers: dict[str, Trainer] = {names[0]: first}
        for task, cfg in zip(tasks[1:], configs[1:]):
            if cfg.seed is not None:
                torch.manual_seed(cfg.seed)
            model = task.build_model()
            share_backbone(first.model, model)  # BackboneMismatchError before any optimizer exists
            self.trainers[task.name] = Trainer(task, cfg, model=model)

    def train_alternating(self, batches: Mapping[str, Iterator[dict]], steps: Mapping[str, int],
                          rounds: int = 1) -> list[dict]:
        """``rounds`` times: ``steps[name]`` steps of each task in turn (tasks without batches are skipped).

        Returns one record per turn: {'round', 'task', 'steps', 'loss' (mean over the turn), 'step'}.
        """
        unknown = (set(batches) | set(steps)) - set(self.trainers)
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}; these train: {sorted(self.trainers)}")
        out = []
        for r in range(rounds):
            for name, trainer in self.trainers.items():
                if name not in batches or steps.get(name, 0) <= 0:
                    continue
                records = trainer.train_steps(batches[name], int(steps[name]))
                out.append({"round": r, "task": name, "steps": len(records), "step": trainer.step,
                            "loss": float(np.mean([x["loss"] for x in records])) if records else float("nan")})
        return out

    def save_checkpoints(self, directory: str | Path) -> dict[str, Path]:
        """One checkpoint per task under ``directory`` (``meta.json`` ``shared_backbone`` names the tasks)."""
        names = list(self.trainers)
        return {name: t.save_checkpoint(directory, extra_meta={"shared_backbone": {"tasks": names}})
                for name, t in self.trainers.items()}
