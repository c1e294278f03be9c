"""Barlow Twins loss: REFERENCES.md test vectors, a plain numpy reference, invariances, errors."""

import numpy as np
import pytest
import torch

from selfsup_perception.core.learning.losses.barlow_twins import BarlowTwinsLoss


def reference_loss(z1: np.ndarray, z2: np.ndarray, lam: float = 0.005, eps: float = 1e-5) -> float:
    n, d = z1.shape
    a = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + eps)  # np.var is biased
    b = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + eps)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lam * c**2
    return loss


FIRST = [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]


def test_reference_vectors():
    loss = BarlowTwinsLoss(lambda_offdiag=0.005, eps=1e-5)
    z = torch.tensor(FIRST)
    assert loss(z, z).item() == pytest.approx(8e-10, rel=0.01)
    z = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [2.0, 2.0], [-2.0, -2.0]])
    c = loss.cross_correlation(z, z)
    assert (c.sum() - torch.diagonal(c).sum()).item() == pytest.approx(2.0, rel=1e-4)
    assert loss(z, z).item() == pytest.approx(0.0100, abs=1e-5)
    z = torch.tensor(FIRST)
    assert loss(z, -z).item() == pytest.approx(7.99984, abs=1e-5)


def test_gaussian_vectors():
    g = torch.Generator().manual_seed(0)
    loss = BarlowTwinsLoss()
    z1, z2 = torch.randn(8192, 64, generator=g), torch.randn(8192, 64, generator=g)
    assert loss(z1, z2).item() == pytest.approx(64.0, rel=0.01)
    z = torch.randn(81920, 64, generator=g)
    assert loss(z, z).item() == pytest.approx(2.5e-4, rel=0.1)


def test_matches_plain_reference_and_invariances():
    rng = np.random.default_rng(1)
    z1 = rng.normal(size=(12, 5))
    z2 = z1 @ rng.normal(size=(5, 5)) + 0.3 * rng.normal(size=(12, 5))
    loss = BarlowTwinsLoss(lambda_offdiag=0.02)
    t1, t2 = torch.tensor(z1), torch.tensor(z2)
    value = loss(t1, t2).item()
    assert value == pytest.approx(reference_loss(z1, z2, lam=0.02), rel=1e-5)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    assert loss(t1[perm], t2[perm]).item() == pytest.approx(value, rel=1e-5)  # batch order
    assert loss(t2, t1).item() == pytest.approx(value, rel=1e-5)  # symmetric
    assert loss(3.0 * t1 + 1.0, t2).item() == pytest.approx(value, rel=1e-4)  # scale/shift per dim


def test_fp32_and_gradients():
    z1 = torch.randn(16, 4, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(16, 4).half()
    out = BarlowTwinsLoss()(z1, z2)
    assert out.dtype == torch.float32
    out.backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "z1, z2, message",
    [
        (torch.zeros(1, 4), torch.zeros(1, 4), "at least 2"),
        (torch.zeros(4, 3), torch.zeros(4, 2), "same shape"),
        (torch.zeros(4), torch.zeros(4), r"\(N, D\)"),
        (torch.full((4, 2), float("nan")), torch.zeros(4, 2), "finite"),
    ],
)
def test_bad_inputs(z1, z2, message):
    with pytest.raises(ValueError, match=message):
        BarlowTwinsLoss()(z1, z2)
    with pytest.raises(ValueError, match="lambda"):
        BarlowTwinsLoss(lambda_offdiag=-1.0)
