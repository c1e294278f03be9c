"""Probabilistic keypoint heatmaps over descriptor images (ROS-free, torch).

Conventions: descriptor images are ``(B, D, H, W)``; a pixel is ``(x, y)`` =
``(column, row)`` with pixel centres at integer coordinates; heatmaps are
``(B, N, H, W)`` (``N`` queries per image).

Formulas (Adrian et al., "Cycle-Correspondence Loss", eq. 1-4, 8):

* heatmap scores  ``s_xy = -||d - D_xy||^2 / tau``  (eq. 1 with the squared
  L2 distance, as in pytorch-dense-correspondence; for unit descriptors this is
  ``(2 cos - 2) / tau``, i.e. eq. 2's cosine form up to a constant and a factor 2),
* ``P = softmax(s)`` over all ``H*W`` pixels (eq. 2), computed as
  ``log_softmax`` -- with ``tau = 0.03`` a plain ``exp`` underflows in float32
  and gives 0/0 = NaN (REFERENCES.md),
* spatial expectation ``mu = sum P * (x, y)`` (eq. 3-4) and variance
  ``sigma^2 = sum P * ((x, y) - mu)^2`` per axis,
* expected descriptor ``d_bar = normalize(sum P * D_xy)`` (eq. 8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_TEMPERATURE = 0.03


def _check_descriptors(descriptors: torch.Tensor, name: str = "descriptors") -> None:
    if descriptors.dim() != 4:
        raise ValueError(f"{name} must be (B, D, H, W), got shape {tuple(descriptors.shape)}")
    if descriptors.shape[2] == 0 or descriptors.shape[3] == 0:
        raise ValueError(f"{name} is an empty image: shape {tuple(descriptors.shape)}")


def _coordinate_grids(height: int, width: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (column) and y (row) coordinates of every pixel, each (H*W,) in ``like``'s dtype/device."""
    ys = torch.arange(height, dtype=like.dtype, device=like.device)
    xs = torch.arange(width, dtype=like.dtype, device=like.device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return grid_x.reshape(-1), grid_y.reshape(-1)


def heatmap_logits(queries: torch.Tensor, descriptors: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """Scores ``-||q - D_xy||^2 / tau``: queries (B, N, D), descriptors (B, D, H, W) -> (B, N, H, W)."""
    _check_descriptors(descriptors)
    if queries.dim() != 3 or queries.shape[0] != descriptors.shape[0] or queries.shape[2] != descriptors.shape[1]:
        raise ValueError(
            f"queries must be (B, N, D) matching descriptors {tuple(descriptors.shape)}, got {tuple(queries.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    b, d, h, w = descriptors.shape
    flat = descriptors.reshape(b, d, h * w)  # (B, D, HW)
    sq = (queries * queries).sum(-1, keepdim=True) + (flat * flat).sum(1, keepdim=True) - 2.0 * torch.bmm(queries, flat)
    return (-sq.clamp_min(0.0) / temperature).reshape(b, -1, h, w)  # (B, N, H, W)


def heatmap_log_probs(queries: torch.Tensor, descriptors: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """log P(x, y | q, D) (eq. 2) via a max-subtracted log_softmax over the H*W pixels -> (B, N, H, W)."""
    logits = heatmap_logits(queries, descriptors, temperature)
    b, n, h, w = logits.shape
    return F.log_softmax(logits.reshape(b, n, h * w), dim=-1).reshape(b, n, h, w)


def _moments(p: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (..., 2) and per-axis variance (..., 2) of normalised probabilities p (..., H*W)."""
    gx, gy = _coordinate_grids(height, width, p)
    mx = (p * gx).sum(-1)
    my = (p * gy).sum(-1)
    vx = (p * (gx - mx.unsqueeze(-1)) ** 2).sum(-1)
    vy = (p * (gy - my.unsqueeze(-1)) ** 2).sum(-1)
    return torch.stack([mx, my], -1), torch.stack([vx, vy], -1)


def expectation_and_variance_from_log_probs(log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial expectation (..., 2) as (x, y) and per-axis variance (..., 2) of normalised log-heatmaps (..., H, W)."""
    if log_probs.dim() < 2 or log_probs.shape[-1] == 0 or log_probs.shape[-2] == 0:
        raise ValueError(f"log_probs must be (..., H, W) with H, W > 0, got {tuple(log_probs.shape)}")
    h, w = log_probs.shape[-2:]
    p = log_probs.reshape(*log_probs.shape[:-2], h * w).exp()  # exp of a normalised log-prob is <= 1: no overflow
    return _moments(p, h, w)


def spatial_expectation(heatmap: torch.Tensor) -> torch.Tensor:
    """(x, y) expectation (..., 2) of a non-negative heatmap (..., H, W), renormalised to sum 1 first.

    Raises ValueError on negative or non-finite values or an all-zero heatmap.
    """
    return spatial_expectation_and_variance(heatmap)[0]


def spatial_expectation_and_variance(heatmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expectation (..., 2) and per-axis variance (..., 2) of a non-negative heatmap (..., H, W) after renormalising."""
    if heatmap.dim() < 2 or heatmap.shape[-1] == 0 or heatmap.shape[-2] == 0:
        raise ValueError(f"heatmap must be (..., H, W) with H, W > 0, got {tuple(heatmap.shape)}")
    if not torch.isfinite(heatmap).all() or (heatmap < 0).any():
        raise ValueError("heatmap must be finite and non-negative")
    total = heatmap.sum(dim=(-2, -1), keepdim=True)
    if (total <= 0).any():
        raise ValueError("heatmap has zero mass; cannot normalise")
    h, w = heatmap.shape[-2:]
    p = (heatmap / total).reshape(*heatmap.shape[:-2], h * w)
    return _moments(p, h, w)


def spatial_expectation_from_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expectation and variance of ``softmax(logits)`` over the last two dims; stable for any logit scale."""
    if logits.dim() < 2:
        raise ValueError(f"logits must be (..., H, W), got {tuple(logits.shape)}")
    h, w = logits.shape[-2:]
    lp = F.log_softmax(logits.reshape(*logits.shape[:-2], h * w), dim=-1).reshape(logits.shape)
    return expectation_and_variance_from_log_probs(lp)


def expected_descriptor(log_probs: torch.Tensor, descriptors: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """``d_bar = sum_xy P_xy D_xy`` (eq. 8), L2-normalised when ``normalize``: (B, N, H, W), (B, D, H, W) -> (B, N, D)."""
    _check_descriptors(descriptors)
    b, d, h, w = descriptors.shape
    if log_probs.shape[0] != b or log_probs.shape[-2:] != (h, w):
        raise ValueError(f"log_probs {tuple(log_probs.shape)} do not match descriptors {tuple(descriptors.shape)}")
    p = log_probs.reshape(b, -1, h * w).exp()  # (B, N, HW)
    out = torch.bmm(p, descriptors.reshape(b, d, h * w).transpose(1, 2))  # (B, N, D)
    return F.normalize(out, dim=-1) if normalize else out


def sample_descriptors(descriptors: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinearly sampled descriptors at sub-pixel (x, y) points: (B, D, H, W), (B, N, 2) -> (B, N, D).

    Points are in the descriptor image's own pixel coordinates (centres at integers,
    ``align_corners=True``); points outside are clamped to the border.
    """
    _check_descriptors(descriptors)
    if points.dim() != 3 or points.shape[-1] != 2 or points.shape[0] != descriptors.shape[0]:
        raise ValueError(f"points must be (B, N, 2), got {tuple(points.shape)}")
    h, w = descriptors.shape[-2:]
    gx = 2.0 * points[..., 0] / max(w - 1, 1) - 1.0
    gy = 2.0 * points[..., 1] / max(h - 1, 1) - 1.0
    grid = torch.stack([gx, gy], -1).unsqueeze(2).to(descriptors.dtype)  # (B, N, 1, 2)
    out = F.grid_sample(descriptors, grid, mode="bilinear", padding_mode="border", align_corners=True)  # (B, D, N, 1)
    return out[..., 0].transpose(1, 2)


def image_to_grid(points: torch.Tensor, stride: float) -> torch.Tensor:
    """Image pixel coordinates -> coordinates in a stride-``s`` feature grid: ``(p + 0.5) / s - 0.5``."""
    return (points + 0.5) / stride - 0.5


def grid_to_image(points: torch.Tensor, stride: float) -> torch.Tensor:
    """Inverse of :func:`image_to_grid`: ``(g + 0.5) * s - 0.5``."""
    return (points + 0.5) * stride - 0.5
