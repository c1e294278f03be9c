"""Semantic-segmentation fine-tuning task (focal loss on a few labelled views) and mIoU evaluation.

RegConsist Sec. III-E: after pre-training, fine-tune the whole network with the focal loss on the
labelled views only (5 % of the views in the paper). Batch contract of :meth:`compute_loss`::

    rgb       (B, 3, H, W) uint8 or float in [0, 255]
    semantic  (B, H, W) long class ids (``ignore_index`` = not labelled)

Augmentation: weak photometric jitter and a random horizontal flip (image and labels together).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from selfsup_perception.core.learning.losses.focal import FocalLoss
from selfsup_perception.core.learning.models.semantic_segmentation import (  # noqa: F401 - re-exported
    SemanticSegConfig,
    SemanticSegNet,
    predict,
)
from selfsup_perception.core.learning.tasks.region_consistency import (
    WEAK_AUG,
    PhotometricAugConfig,
    photometric_augment,
)


@dataclass(frozen=True)
class SemanticTaskConfig:
    model: SemanticSegConfig = field(default_factory=SemanticSegConfig)
    gamma: float = 2.0
    ignore_index: int = 0  # sim class 0 = 'unknown'
    class_weights: Optional[tuple[float, ...]] = None
    augment: Optional[PhotometricAugConfig] = field(default_factory=lambda: WEAK_AUG)
    hflip_prob: float = 0.5
    seed: int = 0


class SemanticSegmentationTask:
    """TrainingTask: focal-loss semantic segmentation on a :class:`SemanticSegNet`."""

    name = "semantic_segmentation"
    stage = "finetune"

    def __init__(self, config: SemanticTaskConfig = SemanticTaskConfig()):
        self.config = config
        self.loss_fn = FocalLoss(gamma=config.gamma, ignore_index=config.ignore_index,
                                 class_weights=config.class_weights)
        self._gen = torch.Generator().manual_seed(config.seed)

    def build_model(self) -> SemanticSegNet:
        return SemanticSegNet(self.config.model)

    def model_config(self) -> dict:
        return self.config.model.to_dict()

    def compute_loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        if "rgb" not in batch or "semantic" not in batch:
            raise ValueError("semantic batch needs 'rgb' (B,3,H,W) and 'semantic' (B,H,W)")
        rgb, target = batch["rgb"], batch["semantic"].long()
        if rgb.dim() != 4 or target.shape != (rgb.shape[0],) + tuple(rgb.shape[2:]):
            raise ValueError(f"rgb {tuple(rgb.shape)} and semantic {tuple(target.shape)} do not match")
        x = rgb.float()
        if self.config.augment is not None:
            x = photometric_augment(x, self.config.augment, self._gen)
        flip = torch.rand(x.shape[0], generator=self._gen) < self.config.hflip_prob
        if flip.any():
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            target = torch.where(flip.view(-1, 1, 1), target.flip(-1), target)
        logits = model(x)  # (B, C, H, W)
        loss = self.loss_fn(logits, target)
        with torch.no_grad():
            keep = target != self.config.ignore_index
            acc = (logits.argmax(1)[keep] == target[keep]).float().mean() if keep.any() else torch.tensor(0.0)
        return loss, {"focal": float(loss.detach()), "pixel_acc": float(acc)}


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = -1) -> np.ndarray:
    """(C, C) counts, rows = ground truth, columns = prediction; ``ignore_index`` pixels skipped."""
    pred, target = np.asarray(pred).reshape(-1), np.asarray(target).reshape(-1)
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ")
    keep = target != ignore_index
    return np.bincount(target[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64),
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mean_iou(conf: np.ndarray, ignore_classes: tuple[int, ...] = ()) -> tuple[float, np.ndarray]:
    """mIoU over classes present in the ground truth (and not ignored); per-class IoU (NaN if absent).

    IoU_c = TP / (TP + FP + FN), with FP counted only over non-ignored ground-truth pixels.
    """
    tp = np.diag(conf).astype(np.float64)
    gt = conf.sum(1).astype(np.float64)
    fp = conf.sum(0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (gt + fp)
    iou[gt == 0] = np.nan
    for c in ignore_classes:
        iou[c] = np.nan
    valid = ~np.isnan(iou)
    return (float(iou[valid].mean()) if valid.any() else float("nan")), iou
