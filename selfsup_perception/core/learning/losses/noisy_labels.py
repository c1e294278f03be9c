"""Losses for learning segmentation from noisy, incomplete self-supervised masks.

The robot labels at most one object per image (the one it moved) and the label
itself is noisy (flow / frame-difference masks). Three remedies from the papers:

* **Robust set loss** (Pathak et al., "Learning instance segmentation by
  interaction", Sec. 3.1; reference ``pathak22/seg-by-interaction/robust_set_loss.py``):
  refine the noisy target towards the network's own prediction until their IoU
  exceeds a threshold, then train with (binary) cross-entropy against the
  refined mask. :func:`robust_set_refine` + :class:`RobustSetLoss`.
  :class:`SoftIoUHingeLoss` is an optional differentiable surrogate of the same
  constraint (our addition, not in the papers).
* **Hard bootstrapping** for missing labels (Eitel et al., "Self-supervised
  transfer learning for instance segmentation through physical interaction",
  Sec. III-C; Reed et al. "reed-hard"; reference ``aeitel/self_deepmask``):
  target = beta * y + (1 - beta) * 1[p > 0.5], and no gradient where the model is
  confident of foreground (p > 0.5) while the label says background.
  :class:`HardBootstrappingLoss`.
* **Co-teaching** (Han et al. 2018, used in Eitel et al. Table III): each of two
  networks keeps the (1 - forget) * N samples its *peer* finds easiest and trains
  on those. :func:`coteaching_select`, :func:`forget_rate_schedule`,
  :class:`CoTeachingLoss`.

All functions work on binary (single-logit) segmentation: ``logits`` (B, H, W),
foreground probability sigmoid(logits). A two-channel log-probability output
(as in the reference) maps to this with logit = l_fg - l_bg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


# --------------------------------------------------------------------------- helpers


def _check_logits_targets(logits: torch.Tensor, targets: torch.Tensor, name: str) -> None:
    if logits.dim() != 3:
        raise ValueError(f"{name}: logits must be (B, H, W), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape:
        raise ValueError(
            f"{name}: targets {tuple(targets.shape)} do not match logits {tuple(logits.shape)}"
        )
    if logits.numel() == 0:
        raise ValueError(f"{name}: empty input")
    if not torch.isfinite(logits).all():
        raise ValueError(f"{name}: logits contain NaN or inf")


def binary_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample IoU of two boolean (B, H, W) masks -> (B,) float64.

    Follows the reference ``iou``: an empty union gives IoU 0 (union + 1e-12).
    """
    pred = pred.bool()
    target = target.bool()
    inter = (pred & target).flatten(1).sum(1).double()
    union = (pred | target).flatten(1).sum(1).double()
    return inter / union.clamp_min(1e-12)


# --------------------------------------------------------------------------- robust set loss


@dataclass(frozen=True)
class RobustSetConfig:
    step: float = 0.1  # logit nudge per iteration (reference default)
    iou_threshold: float = 0.75  # constraint IoU(pred, noisy target) > threshold (reference default)
    max_iterations: int = 25  # reference default


def robust_set_refine(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    step: float = 0.1,
    iou_threshold: float = 0.75,
    max_iterations: int = 25,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refine noisy target masks towards the prediction (reference target-refinement step).

    Per sample, with d = foreground logit (for a 2-channel net d = l_fg - l_bg) and the
    prediction 1[d + offset > 0] (ties are background, as ``np.argmax`` picks index 0):
    while IoU(prediction, target) <= ``iou_threshold`` (at most ``max_iterations`` times),
    try three moves of size ``step``:

    * "in":  raise d inside the target,
    * "out": lower d outside the target,
    * "in+out": both;

    keep "in" if it raises the IoU, else "out" if it raises the IoU, else "in+out"
    (the reference's fallback, which lets a far-off prediction walk towards the target).
    The refined mask is the final prediction 1[d + offset > 0]; samples that already
    satisfy the constraint get their own prediction back unchanged (a prediction equal to
    the target returns the target).

    Deviations from ``pathak22/seg-by-interaction/robust_set_loss.py``:

    * Bug fixed: when the "out" move is kept, the reference subtracts ``step`` outside
      the target a second time instead of undoing the trial "in" move, leaving
      (+step inside, -2 step outside). We keep exactly (0 inside, -step outside).
    * Offsets are accumulated as integer counts times ``step`` (no drift from repeated
      float additions); ``np.float`` (removed from numpy) is not used.

    Args:
        logits: (B, H, W) foreground logits (detached internally; computed in float64).
        targets: (B, H, W) noisy masks, bool or {0, 1}.
    Returns:
        (refined (B, H, W) bool, iterations (B,) int64 = number of refinement steps
        applied to each sample, final IoU (B,) float64 of refined mask vs. target).
    """
    _check_logits_targets(logits, targets, "robust_set_refine")
    if step <= 0 or not math.isfinite(step):
        raise ValueError(f"step must be positive, got {step}")
    if max_iterations < 0:
        raise ValueError(f"max_iterations must be >= 0, got {max_iterations}")
    d = logits.detach().to(torch.float64)
    tgt = targets.detach().bool().to(d.device)
    inside = tgt.to(torch.float64)
    outside = 1.0 - inside
    b = d.shape[0]
    k_in = torch.zeros(b, dtype=torch.float64, device=d.device)  # nudge counts per sample
    k_out = torch.zeros(b, dtype=torch.float64, device=d.device)
    iters = torch.zeros(b, dtype=torch.int64, device=d.device)

    def pred(kin: torch.Tensor, kout: torch.Tensor) -> torch.Tensor:
        off = (kin * step)[:, None, None] * inside - (kout * step)[:, None, None] * outside
        return (d + off) > 0

    for _ in range(max_iterations):
        iou_orig = binary_iou(pred(k_in, k_out), tgt)
        unconverged = ~(iou_orig > iou_threshold)
        if not unconverged.any():
            break
        u = unconverged.double()
        iou_in = binary_iou(pred(k_in + u, k_out), tgt)
        iou_out = binary_iou(pred(k_in, k_out + u), tgt)
        improved_in = (iou_in > iou_orig) & unconverged
        improved_out = ~improved_in & (iou_out > iou_orig) & unconverged
        both = unconverged & ~improved_in & ~improved_out
        k_in = k_in + (improved_in | both).double()
        k_out = k_out + (improved_out | both).double()
        iters = iters + unconverged.long()
    refined = pred(k_in, k_out)
    return refined, iters, binary_iou(refined, tgt)


class RobustSetLoss(nn.Module):
    """Robust set loss: BCE against the robust-set-refined target (Pathak et al. Sec. 3.1).

    loss = mean_{pixels with weight} w * BCE(sigmoid(logits), refine(logits, y))

    where ``refine`` is :func:`robust_set_refine` (no gradient flows through it; it is a
    target-refinement step as in the reference, which trains with cross-entropy
    against the refined mask). ``weights`` (B, H, W), optional, masks pixels out.
    ``forward`` returns the per-sample loss (B,) when ``reduction='none'``.
    """

    def __init__(
        self,
        *,
        step: float = 0.1,
        iou_threshold: float = 0.75,
        max_iterations: int = 25,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        self.step = step
        self.iou_threshold = iou_threshold
        self.max_iterations = max_iterations
        self.reduction = reduction

    def forward(
        self, *, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        refined, _, _ = robust_set_refine(
            logits, targets, step=self.step, iou_threshold=self.iou_threshold, max_iterations=self.max_iterations
        )
        return weighted_bce(logits, refined.to(logits.dtype), weights, self.reduction)


def weighted_bce(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None, reduction: str
) -> torch.Tensor:
    """Mean of w * BCE-with-logits over pixels; per sample (B,) for ``reduction='none'``.

    A sample whose weights are all zero contributes 0.
    """
    per_pixel = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    if weights is None:
        weights = torch.ones_like(per_pixel)
    elif weights.shape != logits.shape:
        raise ValueError(f"weights {tuple(weights.shape)} do not match logits {tuple(logits.shape)}")
    weights = weights.to(per_pixel.dtype)
    per_sample = (per_pixel * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp_min(1e-6)
    return per_sample if reduction == "none" else per_sample.mean()


class SoftIoUHingeLoss(nn.Module):
    """Differentiable surrogate of the robust-set constraint (our addition).

    loss_b = max(0, tau - softIoU_b),  softIoU = sum(p*y) / (sum(p) + sum(y) - sum(p*y) + eps),
    p = sigmoid(logits). Zero once the soft IoU with the noisy target exceeds ``tau``, so
    (like the robust set loss) the network is not pushed to fit the noise exactly.
    """

    def __init__(self, *, iou_threshold: float = 0.75, eps: float = 1e-6, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        self.iou_threshold = iou_threshold
        self.eps = eps
        self.reduction = reduction

    def forward(self, *, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check_logits_targets(logits, targets, "SoftIoUHingeLoss")
        p = torch.sigmoid(logits).flatten(1)
        y = targets.to(p.dtype).flatten(1)
        inter = (p * y).sum(1)
        soft_iou = inter / (p.sum(1) + y.sum(1) - inter + self.eps)
        per_sample = torch.relu(self.iou_threshold - soft_iou)
        return per_sample if self.reduction == "none" else per_sample.mean()


# --------------------------------------------------------------------------- bootstrapping


def hard_bootstrap_targets(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    beta: float = 0.7,
    ignore_confident_foreground: bool = True,
    teacher_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard-bootstrapped targets and pixel weights.

    t = beta * y + (1 - beta) * 1[p > 0.5]         (Reed et al. hard bootstrapping; beta = 0.7
                                                     in ``aeitel/self_deepmask``, where it is
                                                     written 1[logit > 0], the same thing)
    w = 0 where y = 0 and p > 0.5, else 1          (Eitel et al. Sec. III-C: zero gradient where
                                                     the model says "object" but the label says
                                                     background -- an unlabelled object)

    p comes from ``teacher_logits`` if given (the paper uses the pre-trained model), else
    from the detached ``logits`` themselves. Returns (t (B, H, W) float, w (B, H, W) float).
    """
    _check_logits_targets(logits, targets, "hard_bootstrap_targets")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    src = logits if teacher_logits is None else teacher_logits
    if src.shape != logits.shape:
        raise ValueError(f"teacher_logits {tuple(src.shape)} do not match logits {tuple(logits.shape)}")
    confident = (src.detach() > 0).to(logits.dtype)  # 1[p > 0.5]
    y = targets.to(logits.dtype)
    t = beta * y + (1.0 - beta) * confident
    w = torch.ones_like(t)
    if ignore_confident_foreground:
        w = torch.where((y < 0.5) & (confident > 0.5), torch.zeros_like(w), w)
    return t, w


class HardBootstrappingLoss(nn.Module):
    """BCE against hard-bootstrapped targets, see :func:`hard_bootstrap_targets`.

    loss = sum(w * BCE(p, t)) / sum(w) per sample (extra ``weights`` multiply w).
    """

    def __init__(self, *, beta: float = 0.7, ignore_confident_foreground: bool = True, reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self.beta = beta
        self.ignore_confident_foreground = ignore_confident_foreground
        self.reduction = reduction

    def forward(
        self,
        *,
        logits: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        t, w = hard_bootstrap_targets(
            logits,
            targets,
            beta=self.beta,
            ignore_confident_foreground=self.ignore_confident_foreground,
            teacher_logits=teacher_logits,
        )
        if weights is not None:
            if weights.shape != logits.shape:
                raise ValueError(f"weights {tuple(weights.shape)} do not match logits {tuple(logits.shape)}")
            w = w * weights.to(w.dtype)
        return weighted_bce(logits, t, w, self.reduction)


# --------------------------------------------------------------------------- co-teaching


def forget_rate_schedule(step: int, *, forget_rate: float = 0.1, ramp_steps: int = 1000, exponent: float = 1.0) -> float:
    """Co-teaching forget rate at ``step``: forget_rate * min(1, step / ramp_steps) ** exponent.

    Han et al. 2018 (reference ``bhanML/Co-teaching``): linear ramp from 0 over T_k epochs
    (T_k = 10) to the noise rate; here the ramp is in optimizer steps. ``aeitel/self_deepmask``
    uses a constant 0.1 (``ramp_steps=0``).
    """
    if not 0.0 <= forget_rate < 1.0:
        raise ValueError(f"forget_rate must be in [0, 1), got {forget_rate}")
    if step < 0 or ramp_steps < 0:
        raise ValueError(f"step and ramp_steps must be >= 0, got {step}, {ramp_steps}")
    if ramp_steps == 0:
        return forget_rate
    return forget_rate * min(1.0, step / ramp_steps) ** exponent


def num_remembered(n: int, forget_rate: float) -> int:
    """int((1 - forget_rate) * n) as in the co-teaching reference, but at least 1 when n > 0."""
    return max(1, int((1.0 - forget_rate) * n)) if n > 0 else 0


def coteaching_select(
    loss_a: torch.Tensor, loss_b: torch.Tensor, forget_rate: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the small-loss samples each network picks for its peer.

    Returns (picked_by_a, picked_by_b): the ``num_remembered(N, forget_rate)`` indices of the
    smallest ``loss_a`` (resp. ``loss_b``). Network A then trains on ``picked_by_b`` and
    network B on ``picked_by_a`` (Han et al. 2018, Algorithm 1). Ties are broken by index
    (stable sort).
    """
    if loss_a.dim() != 1 or loss_a.shape != loss_b.shape:
        raise ValueError(f"per-sample losses must be matching 1-D tensors, got {tuple(loss_a.shape)}, {tuple(loss_b.shape)}")
    if loss_a.numel() == 0:
        raise ValueError("coteaching_select: empty batch")
    if not 0.0 <= forget_rate < 1.0:
        raise ValueError(f"forget_rate must be in [0, 1), got {forget_rate}")
    k = num_remembered(loss_a.numel(), forget_rate)
    pick_a = torch.sort(loss_a.detach(), stable=True).indices[:k]
    pick_b = torch.sort(loss_b.detach(), stable=True).indices[:k]
    return pick_a, pick_b


class CoTeachingLoss(nn.Module):
    """Co-teaching objective from two networks' per-sample losses.

    loss = mean(loss_a[picked_by_b]) + mean(loss_b[picked_by_a]); minimising it trains
    each network only on the samples its peer considers clean (small loss).
    ``forward`` returns (loss, info) with info = {'forget_rate', 'kept'}.
    """

    def __init__(self, *, forget_rate: float = 0.1, ramp_steps: int = 1000, exponent: float = 1.0) -> None:
        super().__init__()
        forget_rate_schedule(0, forget_rate=forget_rate, ramp_steps=ramp_steps)  # validates
        self.forget_rate = forget_rate
        self.ramp_steps = ramp_steps
        self.exponent = exponent

    def forward(
        self, *, loss_a: torch.Tensor, loss_b: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        rate = forget_rate_schedule(step, forget_rate=self.forget_rate, ramp_steps=self.ramp_steps, exponent=self.exponent)
        pick_a, pick_b = coteaching_select(loss_a, loss_b, rate)
        loss = loss_a[pick_b].mean() + loss_b[pick_a].mean()
        return loss, {"forget_rate": float(rate), "kept": float(pick_a.numel())}


def small_loss_mean(per_sample: torch.Tensor, forget_rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the ``num_remembered(N, forget_rate)`` smallest per-sample losses, and their indices.

    loss = mean_{i in S} l_i,  S = the k smallest l_i,  k = max(1, int((1 - r) N))

    The small-loss trick with one network (Han et al. 2018, Sec. 2: samples with a small loss are
    likely clean; co-teaching adds a peer so that a network does not confirm its own errors). A
    wholly wrong label -- another object, a fragment -- has a large loss once the network has
    learnt the objects it agrees with, so it is left out of the step. Ties are broken by index
    (stable sort); gradients flow only through the kept samples.
    """
    if per_sample.dim() != 1 or per_sample.numel() == 0:
        raise ValueError(f"small_loss_mean: per-sample losses must be a non-empty 1-D tensor, got {tuple(per_sample.shape)}")
    if not 0.0 <= forget_rate < 1.0:
        raise ValueError(f"forget_rate must be in [0, 1), got {forget_rate}")
    k = num_remembered(per_sample.numel(), forget_rate)
    picks = torch.sort(per_sample.detach(), stable=True).indices[:k]
    return per_sample[picks].mean(), picks
