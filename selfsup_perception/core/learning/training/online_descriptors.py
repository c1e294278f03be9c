"""Online training of dense descriptors from the robot's own unordered RGB images (ROS-free).

Images come from the interaction sample store (the before and after views of every
interaction). Each step pairs images without any correspondence label: half of the pairs
are the before/after views of one interaction (mostly the same scene, one object moved),
half are random. The descriptor task (cycle correspondence + identical view by default,
paper 002) needs nothing else. Same surface as :class:`OnlineInstanceTrainer`:
``resume()``, ``train_round()``, ``version``, ``trainer``, ``dataset``, ``last_round``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np
import torch

from selfsup_perception.core.dataset.sample_store import CorruptSampleError, SampleStore
from selfsup_perception.core.learning.tasks.descriptors import DescriptorTask, DescriptorTaskConfig
from selfsup_perception.core.learning.training.online import OnlineTrainer
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnlineDescriptorConfig:
    dataset_dir: str = "data/interactions"
    checkpoint_dir: str = "data/checkpoints"
    input_width: int = 160
    input_height: int = 120
    batch_size: int = 4
    steps_per_round: int = 20
    min_samples: int = 2  # interactions (each gives two images) before the first round
    same_interaction_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.input_width < 16 or self.input_height < 16:
            raise ValueError("input size must be at least 16x16")
        if self.batch_size < 1 or self.steps_per_round < 1 or self.min_samples < 1:
            raise ValueError("batch_size, steps_per_round and min_samples must be >= 1")
        if not 0.0 <= self.same_interaction_fraction <= 1.0:
            raise ValueError("same_interaction_fraction must be in [0, 1]")


@dataclass
class InteractionImages:
    """Before/after images of the stored interactions, resized, loaded incrementally."""

    store: SampleStore
    size: tuple[int, int]
    pairs: list = field(default_factory=list)  # [(before (H, W, 3), after (H, W, 3))]
    _seen: set = field(default_factory=set)

    def refresh(self) -> int:
        added = 0
        for sample_id in self.store.sample_ids():
            if sample_id in self._seen:
                continue
            self._seen.add(sample_id)
            try:
                s = self.store.read_sample(sample_id)
            except (CorruptSampleError, FileNotFoundError) as exc:
                LOG.warning("skipping %s: %s", sample_id, exc)
                continue
            resize = lambda rgb: cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)  # noqa: E731
            self.pairs.append((resize(s.before.rgb), resize(s.after.rgb)))
            added += 1
        return added

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, batch_size: int, same_fraction: float, rng: np.random.Generator) -> dict:
        a, b = [], []
        for _ in range(batch_size):
            i = int(rng.integers(len(self.pairs)))
            if rng.random() < same_fraction:
                first, second = self.pairs[i] if rng.random() < 0.5 else self.pairs[i][::-1]
            else:
                j = int(rng.integers(len(self.pairs)))
                first, second = self.pairs[i][int(rng.integers(2))], self.pairs[j][int(rng.integers(2))]
            a.append(first)
            b.append(second)
        to_tensor = lambda imgs: torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        return {"rgb_a": to_tensor(a), "rgb_b": to_tensor(b)}  # (B, 3, H, W) uint8


class OnlineDescriptorTrainer(OnlineTrainer):
    def __init__(self, config: OnlineDescriptorConfig = OnlineDescriptorConfig(),
                 task_config: Optional[DescriptorTaskConfig] = None, trainer_config: Optional[TrainerConfig] = None):
        self.config = config
        self.task = DescriptorTask(task_config or DescriptorTaskConfig())
        self.trainer = Trainer(self.task, self._serving_config(
            trainer_config or TrainerConfig(lr=1e-3, warmup_steps=20, seed=config.seed)))
        self.dataset = InteractionImages(SampleStore(config.dataset_dir), (config.input_width, config.input_height))
        self._init_round_state()

    def ready(self) -> bool:
        return len(self.dataset) >= self.config.min_samples

    def _batches(self):
        c = self.config
        return (self.dataset.batch(c.batch_size, c.same_interaction_fraction, self._rng)
                for _ in range(c.steps_per_round))
