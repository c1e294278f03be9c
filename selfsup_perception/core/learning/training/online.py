"""Online training from a growing dataset of interaction labels (ROS-free).

The trainer node calls :meth:`OnlineInstanceTrainer.train_round` in a loop: each round picks
up labels written since the last one, takes ``steps_per_round`` optimizer steps on batches
of the training labels, measures the new weights on the held-out validation labels, and
writes a new checkpoint version atomically with the promotion gate's decision in its
metadata (``validation``, ``promoted``, ``promotion_reason``); a promoted version becomes the
served one in the task's promotion ledger (:mod:`..serving.promotions`), a rejected one stays
a candidate on disk. After a restart :meth:`resume` continues from the newest valid
checkpoint: no labelled data lives only in memory (it is re-read from the sample store), and
no step is lost beyond the round that was running.

Labels are split deterministically into training and validation (:func:`.promotion.is_validation`
on the label's scene id, else its sample id; plus a quota: once ``min_samples`` training labels
exist, positive labels go to validation with their scene until it holds the gate's
``min_validation_positives``, so a few unlucky hashes cannot starve the gate); only the
robot's own labels are read, never the simulator's ground truth. Batches replay old labels beside new ones: each drawn item is a
negative with probability ``negative_fraction`` (when there are negatives), and comes from the
labels added by the newest refresh with probability ``new_fraction`` (when there are new ones),
else from all labels of its kind.

Point labels (``point_labels``, on by default): a push whose flow label was discarded although the flow or
the depth saw the object at the action pixel move (:func:`point_label_evidence`) still says where an object
is; it trains the objectness head at the action pixel only (``is_point``, :mod:`..tasks.instance`). They
are training items only (never validation) and are not counted as labels (``min_samples``, the quota).

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
from selfsup_perception.core.evaluation.bottom_up import depth_bottom_up
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.serving.promotions import PromotionLedger, served_version
from selfsup_perception.core.learning.tasks.instance import InstanceSegmentationTask, InstanceTaskConfig, collate_samples
from selfsup_perception.core.learning.training.promotion import (
    PromotionConfig,
    PromotionDecision,
    PromotionGate,
    ValidationScores,
    hypothesis_scores,
    is_validation,
    validation_scores,
)
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig
from selfsup_perception.core.types import InteractionOutcome, MaskLabel

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
    new_fraction: float = 0.5  # replay: share of drawn items from the labels added by the newest refresh
    negative_fraction: float = 0.25  # replay: share of drawn items that are negatives (when there are any)
    # discarded flow labels whose push moved the object at the action pixel train objectness there (module doc)
    point_labels: bool = True
    # photometric jitter of the training images (tasks/instance.jitter_colors: exposure, contrast, white balance)
    color_jitter: float = 0.25
    promotion: PromotionConfig = field(default_factory=PromotionConfig)

    def __post_init__(self) -> None:
        if self.input_width < 32 or self.input_height < 32:
            raise ValueError("input size must be at least 32x32")
        if self.batch_size < 1 or self.steps_per_round < 1 or self.min_samples < 1:
            raise ValueError("batch_size, steps_per_round and min_samples must be >= 1")
        if not (0.0 <= self.new_fraction <= 1.0 and 0.0 <= self.negative_fraction <= 1.0):
            raise ValueError("new_fraction and negative_fraction must be in [0, 1]")
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"color_jitter must be in [0, 1), got {self.color_jitter}")


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


# the flow labeler's default share of changed depth pixels near the action pixel above which "nothing
# moved" is not trusted (FlowLabelerConfig.negative_max_changed_fraction); used when the label's
# provenance does not record its labeler's value
CHANGED_NEAR_ACTION = 0.05


def point_label_evidence(label: MaskLabel, outcome: InteractionOutcome = InteractionOutcome.EXECUTED) -> str:
    """Why a discarded flow label still says "an object lies at the action pixel" ("" when it does not).

    Yes when the push was executed, the flow labeler discarded its mask (not a negative, not skipped for a
    data problem, not for camera motion) and either a moving segment lay under the action pixel (its
    candidate mask is not empty: too large, too small, rotating, not explained by the flow, or a large
    motion) or the depth near the action pixel changed. A push moves the object under its start pixel
    (118 of the 120 pushes of ``bench/ap_table.py``'s realistic collection).
    """
    if label.labeler != "flow" or label.kept or label.is_negative or outcome != InteractionOutcome.EXECUTED:
        return ""
    stats = label.stats or {}
    if stats.get("skipped") or label.reason.startswith(("skipped", "large camera motion")):
        return ""
    if float(stats.get("area", 0.0)) > 0:
        return "a moving segment under the action pixel"
    limit = (label.provenance or {}).get("config", {}).get("negative_max_changed_fraction", CHANGED_NEAR_ACTION)
    if float(stats.get("changed_near_action", 0.0)) > float(limit):
        return "the depth near the action pixel changed"
    return ""


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


def bottom_up_hypotheses(frame, size: tuple[int, int]) -> list[tuple[np.ndarray, float]]:
    """The depth-aware bottom-up segments of ``frame`` resized to ``size`` = (width, height): [(mask, score)]
    (empty when the frame has no table in view or no depth: a result, not an error)."""
    w, h = size
    out = []
    try:
        segments = depth_bottom_up(frame).instances
    except (ValueError, cv2.error) as exc:  # a frame the geometry cannot use: no hypotheses, never a failed round
        LOG.warning("no depth-aware segments for a validation label: %s", exc)
        return out
    for mask, score in segments:
        small = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        if small.any():
            out.append((small, float(score)))
    return out


def split_key(sample_id: str, label, split_by: str = "scene") -> str:
    """What the train/validation split hashes: the label's scene (or episode) id when recorded (and
    ``split_by`` is 'scene'), else the sample id."""
    if split_by == "sample":
        return sample_id
    prov = getattr(label, "provenance", None) or {}
    scene = prov.get("scene_id") or prov.get("episode_id")
    return f"scene:{scene}" if scene else sample_id


@dataclass
class LabeledDataset:
    """Kept labels of one labeler, loaded incrementally from a :class:`SampleStore`.

    ``items`` are the training labels, ``validation`` the held-out ones (``validation_fraction``
    of the split keys; 0 holds nothing out). ``len()`` counts training labels.
    """

    store: SampleStore
    labeler: str
    size: tuple[int, int]  # (width, height)
    include_negatives: bool = True
    validation_fraction: float = 0.0
    split_by: str = "scene"  # see split_key
    # quota: once ``reserve_after`` training labels exist, positive labels go to validation (with their
    # scene) until it holds ``min_validation_positives`` of them, so the gate is not starved by the hash
    min_validation_positives: int = 0
    reserve_after: int = 0
    # validation items also carry the depth-aware bottom-up segments of their before view (resized), the
    # robot's hypotheses without a model: the bar of the first promoted version (promotion.hypothesis_scores)
    bottom_up_hypotheses: bool = False
    # discarded labels with point_label_evidence become training items with ``is_point`` (objectness only)
    point_labels: bool = False
    items: list = field(default_factory=list)
    validation: list = field(default_factory=list)
    _seen: set = field(default_factory=set)
    num_positive: int = 0
    num_negative: int = 0
    num_discarded: int = 0
    num_quarantined: int = 0
    num_point: int = 0
    _new_start: int = 0  # items[_new_start:] were added by the newest refresh that added any
    _reserved_keys: set = field(default_factory=set)  # split keys sent to validation by the quota

    def refresh(self) -> int:
        """Load labels written since the last call; returns how many items were added (both splits)."""
        added, first_new = 0, len(self.items)
        for sample_id in self.store.labeled_ids(self.labeler):
            if sample_id in self._seen:
                continue
            try:
                label = self.store.read_label(sample_id, self.labeler)
                point = False
                if not label.kept or (label.is_negative and not self.include_negatives):
                    self.num_discarded += int(not label.kept)
                    point = self.point_labels and not label.kept and bool(point_label_evidence(label))
                    if not point:
                        self._seen.add(sample_id)
                        continue
                sample = self.store.read_sample(sample_id)  # without ground truth: the learner never sees it
                if point and not point_label_evidence(label, sample.outcome):
                    self._seen.add(sample_id)
                    continue
                mask = np.zeros(sample.before.rgb.shape[:2], bool) if point else label.mask
                check_item(sample.before.rgb, mask, sample.action_pixel)
                item = resize_item(sample.before.rgb, mask, sample.action_pixel, self.size)
            except FileNotFoundError as exc:
                LOG.warning("skipping %s: %s", sample_id, exc)
                self._seen.add(sample_id)
                continue
            except (CorruptSampleError, ValueError, TypeError, KeyError, cv2.error) as exc:
                self._quarantine(sample_id, exc)
                continue
            item["is_negative"] = bool(label.is_negative)
            item["sample_id"] = sample_id
            self._seen.add(sample_id)
            if point:  # training only, and not a label of its own (min_samples, replay strata: positives)
                if not self._held_out_by_hash(split_key(sample_id, label, self.split_by)):
                    item["is_point"] = True
                    self.items.append(item)
                    self.num_point += 1
                    added += 1
                continue
            added += 1
            if self._held_out(split_key(sample_id, label, self.split_by), bool(label.is_negative)):
                if self.bottom_up_hypotheses:
                    item["hypotheses"] = bottom_up_hypotheses(sample.before, self.size)
                self.validation.append(item)
                continue
            self.items.append(item)
            self.num_negative += int(label.is_negative)
            self.num_positive += int(not label.is_negative)
        if len(self.items) > first_new:
            self._new_start = first_new
        return added

    def _quarantine(self, sample_id: str, exc: BaseException) -> None:
        """Move the item's label aside (the sample stays for other labelers) so it is never loaded again."""
        self._seen.add(sample_id)
        self.num_quarantined += 1
        dest = self.store.quarantine_label(sample_id, self.labeler)
        LOG.warning("quarantined %s (%s label -> %s): %s", sample_id, self.labeler, dest, exc)

    def _held_out_by_hash(self, key: str) -> bool:
        """The key is on the validation side (a point label of a validation scene stays out of training)."""
        return self.validation_fraction > 0 and (key in self._reserved_keys or is_validation(key, self.validation_fraction))

    def _held_out(self, key: str, is_negative: bool) -> bool:
        """Validation by the hash of ``key``, or by the quota (deterministic: labels are read in id order)."""
        if self.validation_fraction <= 0:
            return False
        if key in self._reserved_keys or is_validation(key, self.validation_fraction):
            return True
        positives = sum(not it["is_negative"] for it in self.validation)
        if not is_negative and positives < self.min_validation_positives and len(self) >= self.reserve_after:
            self._reserved_keys.add(key)
            return True
        return False

    def __len__(self) -> int:
        return len(self.items) - self.num_point

    def _draw(self, rng: np.random.Generator, new_fraction: float, negative_fraction: float) -> int:
        """Index of one item: negative with p = negative_fraction, new with p = new_fraction (see module docstring)."""
        neg = [i for i, it in enumerate(self.items) if it["is_negative"]]
        pos = [i for i, it in enumerate(self.items) if not it["is_negative"]]
        pool = neg if neg and (not pos or rng.random() < negative_fraction) else pos
        new = [i for i in pool if i >= self._new_start]
        if new and len(new) < len(pool) and rng.random() < new_fraction:
            pool = new
        return int(pool[int(rng.integers(len(pool)))])

    def batches(self, batch_size: int, rng: np.random.Generator, new_fraction: float = 0.5,
                negative_fraction: float = 0.25, color_jitter: float = 0.0) -> Iterator[dict]:
        """Endless batches (with flips) of distinct training items, balanced as the module docstring says."""
        while True:
            size = min(batch_size, len(self.items))
            chosen: list[int] = []
            for _ in range(20 * size):
                if len(chosen) == size:
                    break
                i = self._draw(rng, new_fraction, negative_fraction)
                if i not in chosen:
                    chosen.append(i)
            if len(chosen) < size:  # a tiny stratum: fill uniformly
                rest = [i for i in range(len(self.items)) if i not in chosen]
                chosen += [int(i) for i in rng.choice(rest, size=size - len(chosen), replace=False)]
            yield collate_samples([self.items[i] for i in chosen], rng=rng, color_jitter=color_jitter)


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
        self.last_decision: Optional[PromotionDecision] = None
        # held while the gate decides and the ledger changes (rounds run on a worker; rollback on another thread)
        self.promotion_lock = threading.Lock()

    @property
    def task_name(self) -> str:
        return self.trainer.task.name

    def ledger(self) -> PromotionLedger:
        return PromotionLedger.load(self.config.checkpoint_dir, self.task_name)

    def _validate(self) -> Optional[PromotionDecision]:
        """The gate's decision on the current weights; None: this task has no validation (always promoted)."""
        return None

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
        with self.promotion_lock:
            decision = self._validate()
            if decision is None:
                decision = PromotionDecision(True, "promoted: this task has no validation set", None)
            validation = decision.candidate.as_dict() if decision.candidate is not None else {}
            ledger = self.ledger()  # read before this version exists: its promotion is recorded once, below
            path = self.trainer.save_checkpoint(self.config.checkpoint_dir, extra_meta={
                "promoted": decision.promoted, "promotion_reason": decision.reason, "validation": validation,
                "served_validation": decision.served.as_dict() if decision.served is not None else {},
                "bottom_up_validation": decision.bottom_up.as_dict() if decision.bottom_up is not None else {}})
            self.version = ckpt.version_of(path)
            self.version_path = path
            if decision.promoted:
                ledger.record_promotion(self.version, decision.reason, validation)
            self.last_decision = decision
        LOG.info("%s v%d: %s", self.task_name, self.version, decision.reason)
        losses = {k: float(np.mean([r[k] for r in records if k in r])) for k in records[0]
                  if k not in ("step", "time_s", "lr")} if records else {}
        self.last_round = {"steps": len(records), "seconds": elapsed,
                           "steps_per_second": len(records) / elapsed if elapsed > 0 else 0.0,
                           **self._round_info(), **losses}
        return path


class OnlineInstanceTrainer(OnlineTrainer):
    """Instance segmentation from interaction labels, behind the promotion gate (:mod:`.promotion`)."""

    def __init__(self, config: OnlineTrainingConfig = OnlineTrainingConfig(),
                 task_config: InstanceTaskConfig = InstanceTaskConfig(),
                 trainer_config: Optional[TrainerConfig] = None):
        self.config = config
        self.task = InstanceSegmentationTask(task_config)
        tc = trainer_config or TrainerConfig(lr=1e-3, warmup_steps=20, seed=config.seed, ema_decay=0.99)
        self.trainer = Trainer(self.task, self._serving_config(tc))
        self.store = SampleStore(config.dataset_dir)
        self.dataset = LabeledDataset(self.store, config.labeler, (config.input_width, config.input_height),
                                      config.include_negatives, config.promotion.validation_fraction,
                                      config.promotion.split_by, config.promotion.min_validation_positives,
                                      reserve_after=config.min_samples, bottom_up_hypotheses=True,
                                      point_labels=config.point_labels)
        self.gate = PromotionGate(config.promotion)
        self._served_scores: dict[tuple[int, int], ValidationScores] = {}  # (version, validation size) -> scores
        self._bottom_up_scores: dict[int, Optional[ValidationScores]] = {}  # validation size -> scores
        self._init_round_state()

    def ready(self) -> bool:
        return len(self.dataset) >= self.config.min_samples

    def _batches(self) -> Iterator[dict]:
        c = self.config
        return self.dataset.batches(c.batch_size, self._rng, c.new_fraction, c.negative_fraction, c.color_jitter)

    def served_scores(self, version: int) -> ValidationScores:
        """Validation scores of stored ``version`` on the current validation labels (cached per set size)."""
        key = (int(version), len(self.dataset.validation))
        if key not in self._served_scores:
            info = [v for v in ckpt.list_versions(self.config.checkpoint_dir, self.task_name) if v.version == version]
            if not info:
                raise ckpt.CheckpointError(f"served {self.task_name} v{version} is missing or unreadable")
            model, _ = ckpt.load_model_for_inference(info[0].path)
            self._served_scores[key] = validation_scores(model, self.dataset.validation,
                                                         overlap_to_count=self.config.promotion.overlap_to_count)
        return self._served_scores[key]

    def _validate(self) -> PromotionDecision:
        candidate = validation_scores(self.trainer.serving_model, self.dataset.validation,
                                      overlap_to_count=self.config.promotion.overlap_to_count)
        version = served_version(self.config.checkpoint_dir, self.task_name)
        served = None
        if version is not None:
            try:
                served = self.served_scores(version)
            except ckpt.CheckpointError as exc:
                LOG.error("%s; judging the candidate as if nothing were served", exc)
        if served is not None:
            return self.gate.decide(candidate, served)
        n = len(self.dataset.validation)
        if n not in self._bottom_up_scores:  # the first version's bar: the robot's hypotheses without a model
            self._bottom_up_scores[n] = hypothesis_scores(self.dataset.validation,
                                                          overlap_to_count=self.config.promotion.overlap_to_count)
        return self.gate.decide(candidate, None, self._bottom_up_scores[n])

    def _round_info(self) -> dict:
        return {"validation_labels": float(len(self.dataset.validation)), "point_labels": float(self.dataset.num_point)}
