"""Barlow Twins redundancy-reduction loss (Zbontar et al. 2021), used on pixel pairs by RegConsist.

    z~ = BN(z)  per feature dimension over the batch: (z - mean) / sqrt(var_biased + eps), no affine
    C  = z~1^T z~2 / N                                                         (D, D), in fp32
    L  = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2                      (RegConsist eq. 2)

Source: ``facebookresearch/barlowtwins/main.py`` (BatchNorm1d(affine=False), eps 1e-5, lambda 0.0051).
RegConsist eq. (3) writes C as a cosine over the batch without centring; we follow the reference code
(centred and variance-normalised), which is what "Barlow Twins" computes in practice; the paper uses
lambda = 0.005, our default. The reference all-reduces C inside ``forward``; here that is opt-in
(``distributed=True``) so the loss is testable in one process. Note that with ``distributed=True``
the per-dimension statistics are still local to each process (the reference relies on SyncBatchNorm
for global statistics). The loss does not depend on a common scale of either input, and with a
batch of one the variance is zero, so ``N >= 2`` is required.
"""

from __future__ import annotations

import torch
from torch import nn


class BarlowTwinsLoss(nn.Module):
    def __init__(self, *, lambda_offdiag: float = 0.005, eps: float = 1e-5, distributed: bool = False):
        super().__init__()
        if lambda_offdiag < 0:
            raise ValueError(f"lambda_offdiag must be >= 0, got {lambda_offdiag}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.lambda_offdiag = float(lambda_offdiag)
        self.eps = float(eps)
        self.distributed = bool(distributed)

    def _normalize(self, z: torch.Tensor) -> torch.Tensor:
        mean = z.mean(dim=0, keepdim=True)
        var = z.var(dim=0, unbiased=False, keepdim=True)
        return (z - mean) / torch.sqrt(var + self.eps)

    def cross_correlation(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """C (D, D) in fp32, after input validation."""
        if z1.dim() != 2 or z2.dim() != 2:
            raise ValueError(f"z1 and z2 must be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
        if z1.shape != z2.shape:
            raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
        n = z1.shape[0]
        if n < 2:
            raise ValueError(f"Barlow Twins needs a batch of at least 2 samples, got {n}")
        if z1.shape[1] < 1:
            raise ValueError("feature dimension must be >= 1")
        z1, z2 = z1.float(), z2.float()  # fp32: AMP half precision gives NaN in the normalisation
        if not (torch.isfinite(z1).all() and torch.isfinite(z2).all()):
            raise ValueError("z1 and z2 must be finite")
        c = self._normalize(z1).T @ self._normalize(z2)  # (D, D)
        if self.distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(c)
            n = n * torch.distributed.get_world_size()
        return c / n

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Scalar loss of paired features ``z1``, ``z2`` (N, D) (row b of each is one positive pair)."""
        c = self.cross_correlation(z1, z2)
        on_diag = (torch.diagonal(c) - 1.0).pow(2).sum()
        off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return on_diag + self.lambda_offdiag * off_diag
