import numpy as np
import pytest
import torch

from selfsup_perception.core.learning.losses.alignment import (
    FeatureAlignmentLoss,
    choose_mix_classes,
    class_mix,
    cross_appearance_mix,
    gaussian_mmd2,
)


def feats(seed, shapes=((2, 4, 6, 5), (2, 8, 3, 3))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]


def test_cosine_alignment_matches_plain_reference_and_is_scale_invariant():
    a, b = feats(0), feats(1)
    loss = FeatureAlignmentLoss(metric="cosine")(features_a=a, features_b=b)
    ref = []
    for fa, fb in zip(a, b):
        va = fa.permute(0, 2, 3, 1).reshape(-1, fa.shape[1]).numpy()
        vb = fb.permute(0, 2, 3, 1).reshape(-1, fb.shape[1]).numpy()
        cos = (va * vb).sum(1) / np.linalg.norm(va, axis=1) / np.linalg.norm(vb, axis=1)
        ref.append(np.mean(1 - cos))
    assert loss.item() == pytest.approx(np.mean(ref), rel=1e-10)
    scaled = FeatureAlignmentLoss(metric="cosine")(features_a=[3.0 * f for f in a], features_b=b)
    assert scaled.item() == pytest.approx(loss.item(), rel=1e-10)
    assert FeatureAlignmentLoss()(features_a=a, features_b=[2.0 * f for f in a]).item() == pytest.approx(0.0, abs=1e-12)


def test_l2_alignment_and_layer_weights():
    a, b = feats(0), feats(1)
    l2 = [((fa - fb) ** 2).mean().item() for fa, fb in zip(a, b)]
    assert FeatureAlignmentLoss(metric="l2")(features_a=a, features_b=b).item() == pytest.approx(np.mean(l2))
    w = FeatureAlignmentLoss(metric="l2", layer_weights=[3.0, 1.0])(features_a=a, features_b=b)
    assert w.item() == pytest.approx((3 * l2[0] + l2[1]) / 4)


def test_mmd_matches_plain_reference_and_zero_for_identical_sets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=g, dtype=torch.float64)
    y = torch.randn(15, 3, generator=g, dtype=torch.float64) + 1.0
    s = 0.7
    k = lambda u, v: np.exp(-((u[:, None] - v[None]) ** 2).sum(-1) / (2 * s * s))  # noqa: E731
    xn, yn = x.numpy(), y.numpy()
    ref = k(xn, xn).mean() + k(yn, yn).mean() - 2 * k(xn, yn).mean()
    assert gaussian_mmd2(x, y, s).item() == pytest.approx(ref, rel=1e-9)
    assert gaussian_mmd2(x, x, s).item() == pytest.approx(0.0, abs=1e-12)
    assert gaussian_mmd2(x, y).item() > gaussian_mmd2(x, x + 0.01).item()
    a = feats(2)
    assert FeatureAlignmentLoss(metric="mmd")(features_a=a, features_b=a).item() == pytest.approx(0.0, abs=1e-12)


def test_alignment_input_validation():
    a, b = feats(0), feats(1)
    with pytest.raises(ValueError, match="metric"):
        FeatureAlignmentLoss(metric="kl")
    with pytest.raises(ValueError, match="layers"):
        FeatureAlignmentLoss()(features_a=a, features_b=b[:1])
    with pytest.raises(ValueError, match="shapes"):
        FeatureAlignmentLoss()(features_a=a, features_b=[b[1], b[0]])


def test_classmix_class_count_excludes_ignore_label():
    rng = np.random.default_rng(0)
    assert len(choose_mix_classes(np.array([[0, 1, 2], [3, 4, 4]]), rng)) == 3  # 5 classes -> 3
    assert len(choose_mix_classes(np.array([[0, 1], [2, 3]]), rng)) == 2  # 4 -> 2
    for _ in range(20):
        chosen = choose_mix_classes(np.array([[0, 1, 255], [2, 3, 255]]), rng)  # ignore excluded: 4 -> 2
        assert len(chosen) == 2 and 255 not in chosen
    assert len(choose_mix_classes(np.full((2, 2), 255), rng)) == 0


def test_classmix_image_is_maskwise_copy():
    rng = np.random.default_rng(1)
    sem = np.array([[1, 1, 2], [3, 3, 2], [4, 4, 4]])
    a = torch.full((3, 3, 3), 1.0)
    b = torch.full((3, 3, 3), 2.0)
    mixed, mask, classes = class_mix(a, b, sem, rng)
    assert mask.numpy().tolist() == np.isin(sem, classes).tolist()
    assert torch.equal(mixed, mask.float() * a + (1 - mask.float()) * b)
    m01, m10, m = cross_appearance_mix(a, b, sem, np.random.default_rng(1))
    assert torch.equal(m, mask) and torch.equal(m01 + m10, a + b)
    with pytest.raises(ValueError):
        class_mix(a, b[:, :2], sem, rng)
