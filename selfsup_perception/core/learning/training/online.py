"""Online training from a growing dataset of interaction labels (ROS-free).

The trainer node calls :meth:`OnlineInstanceTrainer.train_round` in a loop: each round picks
up labels written since the last one, takes ``steps_per_round`` optimizer steps on random
batches of everything labelled so far, and writes a new checkpoint version atomically.
After a restart :meth:`resume` continues from the newest valid checkpoint: no labelled data
lives only in memory (it is re-read from the sample store), and no step is lost beyond the
round that was running.

Every item is validated when it is loaded (:func:`check_item`: image, mask and action pixel
agree in size and are finite); a bad one is quarantined (its label file moved to
``<dataset>/quarantine/labels/<labeler>/``, logged with the reason) and never blocks a round.
A round can be interrupted between steps (``train_round(stop=event)``): it then raises
:class:`RoundInterrupted` and writes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from selfsup_perception.core.dataset.sample_store import CorruptSampleError, SampleStore
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.tasks.instance import InstanceSegmentationTask, InstanceTaskConfig, collate_samples
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnlineTrainingConfig:
    dataset_dir: str = "data/interactions"
    labeler: str = "flow"  # which labels to learn from (labels/<labeler>/)
    checkpoint_dir: str = "data/checkpoints"
    input_width: int = 320  # images are resized to this before training (and inference)
    input_height: int = 240
    batch_size: int = 8
    steps_per_round: int = 40
    min_samples: int = 4  # kept labels needed before the first round
    include_negatives: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.input_width < 32 or self.input_height < 32:
            raise ValueError("input size must be at least 32x32")
        if self.batch_size < 1 or self.steps_per_round < 1 or self.min_samples < 1:
            raise ValueError("batch_size, steps_per_round and min_samples must be >= 1")


class RoundInterrupted(Exception):
    """A training round was stopped between two steps; nothing was saved."""


def check_item(rgb: np.ndarray, mask: np.ndarray, action_pixel) -> None:
    """ValueError unless (image, mask, action pixel) make a usable training item."""
    rgb, mask = np.asarray(rgb), np.asarray(mask)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 2:
        raise ValueError(f"image must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the image {rgb.shape[:2]}")
    u, v = (float(x) for x in action_pixel)
    if not (np.isfinite(u) and np.isfinite(v)):
        raise ValueError(f"action pixel ({u}, {v}) is not finite")
    if not (0 <= u <= rgb.shape[1] - 1 and 0 <= v <= rgb.shape[0] - 1):
        raise ValueError(f"action pixel ({u:.1f}, {v:.1f}) is outside the {rgb.shape[1]}x{rgb.shape[0]} image")


def _interruptible(batches: Iterator[dict], stop: threading.Event) -> Iterator[dict]:
    for batch in batches:
        if stop.is_set():
            raise RoundInterrupted("training round interrupted")
        yield batch


def resize_item(rgb: np.ndarray, mask: np.ndarray, action_pixel, size: tuple[int, int]) -> dict:
    """Resize an (image, mask, action pixel) triple to ``size`` = (width, height)."""
    w, h = size
    sx, sy = w / rgb.shape[1], h / rgb.shape[0]
    rgb_s = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    mask_s = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    u, v = action_pixel
    return {"rgb": rgb_s, "mask": mask_s, "action_pixel": ((u + 0.5) * sx - 0.5, (v + 0.5) * sy - 0.5)}


@dataclass
class LabeledDataset:
    """Kept labels of one labeler, loaded incrementally from a :class:`SampleStore`."""

    store: SampleStore
    labeler: str
    size: tuple[int, int]  # (width, height)
    include_negatives: bool = True
    items: list = field(default_factory=list)
    _seen: set = field(default_factory=set)
    num_positive: int = 0
    num_negative: int = 0
    num_discarded: int = 0
    num_quarantined: int = 0

    def refresh(self) -> int:
        """Load labels written since the last call; returns how many items were added."""
        added = 0
        for sample_id in self.store.labeled_ids(self.labeler):
            if sample_id in self._seen:
                continue
            try:
                label = self.store.read_label(sample_id, self.labeler)
                if not label.kept or (label.is_negative and not self.include_negatives):
                    self._seen.add(sample_id)
                    self.num_discarded += int(not label.kept)
                    continue
                sample = self.store.read_sample(sample_id)
                check_item(sample.before.rgb, label.mask, sample.action_pixel)
                item = resize_item(sample.before.rgb, label.mask, sample.action_pixel, self.size)
            except FileNotFoundError as exc:
                LOG.warning("skipping %s: %s", sample_id, exc)
                self._seen.add(sample_id)
                continue
            except (CorruptSampleError, ValueError, TypeError, KeyError, cv2.error) as exc:
                self._quarantine(sample_id, exc)
                continue
            item["is_negative"] = bool(label.is_negative)
            item["sample_id"] = sample_id
            self.items.append(item)
            self._seen.add(sample_id)
            self.num_negative += int(label.is_negative)
            self.num_positive += int(not label.is_negative)
            added += 1
        return added

    def _quarantine(self, sample_id: str, exc: BaseException) -> None:
        """Move the item's label aside (the sample stays for other labelers) so it is never loaded again."""
        self._seen.add(sample_id)
        self.num_quarantined += 1
        dest = self.store.quarantine_label(sample_id, self.labeler)
        LOG.warning("quarantined %s (%s label -> %s): %s", sample_id, self.labeler, dest, exc)

    def __len__(self) -> int:
        return len(self.items)

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[dict]:
        """Endless random batches (with flips) of the current items."""
        while True:
            idx = rng.choice(len(self.items), size=min(batch_size, len(self.items)), replace=False)
            yield collate_samples([self.items[i] for i in idx], rng=rng)


class OnlineTrainer:
    """What every online trainer shares: resume, one round = refresh + train + checkpoint.

    Subclasses set ``config`` (with ``seed``, ``checkpoint_dir``, ``steps_per_round``), ``trainer``,
    ``dataset`` (``refresh()``, ``len()``) and implement :meth:`ready` and :meth:`_batches`.
    """

    config: object
    trainer: Trainer
    dataset: object

    def _init_round_state(self) -> None:
        self._rng = np.random.default_rng(self.config.seed)
        self.version: Optional[int] = None
        self.version_path: Optional[Path] = None  # the newest version directory written or resumed
        self.last_round: dict = {}

    def _serving_config(self, trainer_config: TrainerConfig) -> TrainerConfig:
        """``trainer_config`` with the input size this trainer resizes to, so checkpoints record it."""
        return dataclasses.replace(trainer_config, input_size=(self.config.input_width, self.config.input_height))

    def resume(self) -> Optional[int]:
        """Continue from the newest valid checkpoint; returns its version (None: starting fresh)."""
        info = self.trainer.resume(self.config.checkpoint_dir)
        if info is not None:
            self.version = info.version
            self.version_path = info.path
            self._rng = np.random.default_rng([self.config.seed, info.version])
        return self.version

    def ready(self) -> bool:
        raise NotImplementedError

    def _batches(self) -> Iterator[dict]:
        raise NotImplementedError

    def _round_info(self) -> dict:
        """Extra entries of ``last_round`` (e.g. dataset counts)."""
        return {}

    def train_round(self, stop: Optional[threading.Event] = None) -> Optional[Path]:
        """Refresh the dataset, train one round and checkpoint it; None when there is not enough data yet.

        With ``stop``, the round checks it before every step and raises :class:`RoundInterrupted`
        (saving nothing) once it is set.
        """
        self.dataset.refresh()
        if not self.ready():
            return None
        t0 = time.perf_counter()
        batches = self._batches() if stop is None else _interruptible(self._batches(), stop)
        records = self.trainer.train_steps(batches, self.config.steps_per_round)
        if stop is not None and stop.is_set():
            raise RoundInterrupted("training round interrupted before its checkpoint")
        elapsed = time.perf_counter() - t0
        self.trainer.config = dataclasses.replace(self.trainer.config, dataset_size=len(self.dataset))
        path = self.trainer.save_checkpoint(self.config.checkpoint_dir)
        self.version = ckpt.version_of(path)
        self.version_path = path
        losses = {k: float(np.mean([r[k] for r in records if k in r])) for k in records[0]
                  if k not in ("step", "time_s", "lr")} if records else {}
        self.last_round = {"steps": len(records), "seconds": elapsed,
                           "steps_per_second": len(records) / elapsed if elapsed > 0 else 0.0,
                           **self._round_info(), **losses}
        return path


class OnlineInstanceTrainer(OnlineTrainer):
    def __init__(self, config: OnlineTrainingConfig = OnlineTrainingConfig(),
                 task_config: InstanceTaskConfig = InstanceTaskConfig(),
                 trainer_config: Optional[TrainerConfig] = None):
        self.config = config
        self.task = InstanceSegmentationTask(task_config)
        tc = trainer_config or TrainerConfig(lr=1e-3, warmup_steps=20, seed=config.seed)
        self.trainer = Trainer(self.task, self._serving_config(tc))
        self.store = SampleStore(config.dataset_dir)
        self.dataset = LabeledDataset(self.store, config.labeler, (config.input_width, config.input_height),
                                      config.include_negatives)
        self._init_round_state()

    def ready(self) -> bool:
        return len(self.dataset) >= self.config.min_samples

    def _batches(self) -> Iterator[dict]:
        return self.dataset.batches(self.config.batch_size, self._rng)
