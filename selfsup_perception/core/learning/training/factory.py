"""Build the online trainer of a task from one flat, typed settings object (ROS-free).

The trainer node turns its parameters into :class:`OnlineTrainerSettings` and calls
:func:`make_online_trainer`; tests and scripts can do the same without ROS. The
:class:`~selfsup_perception.core.learning.training.trainer.TrainerConfig` is built here, once.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfsup_perception.core.learning.training.promotion import PromotionConfig
from selfsup_perception.core.learning.training.trainer import TrainerConfig

TASKS = ("instance_segmentation", "semantic_segmentation", "descriptors")


@dataclass(frozen=True)
class OnlineTrainerSettings:
    task: str = "instance_segmentation"
    dataset_dir: str = "data/interactions"
    checkpoint_dir: str = "data/checkpoints"
    labeler: str = "flow"
    input_width: int = 320
    input_height: int = 240
    batch_size: int = 8
    steps_per_round: int = 40
    min_samples: int = 4
    learning_rate: float = 1e-3
    warmup_steps: int = 20
    grad_clip_norm: float = 5.0
    mask_loss: str = "soft_iou"
    objectness_loss: str = "bootstrap"
    co_teaching: bool = False
    # instance segmentation: start the backbone from this checkpoint (a version or task directory of a
    # pre-training run, e.g. <checkpoint_dir>/semantic_segmentation); "" = random (tasks/backbone_transfer.py)
    pretrained_backbone: str = ""
    # ... and hold it still for its first steps while the new heads learn (tasks/backbone_transfer.FineTuneConfig)
    freeze_backbone_steps: int = 100
    # discarded flow labels whose push moved the object at the action pixel train objectness there (training/online)
    point_labels: bool = True
    color_jitter: float = 0.25  # photometric jitter of the training images (exposure, contrast, white balance)
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (core/learning/device.py)
    ema_decay: float = 0.99  # the checkpointed, validated and served weights are this EMA (0: raw weights)
    lr_schedule: str = "constant"  # after the warm-up; 'cyclic_cosine': warm-up + cosine decay in every round
    # promotion gate (instance segmentation; see training/promotion.py)
    validation_fraction: float = 0.2
    promotion_margin: float = 0.01
    min_validation_labels: int = 2
    validation_split_by: str = "scene"  # 'scene' | 'sample' (training/promotion.py)
    first_version_bar: str = "min_score"  # 'min_score' | 'bottom_up' (training/promotion.py)
    # instance segmentation: auxiliary tasks on the same backbone, trained on the registered view pairs of the
    # robot's camera moves (training/multitask.py): "" = none, else comma-separated names of AUXILIARY_TASKS
    auxiliary_tasks: str = ""
    auxiliary_dataset_dir: str = "data/registration"
    auxiliary_steps_per_round: int = 10
    pretraining_steps_per_round: int = 20
    auxiliary_batch_size: int = 4

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        self.trainer_config()  # raises on bad values
        self.promotion_config()
        if self.freeze_backbone_steps < 0:
            raise ValueError(f"freeze_backbone_steps must be >= 0, got {self.freeze_backbone_steps}")
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"color_jitter must be in [0, 1), got {self.color_jitter}")
        aux = self.auxiliary_config()
        if aux.tasks and self.task != "instance_segmentation":
            raise ValueError(f"auxiliary_tasks train beside instance_segmentation, not {self.task}; "
                             f"set auxiliary_tasks to \"\" or task to instance_segmentation")

    def auxiliary_config(self):
        from selfsup_perception.core.learning.training.multitask import AuxiliaryConfig, parse_auxiliary_tasks

        return AuxiliaryConfig(tasks=parse_auxiliary_tasks(self.auxiliary_tasks),
                               dataset_dir=self.auxiliary_dataset_dir, steps_per_round=self.auxiliary_steps_per_round,
                               pretraining_steps_per_round=self.pretraining_steps_per_round,
                               batch_size=self.auxiliary_batch_size)

    def trainer_config(self) -> TrainerConfig:
        if self.lr_schedule not in ("constant", "cyclic_cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cyclic_cosine', got {self.lr_schedule!r}")
        cyclic = self.lr_schedule == "cyclic_cosine"
        return TrainerConfig(lr=self.learning_rate, warmup_steps=self.warmup_steps, seed=self.seed,
                             grad_clip_norm=self.grad_clip_norm, device=self.device, ema_decay=self.ema_decay, schedule=self.lr_schedule,
                             total_steps=self.steps_per_round if cyclic else TrainerConfig.total_steps)

    def promotion_config(self) -> PromotionConfig:
        return PromotionConfig(validation_fraction=self.validation_fraction, margin=self.promotion_margin,
                               min_validation_positives=self.min_validation_labels,
                               split_by=self.validation_split_by, first_version_bar=self.first_version_bar)


def make_online_trainer(s: OnlineTrainerSettings):
    """The online trainer of ``s.task``; all share resume(), train_round(), version, version_path, trainer,
    dataset, last_round."""
    trainer_config = s.trainer_config()
    if s.task == "semantic_segmentation":
        from selfsup_perception.core.learning.tasks.region_consistency import RegionConsistencyConfig
        from selfsup_perception.core.learning.training.online_region_consistency import (
            OnlineRegionConsistencyConfig,
            OnlineRegionConsistencyTrainer,
        )

        return OnlineRegionConsistencyTrainer(
            OnlineRegionConsistencyConfig(dataset_dir=s.dataset_dir, checkpoint_dir=s.checkpoint_dir,
                                          input_width=s.input_width, input_height=s.input_height,
                                          batch_size=s.batch_size, steps_per_round=s.steps_per_round,
                                          min_pairs=s.min_samples, seed=s.seed),
            RegionConsistencyConfig(seed=s.seed), trainer_config)
    if s.task == "descriptors":
        from selfsup_perception.core.learning.training.online_descriptors import (
            OnlineDescriptorConfig,
            OnlineDescriptorTrainer,
        )

        return OnlineDescriptorTrainer(
            OnlineDescriptorConfig(dataset_dir=s.dataset_dir, checkpoint_dir=s.checkpoint_dir,
                                   input_width=s.input_width, input_height=s.input_height, batch_size=s.batch_size,
                                   steps_per_round=s.steps_per_round, min_samples=s.min_samples, seed=s.seed),
            trainer_config=trainer_config)
    from selfsup_perception.core.learning.tasks.backbone_transfer import FineTuneConfig
    from selfsup_perception.core.learning.tasks.instance import InstanceTaskConfig
    from selfsup_perception.core.learning.training.online import OnlineInstanceTrainer, OnlineTrainingConfig

    online_config = OnlineTrainingConfig(
        dataset_dir=s.dataset_dir, labeler=s.labeler, checkpoint_dir=s.checkpoint_dir, input_width=s.input_width,
        input_height=s.input_height, batch_size=s.batch_size, steps_per_round=s.steps_per_round,
        min_samples=s.min_samples, seed=s.seed, point_labels=s.point_labels, color_jitter=s.color_jitter,
        promotion=s.promotion_config())
    task_config = InstanceTaskConfig(mask_loss=s.mask_loss, objectness_loss=s.objectness_loss,
                                     co_teaching=s.co_teaching, pretrained_backbone=s.pretrained_backbone,
                                     fine_tune=FineTuneConfig(freeze_backbone_steps=s.freeze_backbone_steps))
    auxiliary = s.auxiliary_config()
    if auxiliary.tasks:
        from selfsup_perception.core.learning.training.multitask import OnlineSharedBackboneTrainer

        return OnlineSharedBackboneTrainer(online_config, task_config, trainer_config, auxiliary)
    return OnlineInstanceTrainer(online_config, task_config, trainer_config)
