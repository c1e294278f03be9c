"""Focal loss against a plain per-pixel reference, cross-entropy at gamma = 0, ignore index, weights."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup_perception.core.learning.losses.focal import FocalLoss


def reference(logits, target, gamma, ignore_index, weights=None):
    num, den = 0.0, 0.0
    b, c, h, w = logits.shape
    for n in range(b):
        for y in range(h):
            for x in range(w):
                t = int(target[n, y, x])
                if t == ignore_index:
                    continue
                z = [float(logits[n, k, y, x]) for k in range(c)]
                m = max(z)
                p = math.exp(z[t] - m) / sum(math.exp(v - m) for v in z)
                wt = 1.0 if weights is None else weights[t]
                num += -wt * (1 - p) ** gamma * math.log(p)
                den += wt
    return num / den


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 4, 5, 6, generator=g)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    target[0, :2] = 255
    return logits, target


def test_matches_reference(data):
    logits, target = data
    for gamma in (0.5, 2.0):
        got = FocalLoss(gamma=gamma, ignore_index=255)(logits, target).item()
        assert got == pytest.approx(reference(logits, target, gamma, 255), rel=1e-5)
    w = [0.5, 1.0, 2.0, 0.1]
    got = FocalLoss(gamma=2.0, ignore_index=255, class_weights=w)(logits, target).item()
    assert got == pytest.approx(reference(logits, target, 2.0, 255, w), rel=1e-5)


def test_gamma_zero_is_cross_entropy(data):
    logits, target = data
    w = torch.tensor([0.5, 1.0, 2.0, 0.1])
    got = FocalLoss(gamma=0.0, ignore_index=255, class_weights=w)(logits, target)
    assert got.item() == pytest.approx(F.cross_entropy(logits, target, weight=w, ignore_index=255).item(), rel=1e-6)


def test_focusing_and_ignore(data):
    logits, target = data
    # Focal <= CE everywhere; a confident correct pixel contributes ~0 with gamma = 2.
    assert FocalLoss(gamma=2.0, ignore_index=255)(logits, target) < FocalLoss(gamma=0.0, ignore_index=255)(logits, target)
    confident = torch.zeros(1, 3, 1, 1)
    confident[0, 1] = 10.0
    assert FocalLoss()(confident, torch.tensor([[[1]]])).item() < 1e-12
    # Changing logits at ignored pixels changes nothing; all-ignored gives 0 with a gradient.
    l2 = logits.clone()
    l2[0, :, :2] += 100.0
    assert FocalLoss(ignore_index=255)(l2, target).item() == pytest.approx(FocalLoss(ignore_index=255)(logits, target).item())
    x = logits.clone().requires_grad_(True)
    out = FocalLoss(ignore_index=255)(x, torch.full_like(target, 255))
    out.backward()
    assert out.item() == 0.0 and x.grad is not None


def test_bad_inputs(data):
    logits, target = data
    with pytest.raises(ValueError, match="does not match"):
        FocalLoss()(logits, target[:, :3])
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        FocalLoss()(logits, torch.full_like(target, 7))
    with pytest.raises(ValueError, match="integer"):
        FocalLoss()(logits, target.float())
    with pytest.raises(ValueError, match="3 entries for 4 classes"):
        FocalLoss(class_weights=[1.0, 1.0, 1.0])(logits, target)
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1.0)
