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

import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

import cv2
import numpy as np
import torch

from selfsup_perception.core.learning.models.backbone import share_backbone
from selfsup_perception.core.learning.models.descriptor_net import DescriptorNetConfig
from selfsup_perception.core.learning.models.semantic_segmentation import SemanticSegConfig
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.tasks.base import TrainingTask
from selfsup_perception.core.learning.tasks.descriptors import DescriptorTask, DescriptorTaskConfig
from selfsup_perception.core.learning.tasks.instance import InstanceTaskConfig
from selfsup_perception.core.learning.tasks.region_consistency import (
    RegionConsistencyConfig,
    RegionConsistencyDataConfig,
    RegionConsistencyTask,
)
from selfsup_perception.core.learning.training.online import (
    OnlineInstanceTrainer,
    OnlineTrainingConfig,
    RoundInterrupted,
    _interruptible,
)
from selfsup_perception.core.learning.training.online_region_consistency import (
    IncrementalViewPairs,
    RegisteredPairDataset,
)
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig
from selfsup_perception.core.registration.pair_store import PairStore


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


# --------------------------------------------------------------------------- online: one backbone, several tasks

#: Auxiliary tasks the online instance trainer can alternate with, all on the registered view pairs of the
#: robot's own camera moves: cycle-correspondence descriptors (checkpoints under ``descriptors/``) and
#: region consistency (Barlow Twins on matched regions; checkpoints under ``semantic_segmentation/``).
AUXILIARY_TASKS = ("descriptors", "region_consistency")


def parse_auxiliary_tasks(text: str) -> tuple[str, ...]:
    """``"descriptors, region_consistency"`` -> ('descriptors', 'region_consistency'); "" -> (). ValueError on an
    unknown or repeated name."""
    names = tuple(t.strip() for t in str(text).split(",") if t.strip())
    unknown = [n for n in names if n not in AUXILIARY_TASKS]
    if unknown:
        raise ValueError(f"unknown auxiliary tasks {unknown}; known: {', '.join(AUXILIARY_TASKS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"auxiliary tasks repeat: {list(names)}")
    return names


@dataclass(frozen=True)
class AuxiliaryConfig:
    """The auxiliary tasks of :class:`OnlineSharedBackboneTrainer` and their data (a registration ``PairStore``)."""

    tasks: tuple[str, ...] = ()
    dataset_dir: str = "data/registration"  # the registration node's pair store (views of the camera moves)
    steps_per_round: int = 10  # auxiliary steps alternated with each round's instance steps (0: none)
    pretraining_steps_per_round: int = 20  # auxiliary steps of a round while labels are still too few (0: none)
    batch_size: int = 4  # view pairs per auxiliary step
    min_pairs: int = 1  # usable view pairs before an auxiliary task trains

    def __post_init__(self) -> None:
        parse_auxiliary_tasks(",".join(self.tasks))
        if self.steps_per_round < 0 or self.pretraining_steps_per_round < 0:
            raise ValueError("auxiliary steps_per_round and pretraining_steps_per_round must be >= 0")
        if self.batch_size < 1 or self.min_pairs < 1:
            raise ValueError("auxiliary batch_size and min_pairs must be >= 1")


class ViewPairImages(IncrementalViewPairs):
    """The RGB images of a :class:`PairStore`'s registered view pairs, resized, loaded incrementally.

    What the descriptor task needs: two images of (partly) the same content, correspondences unknown
    (the cycle-correspondence loss finds them itself). A view is read once and shared by its pairs.
    """

    def __init__(self, store: PairStore, size: tuple[int, int]):
        super().__init__(store, size)
        self.pairs: list[tuple[str, str]] = []

    def _load_view(self, view_id: str) -> Optional[np.ndarray]:
        frame = self.store.load_view_or_quarantine(view_id)
        if frame is None:
            return None
        return cv2.resize(frame.rgb, self.size, interpolation=cv2.INTER_AREA)  # (h, w, 3) uint8

    def _add(self, pair, view_a, view_b) -> bool:
        self.pairs.append((pair.view_a, pair.view_b))
        return True

    def __len__(self) -> int:
        return len(self.pairs)

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[dict]:
        """Endless {'rgb_a', 'rgb_b'}: (B, 3, H, W) uint8, pairs drawn uniformly, each in a random direction."""
        to_tensor = lambda imgs: torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        while True:
            idx = rng.choice(len(self.pairs), size=batch_size, replace=len(self.pairs) < batch_size)
            ab = [self.pairs[int(i)][:: 1 if rng.random() < 0.5 else -1] for i in idx]
            yield {"rgb_a": to_tensor([self.views[a] for a, _ in ab]),
                   "rgb_b": to_tensor([self.views[b] for _, b in ab])}


@dataclass
class AuxiliaryState:
    """One auxiliary task of the shared backbone: its trainer, data and what its last round did."""

    name: str  # 'descriptors' | 'region_consistency'
    trainer: Trainer
    dataset: object  # ViewPairImages | RegisteredPairDataset: refresh(), len(), batches(batch_size, rng)
    version: Optional[int] = None  # newest checkpoint version written or resumed
    steps_this_round: int = 0
    losses_this_round: list = field(default_factory=list)
    total_pretraining_steps: int = 0  # steps taken in rounds without enough labels (kept in meta.json across resumes)
    _batches: Optional[Iterator[dict]] = None

    @property
    def task_name(self) -> str:  # the checkpoint folder
        return self.trainer.task.name


class OnlineSharedBackboneTrainer(OnlineInstanceTrainer):
    """The online instance trainer whose backbone the robot's own camera moves also train.

    Each auxiliary task (:data:`AUXILIARY_TASKS`) gets its own heads, optimizer and EMA, on the *same*
    backbone module as the instance network (``share_backbone``), and trains on the registered view pairs
    of ``AuxiliaryConfig.dataset_dir``:

    * while the sample store holds fewer than ``min_samples`` training labels, a round is
      ``pretraining_steps_per_round`` auxiliary steps alone (the backbone is pre-trained before the
      first push is labelled); it writes auxiliary checkpoints and returns None (no instance version);
    * afterwards a round alternates: before each instance step, its share of ``steps_per_round``
      auxiliary steps (spread evenly over the round); then the instance version goes through the
      promotion gate exactly as in :class:`OnlineInstanceTrainer`, and every auxiliary task that trained
      writes its own version (no gate: it has no validation set; ``descriptors`` is served by
      ``compute_descriptors`` as any descriptor checkpoint).

    Checkpoints are ordinary and self-describing; ``meta.json`` ``shared_backbone`` names the tasks and
    the auxiliary steps taken. :meth:`resume` loads the auxiliary checkpoints first and the instance one
    last, so the shared backbone is the one the served instance version was validated with (or, before
    any instance version, the pre-trained one).
    """

    def __init__(self, config: OnlineTrainingConfig = OnlineTrainingConfig(),
                 task_config: InstanceTaskConfig = InstanceTaskConfig(),
                 trainer_config: Optional[TrainerConfig] = None,
                 auxiliary: AuxiliaryConfig = AuxiliaryConfig(tasks=("descriptors",))):
        super().__init__(config, task_config, trainer_config)
        self.aux_config = auxiliary
        backbone = task_config.model.backbone_config()
        size = (config.input_width, config.input_height)
        # each auxiliary trainer: the instance trainer's settings (lr, schedule, EMA, device, input size)
        aux_trainer_config = dataclasses.replace(self.trainer.config, seed=None, dataset_size=None)
        self.pair_store = PairStore(auxiliary.dataset_dir)
        self.auxiliary: dict[str, AuxiliaryState] = {}
        for i, name in enumerate(auxiliary.tasks):
            if name == "descriptors":
                task = DescriptorTask(DescriptorTaskConfig(model=DescriptorNetConfig(backbone=backbone),
                                                           seed=config.seed + 1 + i))
                dataset = ViewPairImages(self.pair_store, size)
            else:
                task = RegionConsistencyTask(RegionConsistencyConfig(
                    model=SemanticSegConfig(widths=backbone.widths), seed=config.seed + 1 + i))
                dataset = RegisteredPairDataset(self.pair_store, size, RegionConsistencyDataConfig())
            model = task.build_model()
            share_backbone(self.trainer.model, model)  # BackboneMismatchError (e.g. use_depth) before any optimizer
            self.auxiliary[name] = AuxiliaryState(name, Trainer(task, aux_trainer_config, model=model), dataset)
        self._aux_rng = np.random.default_rng([config.seed, 7])
        self._stop: Optional[threading.Event] = None
        self._ready: list[AuxiliaryState] = []
        self.last_auxiliary: dict[str, dict] = {}

    # ------------------------------------------------------------------ resume
    def resume(self) -> Optional[int]:
        for aux in self.auxiliary.values():
            info = aux.trainer.resume(self.config.checkpoint_dir)
            aux.version = info.version if info is not None else None
            aux.total_pretraining_steps = int((info.meta.get("pretraining_steps") or 0) if info is not None else 0)
        return super().resume()  # last: the instance checkpoint's backbone wins

    # ------------------------------------------------------------------ rounds
    def _refresh_auxiliary(self) -> list[AuxiliaryState]:
        """Refresh every auxiliary dataset; the tasks with enough view pairs to train."""
        ready = []
        for aux in self.auxiliary.values():
            aux.dataset.refresh()
            aux.steps_this_round, aux.losses_this_round = 0, []
            if len(aux.dataset) >= self.aux_config.min_pairs:
                ready.append(aux)
        return ready

    def _auxiliary_steps(self, tasks: list[AuxiliaryState], steps: int) -> None:
        for aux in tasks:
            if aux._batches is None:
                aux._batches = aux.dataset.batches(self.aux_config.batch_size, self._aux_rng)
            batches = aux._batches if self._stop is None else _interruptible(aux._batches, self._stop)
            records = aux.trainer.train_steps(batches, steps)
            aux.steps_this_round += len(records)
            aux.losses_this_round += [r["loss"] for r in records]

    def _batches(self) -> Iterator[dict]:
        """The instance batches, with each step's share of the auxiliary steps taken before it."""
        inner = super()._batches()
        n, a = self.config.steps_per_round, self.aux_config.steps_per_round
        for i, batch in enumerate(inner):
            share = (i + 1) * a // n - i * a // n if i < n else 0
            if share and self._ready:
                self._auxiliary_steps(self._ready, share)
            yield batch

    def train_round(self, stop: Optional[threading.Event] = None) -> Optional[Path]:
        """One round (see the class docstring); the instance version's path, or None (pre-training only,
        or nothing to train on yet). Auxiliary versions: :attr:`last_auxiliary`."""
        self._stop = stop
        self._ready = self._refresh_auxiliary()
        path = super().train_round(stop)
        if path is None and self._ready and self.aux_config.pretraining_steps_per_round > 0:
            self._auxiliary_steps(self._ready, self.aux_config.pretraining_steps_per_round)
            for aux in self._ready:
                aux.total_pretraining_steps += aux.steps_this_round
        if stop is not None and stop.is_set():
            raise RoundInterrupted("training round interrupted before the auxiliary checkpoints")
        self.last_auxiliary = {}
        for aux in self.auxiliary.values():
            if aux.steps_this_round == 0:
                continue
            aux_path = aux.trainer.save_checkpoint(self.config.checkpoint_dir, extra_meta={
                **self._checkpoint_meta(), "auxiliary_of": self.task_name,
                "view_pairs": len(aux.dataset), "pretraining": path is None,
                "pretraining_steps": aux.total_pretraining_steps})
            aux.version = ckpt.version_of(aux_path)
            self.last_auxiliary[aux.name] = {
                "task": aux.task_name, "version": aux.version, "path": str(aux_path), "step": aux.trainer.step,
                "steps": aux.steps_this_round, "loss": float(np.mean(aux.losses_this_round)),
                "view_pairs": len(aux.dataset), "pretraining": path is None,
                "pretraining_steps": aux.total_pretraining_steps}
        return path

    def _checkpoint_meta(self) -> dict:
        return {"shared_backbone": {
            "tasks": [self.task_name] + [a.task_name for a in self.auxiliary.values()],
            "steps": {self.task_name: self.trainer.step,
                      **{a.task_name: a.trainer.step for a in self.auxiliary.values()}},
            "view_pairs_dir": self.aux_config.dataset_dir}}

    def _round_info(self) -> dict:
        info = super()._round_info()
        for aux in self.auxiliary.values():
            if aux.steps_this_round:
                info[f"{aux.name}_loss"] = float(np.mean(aux.losses_this_round))
                info[f"{aux.name}_steps"] = float(aux.steps_this_round)
        return info
