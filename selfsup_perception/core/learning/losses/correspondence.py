"""Correspondence losses for dense descriptors: distributional, identical-view, cycle-correspondence, geometric.

All losses take descriptor images ``(B, D, H, W)`` (L2-normalised along D) and
keypoints ``(B, N, 2)`` as ``(x, y)`` in the *descriptor image's own* pixel
grid (for a stride-8 network convert image pixels with
:func:`selfsup_perception.core.descriptors.spatial_expectation.image_to_grid`).
An optional ``valid`` mask ``(B, N)`` bool excludes padded keypoints.

Sources: Adrian et al., "Cycle-Correspondence Loss: Learning Dense
View-Invariant Visual Features from Unlabeled and Unordered RGB Images"
(eq. 1-10); Florence, PhD thesis (distributional loss, KL form as in
REFERENCES.md); Florence et al., "Dense Object Nets" (pixelwise contrastive loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from selfsup_perception.core.descriptors.spatial_expectation import (
    DEFAULT_TEMPERATURE,
    expectation_and_variance_from_log_probs,
    expected_descriptor,
    heatmap_log_probs,
    sample_descriptors,
)


def _check_inputs(descriptors: list[torch.Tensor], keypoints: list[torch.Tensor], valid: torch.Tensor | None) -> torch.Tensor:
    """Validate shapes; return the valid mask (B, N) bool."""
    b, d = descriptors[0].shape[:2]
    for t in descriptors:
        if t.dim() != 4 or t.shape[0] != b or t.shape[1] != d:
            raise ValueError(f"descriptor images must all be (B, D, H, W) with B={b}, D={d}; got {tuple(t.shape)}")
        if t.shape[2] == 0 or t.shape[3] == 0:
            raise ValueError("empty descriptor image")
    n = keypoints[0].shape[1] if keypoints[0].dim() == 3 else -1
    for k in keypoints:
        if k.dim() != 3 or k.shape != (b, n, 2):
            raise ValueError(f"keypoints must be (B, N, 2) with B={b}; got {tuple(k.shape)}")
        if not torch.isfinite(k).all():
            raise ValueError("keypoints contain NaN or inf")
    if n == 0:
        raise ValueError("no keypoints given (N = 0)")
    if valid is None:
        return torch.ones(b, n, dtype=torch.bool, device=keypoints[0].device)
    if valid.shape != (b, n):
        raise ValueError(f"valid must be (B, N) = {(b, n)}, got {tuple(valid.shape)}")
    return valid.bool()


def gaussian_log_target(points: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """log q: normalised 2-D Gaussian (std ``sigma`` px) centred at points (B, N, 2) over an H x W grid -> (B, N, H, W)."""
    ys = torch.arange(height, dtype=points.dtype, device=points.device)
    xs = torch.arange(width, dtype=points.dtype, device=points.device)
    dx2 = (xs.view(1, 1, 1, width) - points[..., 0, None, None]) ** 2  # (B, N, 1, W)
    dy2 = (ys.view(1, 1, height, 1) - points[..., 1, None, None]) ** 2  # (B, N, H, 1)
    logits = -(dx2 + dy2) / (2.0 * sigma**2)  # (B, N, H, W)
    b, n = points.shape[:2]
    return torch.log_softmax(logits.reshape(b, n, -1), -1).reshape(b, n, height, width)


class DistributionalLoss(nn.Module):
    """Distributional loss A -> B from known correspondences.

    ``kind='kl'`` (default, Florence's distributional loss as in REFERENCES.md):
    ``p = softmax(-||d_A(k_A) - D_B||^2 / tau)``, ``q`` = normalised Gaussian
    (std ``sigma`` px) at ``k_B``, loss = mean over valid keypoints of
    ``KL(q || p) = sum q (log q - log p)``.
    ``kind='expectation'``: eq. 5 of the cycle paper, mean ``||E_p[(x, y)] - k_B||_2``
    (the paper sums; we average so the scale does not depend on N).
    """

    def __init__(self, *, temperature: float = DEFAULT_TEMPERATURE, sigma: float = 1.0, kind: str = "kl"):
        super().__init__()
        if temperature <= 0 or sigma <= 0:
            raise ValueError("temperature and sigma must be positive")
        if kind not in ("kl", "expectation"):
            raise ValueError(f"kind must be 'kl' or 'expectation', got {kind!r}")
        self.temperature, self.sigma, self.kind = temperature, sigma, kind

    def forward(self, *, descriptors_a: torch.Tensor, descriptors_b: torch.Tensor, keypoints_a: torch.Tensor,
                keypoints_b: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        valid = _check_inputs([descriptors_a, descriptors_b], [keypoints_a, keypoints_b], valid)
        if not valid.any():
            return descriptors_a.sum() * 0.0
        queries = sample_descriptors(descriptors_a, keypoints_a)  # (B, N, D)
        log_p = heatmap_log_probs(queries, descriptors_b, self.temperature)  # (B, N, Hb, Wb)
        if self.kind == "expectation":
            mean, _ = expectation_and_variance_from_log_probs(log_p)
            per_kp = torch.sqrt(((mean - keypoints_b) ** 2).sum(-1) + 1e-12)
        else:
            log_q = gaussian_log_target(keypoints_b, *descriptors_b.shape[-2:], self.sigma)
            per_kp = (log_q.exp() * (log_q - log_p)).sum(dim=(-2, -1))  # (B, N)
        return per_kp[valid].mean()


class IdenticalViewLoss(DistributionalLoss):
    """Identical-view pre-training (eq. 10): ``L_distributional, A -> A_hat`` where A_hat is an augmentation of A.

    Same arguments as :class:`DistributionalLoss`; ``descriptors_b`` / ``keypoints_b``
    are the augmented view and the known locations of ``keypoints_a`` in it.
    """


@dataclass
class CycleTerms:
    """Per-keypoint intermediate values of the cycle loss (for tests, logging and debugging)."""

    errors: torch.Tensor  # (B, N) ||k*_Ahat - k_Ahat||_2, differentiable
    variances: torch.Tensor  # (B, N) X_i = chi_B + chi_Ahat, detached
    kept: torch.Tensor  # (B, N) bool: valid and within the q most confident
    weights: torch.Tensor  # (B, N) 1 / (1 + X_i) (or 1 without variance scaling), 0 where not kept; detached
    predicted_b: torch.Tensor  # (B, N, 2) spatial expectation in B
    predicted_a_hat: torch.Tensor  # (B, N, 2) spatial expectation in A_hat


def confident_quantile_mask(variances: torch.Tensor, valid: torch.Tensor, quantile: float) -> torch.Tensor:
    """Keep the ``ceil(q * n_valid)`` valid entries with the smallest variance per row (at least one if any is valid)."""
    b, n = variances.shape
    masked = torch.where(valid, variances, torch.full_like(variances, float("inf")))
    order = torch.argsort(masked, dim=1)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(n, device=variances.device).expand(b, n))
    n_valid = valid.sum(1, keepdim=True)
    n_keep = torch.where(n_valid > 0, torch.clamp(torch.ceil(quantile * n_valid - 1e-9), min=1), 0)
    return (ranks < n_keep) & valid


class CycleCorrespondenceLoss(nn.Module):
    """Cycle-correspondence loss (Adrian et al., eq. 6-9, Sec. III-C).

    For keypoints ``k_A`` sampled in A:

    1. ``P_B = softmax(-||d_A(k_A) - D_B||^2 / tau)`` over B, ``k*_B = E[P_B]``, ``chi_B = var_x + var_y``;
    2. expected descriptor ``d_bar_B = normalize(sum P_B D_B)`` (eq. 8);
    3. ``P_Ahat = softmax(-||d_bar_B - D_Ahat||^2 / tau)`` over A_hat (an augmented A), ``k*_Ahat = E[P_Ahat]``;
    4. error ``l_i = ||k*_Ahat - k_Ahat||_2`` with ``k_Ahat`` the known location of ``k_A`` in A_hat (eq. 7);
    5. ``X_i = chi_B + chi_Ahat`` *detached*; keep the ``q`` fraction of valid keypoints with the smallest
       ``X_i`` per image pair (quantile drop, q = 35 % in the paper);
    6. loss = ``sum_kept l_i / (1 + X_i)`` (eq. 9) divided by the number of kept keypoints (the paper sums;
       we average so the scale does not depend on N or q).

    Variances are in squared descriptor-grid pixels (the paper trains on the stride-8 grid as well).
    """

    def __init__(self, *, temperature: float = DEFAULT_TEMPERATURE, quantile: float = 0.35, variance_scaling: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        self.temperature, self.quantile, self.variance_scaling = temperature, quantile, variance_scaling

    def terms(self, *, descriptors_a: torch.Tensor, descriptors_b: torch.Tensor, descriptors_a_hat: torch.Tensor,
              keypoints_a: torch.Tensor, keypoints_a_hat: torch.Tensor, valid: torch.Tensor | None = None) -> CycleTerms:
        valid = _check_inputs([descriptors_a, descriptors_b, descriptors_a_hat], [keypoints_a, keypoints_a_hat], valid)
        queries = sample_descriptors(descriptors_a, keypoints_a)  # (B, N, D)
        log_p_b = heatmap_log_probs(queries, descriptors_b, self.temperature)  # (B, N, Hb, Wb)
        mean_b, var_b = expectation_and_variance_from_log_probs(log_p_b)
        d_bar = expected_descriptor(log_p_b, descriptors_b, normalize=True)  # (B, N, D)
        log_p_ah = heatmap_log_probs(d_bar, descriptors_a_hat, self.temperature)  # (B, N, Ha, Wa)
        mean_ah, var_ah = expectation_and_variance_from_log_probs(log_p_ah)
        errors = torch.sqrt(((mean_ah - keypoints_a_hat) ** 2).sum(-1) + 1e-12)  # (B, N); eps keeps d/dx finite at 0
        variances = (var_b.sum(-1) + var_ah.sum(-1)).detach()  # X_i, no gradient (Sec. III-C.3)
        kept = confident_quantile_mask(variances, valid, self.quantile)
        scale = 1.0 / (1.0 + variances) if self.variance_scaling else torch.ones_like(variances)
        weights = torch.where(kept, scale, torch.zeros_like(scale))
        return CycleTerms(errors, variances, kept, weights, mean_b, mean_ah)

    def forward(self, *, descriptors_a: torch.Tensor, descriptors_b: torch.Tensor, descriptors_a_hat: torch.Tensor,
                keypoints_a: torch.Tensor, keypoints_a_hat: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        t = self.terms(descriptors_a=descriptors_a, descriptors_b=descriptors_b, descriptors_a_hat=descriptors_a_hat,
                       keypoints_a=keypoints_a, keypoints_a_hat=keypoints_a_hat, valid=valid)
        n_kept = t.kept.sum()
        if n_kept == 0:
            return descriptors_a.sum() * 0.0
        return (t.weights * t.errors).sum() / n_kept


class PixelwiseContrastiveLoss(nn.Module):
    """Dense Object Nets pixelwise contrastive loss (Florence et al. 2018, Schmidt et al. 2017).

    ``L = mean_matches ||d_A - d_B||^2 + mean_nonmatches max(0, M - ||d_A - d_B'||)^2`` where non-matches pair each
    ``k_A`` with a random pixel of B farther than ``min_nonmatch_distance`` px from ``k_B``. (DON additionally
    divides the hinge term by the number of *active* non-matches; we use the plain mean for a stable scale.)
    """

    def __init__(self, *, margin: float = 0.5, num_nonmatches: int = 4, min_nonmatch_distance: float = 2.0):
        super().__init__()
        if margin <= 0 or num_nonmatches < 1:
            raise ValueError("margin must be positive and num_nonmatches >= 1")
        self.margin, self.num_nonmatches, self.min_nonmatch_distance = margin, num_nonmatches, min_nonmatch_distance

    def forward(self, *, descriptors_a: torch.Tensor, descriptors_b: torch.Tensor, keypoints_a: torch.Tensor,
                keypoints_b: torch.Tensor, valid: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        valid = _check_inputs([descriptors_a, descriptors_b], [keypoints_a, keypoints_b], valid)
        if not valid.any():
            return descriptors_a.sum() * 0.0
        b, n = valid.shape
        h, w = descriptors_b.shape[-2:]
        da = sample_descriptors(descriptors_a, keypoints_a)  # (B, N, D)
        db = sample_descriptors(descriptors_b, keypoints_b)
        match = ((da - db) ** 2).sum(-1)[valid].mean()
        m = self.num_nonmatches
        rand = torch.rand(b, n * m, 2, generator=generator, device=keypoints_b.device)
        nonmatch = rand * torch.tensor([w - 1, h - 1], dtype=keypoints_b.dtype, device=keypoints_b.device)
        db_non = sample_descriptors(descriptors_b, nonmatch).reshape(b, n, m, -1)  # (B, N, M, D)
        far = (nonmatch.reshape(b, n, m, 2) - keypoints_b.unsqueeze(2)).norm(dim=-1) > self.min_nonmatch_distance
        dist = torch.sqrt(((da.unsqueeze(2) - db_non) ** 2).sum(-1) + 1e-12)
        hinge = torch.clamp(self.margin - dist, min=0.0) ** 2
        use = far & valid.unsqueeze(-1)
        non = hinge[use].mean() if use.any() else hinge.sum() * 0.0
        return match + non


class GeometricCorrespondenceLoss(nn.Module):
    """Supervised loss from geometric correspondences (depth + poses), for comparison with the self-supervised ones.

    ``kind='distributional'`` (default): :class:`DistributionalLoss` on the given matches -- the paper trains its
    geometric baselines (MO-maskless, MO Collage) with the distributional loss. ``kind='contrastive'``: the
    Dense Object Nets pixelwise contrastive loss (:class:`PixelwiseContrastiveLoss`).
    """

    def __init__(self, *, kind: str = "distributional", temperature: float = DEFAULT_TEMPERATURE, sigma: float = 1.0,
                 margin: float = 0.5, num_nonmatches: int = 4):
        super().__init__()
        if kind not in ("distributional", "contrastive"):
            raise ValueError(f"kind must be 'distributional' or 'contrastive', got {kind!r}")
        self.kind = kind
        self.inner: nn.Module = (
            DistributionalLoss(temperature=temperature, sigma=sigma)
            if kind == "distributional"
            else PixelwiseContrastiveLoss(margin=margin, num_nonmatches=num_nonmatches)
        )

    def forward(self, *, descriptors_a: torch.Tensor, descriptors_b: torch.Tensor, keypoints_a: torch.Tensor,
                keypoints_b: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner(descriptors_a=descriptors_a, descriptors_b=descriptors_b, keypoints_a=keypoints_a,
                          keypoints_b=keypoints_b, valid=valid)
