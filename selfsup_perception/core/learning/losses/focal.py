"""Multi-class focal loss for dense prediction (Lin et al. 2017), used by RegConsist for fine-tuning.

    p_t = softmax(logits)[target],  FL = - w_target * (1 - p_t)^gamma * log p_t

computed from ``log_softmax`` (stable). ``reduction='mean'`` divides by the sum of the weights of
the non-ignored pixels (``sum w_t FL / sum w_t``), so with ``gamma = 0`` the loss equals
``torch.nn.functional.cross_entropy(logits, target, weight, ignore_index=...)``. Pixels with
``target == ignore_index`` contribute nothing; a batch with only ignored pixels gives 0 (with grad).
The paper gives no gamma; 2 is the focal-loss paper's default.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F


class FocalLoss(nn.Module):
    def __init__(
        self,
        *,
        gamma: float = 2.0,
        ignore_index: int = -100,
        class_weights: Optional[Sequence[float]] = None,
        reduction: str = "mean",
    ):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.gamma = float(gamma)
        self.ignore_index = int(ignore_index)
        self.reduction = reduction
        if class_weights is not None:
            w = torch.as_tensor(class_weights, dtype=torch.float32)
            if w.dim() != 1 or (w < 0).any():
                raise ValueError("class_weights must be a 1-D sequence of non-negative values")
            self.register_buffer("class_weights", w)
        else:
            self.class_weights = None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits`` (B, C, ...) float, ``target`` (B, ...) int class ids or ``ignore_index``."""
        if logits.dim() < 2:
            raise ValueError(f"logits must be (B, C, ...), got {tuple(logits.shape)}")
        if target.shape != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
        if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"target must hold integer class ids, got {target.dtype}")
        c = logits.shape[1]
        if self.class_weights is not None and self.class_weights.numel() != c:
            raise ValueError(f"class_weights has {self.class_weights.numel()} entries for {c} classes")
        target = target.long()
        keep = target != self.ignore_index
        if keep.any() and (target[keep].min() < 0 or target[keep].max() >= c):
            raise ValueError(f"target class ids must be in [0, {c}) or ignore_index={self.ignore_index}")
        safe = torch.where(keep, target, torch.zeros_like(target))
        logp = F.log_softmax(logits.float(), dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)  # (B, ...)
        pt = logp.exp()
        loss = -((1.0 - pt).clamp(min=0.0) ** self.gamma) * logp
        w = keep.float()
        if self.class_weights is not None:
            w = w * self.class_weights[safe]
        loss = loss * w
        if self.reduction == "none":
            return loss
        if self.reduction == "sum":
            return loss.sum()
        return loss.sum() / w.sum().clamp(min=1e-12)
