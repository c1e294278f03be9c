"""Cross-appearance feature alignment and ClassMix-style mixing.

Source: Montalvo et al., "Leveraging Contrastive Learning for Semantic
Segmentation with Consistent Labels Across Varying Appearances" (CARLA-4AGT):
features from several layers of the network, computed for two pixel-aligned
appearances of the same scene, are pulled together by an alignment loss
(cosine, L2 or MMD; cosine reported best) added to the task loss; DACS-style
ClassMix creates semantically aligned mixtures of two appearances.
ClassMix details follow DACS / DAFormer ``dacs_transforms.py`` (REFERENCES.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ALIGNMENT_METRICS = ("cosine", "l2", "mmd")


def _cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean over pixels of ``1 - cos(a_p, b_p)`` (cosine over channels) for (B, C, H, W) maps."""
    return (1.0 - F.cosine_similarity(a, b, dim=1, eps=1e-8)).mean()


def _l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean over pixels of ``||a_p - b_p||^2 / C`` (= mean squared error)."""
    return F.mse_loss(a, b)


def gaussian_mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> torch.Tensor:
    """Biased MMD^2 with k(u, v) = exp(-||u - v||^2 / (2 s^2)) between samples x (N, C) and y (M, C).

    ``MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y)`` (Gretton et al. 2012, V-statistic).
    ``bandwidth=None`` uses the median heuristic on the pooled pairwise distances (detached).
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1] or len(x) == 0 or len(y) == 0:
        raise ValueError(f"x and y must be non-empty (N, C) and (M, C); got {tuple(x.shape)}, {tuple(y.shape)}")
    z = torch.cat([x, y], 0)
    d2 = torch.cdist(z, z).pow(2)  # (N+M, N+M)
    if bandwidth is None:
        off = d2.detach()[~torch.eye(len(z), dtype=torch.bool, device=z.device)]
        s2 = 0.5 * off.median().clamp_min(1e-12)  # 2 s^2 = median squared distance
    else:
        if bandwidth <= 0:
            raise ValueError("bandwidth must be positive")
        s2 = torch.tensor(bandwidth**2, dtype=z.dtype, device=z.device)
    k = torch.exp(-d2 / (2.0 * s2))
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2.0 * k[:n, n:].mean()


class FeatureAlignmentLoss(nn.Module):
    """Multi-layer feature alignment between two pixel-aligned appearances of one scene.

    ``L = sum_l w_l * dist(F_l(appearance 1), F_l(appearance 2)) / sum_l w_l`` with ``dist``:

    * ``'cosine'`` (default): mean over pixels of ``1 - cos`` along channels,
    * ``'l2'``: mean squared difference,
    * ``'mmd'``: Gaussian-kernel MMD^2 between the two sets of pixel features (per layer, up to
      ``mmd_max_pixels`` pixels taken on a regular stride; distribution-level, not pixel-aligned).
    """

    def __init__(self, *, metric: str = "cosine", layer_weights: Sequence[float] | None = None,
                 mmd_bandwidth: float | None = None, mmd_max_pixels: int = 256):
        super().__init__()
        if metric not in ALIGNMENT_METRICS:
            raise ValueError(f"metric must be one of {ALIGNMENT_METRICS}, got {metric!r}")
        if mmd_max_pixels < 2:
            raise ValueError("mmd_max_pixels must be >= 2")
        self.metric = metric
        self.layer_weights = None if layer_weights is None else [float(w) for w in layer_weights]
        self.mmd_bandwidth, self.mmd_max_pixels = mmd_bandwidth, mmd_max_pixels

    def _layer(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.metric == "cosine":
            return _cosine_distance(a, b)
        if self.metric == "l2":
            return _l2_distance(a, b)
        xa = a.permute(0, 2, 3, 1).reshape(-1, a.shape[1])  # (B*H*W, C)
        xb = b.permute(0, 2, 3, 1).reshape(-1, b.shape[1])
        step = max(1, len(xa) // self.mmd_max_pixels)
        return gaussian_mmd2(xa[::step], xb[::step], self.mmd_bandwidth)

    def forward(self, *, features_a: Sequence[torch.Tensor], features_b: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features_a) == 0 or len(features_a) != len(features_b):
            raise ValueError(f"need the same non-zero number of layers, got {len(features_a)} and {len(features_b)}")
        weights = self.layer_weights or [1.0] * len(features_a)
        if len(weights) != len(features_a):
            raise ValueError(f"{len(weights)} layer weights for {len(features_a)} layers")
        total = features_a[0].new_zeros(())
        for w, fa, fb in zip(weights, features_a, features_b):
            if fa.shape != fb.shape or fa.dim() != 4:
                raise ValueError(f"layer features must be equal (B, C, H, W) shapes, got {tuple(fa.shape)} and {tuple(fb.shape)}")
            total = total + w * self._layer(fa, fb)
        return total / sum(weights)


def choose_mix_classes(semantic: np.ndarray, rng: np.random.Generator, ignore_index: int | None = 255) -> np.ndarray:
    """DACS ClassMix class choice: of the n classes present (ignore label excluded) pick (n + n % 2) / 2 at random."""
    classes = np.unique(np.asarray(semantic))
    if ignore_index is not None:
        classes = classes[classes != ignore_index]
    n = len(classes)
    if n == 0:
        return classes
    k = (n + n % 2) // 2
    return np.sort(rng.choice(classes, size=k, replace=False))


def class_mix(image_0: torch.Tensor, image_1: torch.Tensor, semantic_0: np.ndarray | torch.Tensor,
              rng: np.random.Generator, ignore_index: int | None = 255) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """ClassMix (DACS): ``mixed = M * image_0 + (1 - M) * image_1``, M = pixels of image_0 in the chosen classes.

    image_0, image_1: (C, H, W) tensors; semantic_0: (H, W) labels of image_0. Returns (mixed, mask (H, W) bool, classes).
    """
    sem = semantic_0.cpu().numpy() if isinstance(semantic_0, torch.Tensor) else np.asarray(semantic_0)
    if image_0.shape != image_1.shape or image_0.dim() != 3 or sem.shape != tuple(image_0.shape[1:]):
        raise ValueError(f"need equal (C, H, W) images and (H, W) labels; got {tuple(image_0.shape)}, "
                         f"{tuple(image_1.shape)}, {sem.shape}")
    classes = choose_mix_classes(sem, rng, ignore_index)
    mask = torch.from_numpy(np.isin(sem, classes)).to(image_0.device)
    mixed = torch.where(mask.unsqueeze(0), image_0, image_1)
    return mixed, mask, classes


def cross_appearance_mix(appearance_0: torch.Tensor, appearance_1: torch.Tensor, semantic: np.ndarray | torch.Tensor,
                         rng: np.random.Generator, ignore_index: int | None = 255) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two complementary ClassMix images of two pixel-aligned appearances of one scene (same labels for both).

    Returns (M * a0 + (1 - M) * a1, M * a1 + (1 - M) * a0, M); both mixes stay pixel-aligned with the labels.
    """
    mixed_01, mask, _ = class_mix(appearance_0, appearance_1, semantic, rng, ignore_index)
    mixed_10 = torch.where(mask.unsqueeze(0), appearance_1, appearance_0)
    return mixed_01, mixed_10, mask
