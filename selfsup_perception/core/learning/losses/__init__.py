"""Standalone loss modules for learning from noisy self-supervised labels."""

from selfsup_perception.core.learning.losses.noisy_labels import (
    CoTeachingLoss,
    HardBootstrappingLoss,
    RobustSetConfig,
    RobustSetLoss,
    SoftIoUHingeLoss,
    binary_iou,
    coteaching_select,
    forget_rate_schedule,
    hard_bootstrap_targets,
    num_remembered,
    robust_set_refine,
    small_loss_mean,
    weighted_bce,
)

__all__ = [
    "CoTeachingLoss",
    "HardBootstrappingLoss",
    "RobustSetConfig",
    "RobustSetLoss",
    "SoftIoUHingeLoss",
    "binary_iou",
    "coteaching_select",
    "forget_rate_schedule",
    "hard_bootstrap_targets",
    "num_remembered",
    "robust_set_refine",
    "small_loss_mean",
    "weighted_bce",
]
