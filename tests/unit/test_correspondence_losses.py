import math

import pytest
import torch
import torch.nn.functional as F

from selfsup_perception.core.learning.losses.correspondence import (
    CycleCorrespondenceLoss,
    DistributionalLoss,
    GeometricCorrespondenceLoss,
    IdenticalViewLoss,
    PixelwiseContrastiveLoss,
    confident_quantile_mask,
)

H, W = 6, 7


def one_hot_field(ids: torch.Tensor, dim: int) -> torch.Tensor:
    """Perfect descriptor image: pixel with scene-point id k gets e_k; id -1 (no scene point) gets e_{dim-1}."""
    ids = ids.clone()
    ids[ids < 0] = dim - 1
    return F.one_hot(ids, dim).permute(2, 0, 1).unsqueeze(0).double()  # (1, D, H, W)


def scene_setup():
    """A: ids laid out row-major; B: A shifted right by 2 px (new points enter on the left);
    A_hat: A flipped left-right (a known warp x -> W-1-x)."""
    ids_a = torch.arange(H * W).reshape(H, W)
    ids_b = torch.full((H, W), -1)
    ids_b[:, 2:] = ids_a[:, :-2]
    ids_b[:, :2] = H * W + torch.arange(2 * H).reshape(H, 2)  # points not in A
    ids_ahat = ids_a.flip(1)
    dim = H * W + 2 * H + 1
    return one_hot_field(ids_a, dim), one_hot_field(ids_b, dim), one_hot_field(ids_ahat, dim)


def test_cycle_loss_is_zero_for_perfect_descriptors_on_known_warp():
    da, db, dah = scene_setup()
    xs, ys = torch.meshgrid(torch.arange(W - 2.0), torch.arange(H * 1.0), indexing="xy")  # columns 0..W-3 visible in B
    kp_a = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).unsqueeze(0).double()  # (1, N, 2)
    kp_ah = kp_a.clone()
    kp_ah[..., 0] = W - 1 - kp_a[..., 0]
    loss_fn = CycleCorrespondenceLoss(temperature=0.03, quantile=1.0)
    t = loss_fn.terms(descriptors_a=da, descriptors_b=db, descriptors_a_hat=dah, keypoints_a=kp_a, keypoints_a_hat=kp_ah)
    expected_b = kp_a.clone()
    expected_b[..., 0] += 2
    assert torch.allclose(t.predicted_b, expected_b, atol=1e-6)
    assert torch.allclose(t.predicted_a_hat, kp_ah, atol=1e-6)
    assert t.variances.max() < 1e-6
    loss = loss_fn(descriptors_a=da, descriptors_b=db, descriptors_a_hat=dah, keypoints_a=kp_a, keypoints_a_hat=kp_ah)
    assert loss.item() < 1e-5


def test_quantile_drop_discards_keypoints_without_correspondence():
    da, db, dah = scene_setup()
    # 4 keypoints visible in B (columns 0..W-3), 6 in the last two columns (not in B)
    kp = torch.tensor([[0, 0], [1, 2], [3, 4], [2, 5], [W - 1, 0], [W - 1, 2], [W - 2, 3], [W - 2, 5], [W - 1, 5], [W - 2, 1]],
                      dtype=torch.float64).unsqueeze(0)
    kp_ah = kp.clone()
    kp_ah[..., 0] = W - 1 - kp[..., 0]
    t = CycleCorrespondenceLoss(quantile=0.4).terms(descriptors_a=da, descriptors_b=db, descriptors_a_hat=dah,
                                                    keypoints_a=kp, keypoints_a_hat=kp_ah)
    assert t.kept[0].tolist() == [True] * 4 + [False] * 6
    assert (t.variances[0, 4:] > 1.0).all() and (t.variances[0, :4] < 1e-6).all()


def test_quantile_mask_keeps_the_right_fraction():
    g = torch.Generator().manual_seed(0)
    var = torch.rand(3, 100, generator=g)
    valid = torch.ones(3, 100, dtype=torch.bool)
    valid[1, 20:] = False  # 20 valid -> ceil(0.35 * 20) = 7
    valid[2] = False  # none valid -> none kept
    kept = confident_quantile_mask(var, valid, 0.35)
    assert kept.sum(1).tolist() == [35, 7, 0]
    assert set(torch.nonzero(kept[0]).flatten().tolist()) == set(torch.argsort(var[0])[:35].tolist())
    assert set(torch.nonzero(kept[1]).flatten().tolist()) == set(torch.argsort(var[1, :20])[:7].tolist())


def reference_cycle_loss(da, db, dah, kp_a, kp_ah, tau, q, scaling, detach=True):
    """Plain per-keypoint loop implementation of eq. 6-9 (float64)."""
    b, d, h, w = db.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=da.dtype), torch.arange(w, dtype=da.dtype), indexing="ij")
    errs, xvals = [], []
    for i in range(kp_a.shape[1]):
        x, y = int(kp_a[0, i, 0]), int(kp_a[0, i, 1])
        dq = da[0, :, y, x]
        p_b = torch.softmax((-((db[0] - dq[:, None, None]) ** 2).sum(0) / tau).reshape(-1), 0).reshape(h, w)
        mbx, mby = (p_b * xs).sum(), (p_b * ys).sum()
        chi_b = (p_b * (xs - mbx) ** 2).sum() + (p_b * (ys - mby) ** 2).sum()
        dbar = F.normalize((db[0] * p_b).sum((1, 2)), dim=0)
        p_a = torch.softmax((-((dah[0] - dbar[:, None, None]) ** 2).sum(0) / tau).reshape(-1), 0).reshape(h, w)
        max_, may = (p_a * xs).sum(), (p_a * ys).sum()
        chi_a = (p_a * (xs - max_) ** 2).sum() + (p_a * (ys - may) ** 2).sum()
        errs.append(torch.sqrt((max_ - kp_ah[0, i, 0]) ** 2 + (may - kp_ah[0, i, 1]) ** 2 + 1e-12))
        xvals.append(chi_b + chi_a)
    errs, xv = torch.stack(errs), torch.stack(xvals)
    k = math.ceil(q * len(errs) - 1e-9)
    keep = torch.argsort(xv.detach())[:k]
    xk = xv[keep].detach() if detach else xv[keep]
    wts = 1.0 / (1.0 + xk) if scaling else torch.ones_like(xk)
    return (wts * errs[keep]).sum() / k


def random_fields(seed=0, d=8, h=5, w=6, n=12):
    g = torch.Generator().manual_seed(seed)
    da = F.normalize(torch.randn(1, d, h, w, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    db = F.normalize(torch.randn(1, d, h, w, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    dah = F.normalize(torch.randn(1, d, h, w, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    kp_a = torch.stack([torch.randint(0, w, (1, n), generator=g), torch.randint(0, h, (1, n), generator=g)], -1).double()
    kp_ah = torch.rand(1, n, 2, generator=g, dtype=torch.float64) * torch.tensor([w - 1, h - 1])
    return da, db, dah, kp_a, kp_ah


@pytest.mark.parametrize("scaling", [True, False])
@pytest.mark.parametrize("tau", [0.03, 0.5])
def test_cycle_loss_matches_plain_reference(scaling, tau):
    da, db, dah, kp_a, kp_ah = random_fields()
    ours = CycleCorrespondenceLoss(temperature=tau, quantile=0.35, variance_scaling=scaling)(
        descriptors_a=da, descriptors_b=db, descriptors_a_hat=dah, keypoints_a=kp_a, keypoints_a_hat=kp_ah)
    ref = reference_cycle_loss(da, db, dah, kp_a, kp_ah, tau, 0.35, scaling)
    assert torch.allclose(ours, ref, rtol=1e-9, atol=1e-12)


def test_variance_scaling_divides_each_error_by_one_plus_variance():
    da, db, dah, kp_a, kp_ah = random_fields(seed=3)
    kwargs = dict(descriptors_a=da, descriptors_b=db, descriptors_a_hat=dah, keypoints_a=kp_a, keypoints_a_hat=kp_ah)
    t = CycleCorrespondenceLoss(temperature=0.5, quantile=1.0).terms(**kwargs)
    scaled = CycleCorrespondenceLoss(temperature=0.5, quantile=1.0)(**kwargs)
    plain = CycleCorrespondenceLoss(temperature=0.5, quantile=1.0, variance_scaling=False)(**kwargs)
    assert torch.allclose(plain, t.errors.mean())
    assert torch.allclose(scaled, (t.errors / (1.0 + t.variances)).mean())
    assert t.variances.min() > 0.5  # random field at tau = 0.5: spread heatmaps, so scaling matters
    assert scaled < plain


def test_gradients_do_not_flow_through_variances():
    da, db, dah, kp_a, kp_ah = random_fields(seed=5)
    kwargs = dict(descriptors_a=da, descriptors_b=db, descriptors_a_hat=dah, keypoints_a=kp_a, keypoints_a_hat=kp_ah)
    fn = CycleCorrespondenceLoss(temperature=0.5, quantile=0.5)
    t = fn.terms(**kwargs)
    assert not t.variances.requires_grad and not t.weights.requires_grad and t.errors.requires_grad
    grads = torch.autograd.grad(fn(**kwargs), [da, db, dah])
    ref_detached = torch.autograd.grad(reference_cycle_loss(da, db, dah, kp_a, kp_ah, 0.5, 0.5, True, detach=True), [da, db, dah])
    ref_attached = torch.autograd.grad(reference_cycle_loss(da, db, dah, kp_a, kp_ah, 0.5, 0.5, True, detach=False), [da, db, dah])
    for g, r in zip(grads, ref_detached):
        assert torch.allclose(g, r, atol=1e-10)
    assert any(not torch.allclose(g, r, atol=1e-6) for g, r in zip(grads, ref_attached))


def test_cycle_loss_input_validation():
    da, db, dah, kp_a, kp_ah = random_fields()
    fn = CycleCorrespondenceLoss()
    with pytest.raises(ValueError, match="keypoints"):
        fn(descriptors_a=da, descriptors_b=db, descriptors_a_hat=dah, keypoints_a=kp_a[0], keypoints_a_hat=kp_ah)
    with pytest.raises(ValueError, match="descriptor"):
        fn(descriptors_a=da, descriptors_b=db[:, :4], descriptors_a_hat=dah, keypoints_a=kp_a, keypoints_a_hat=kp_ah)
    with pytest.raises(ValueError, match="NaN"):
        fn(descriptors_a=da, descriptors_b=db, descriptors_a_hat=dah, keypoints_a=kp_a * float("nan"), keypoints_a_hat=kp_ah)
    with pytest.raises(ValueError, match="quantile"):
        CycleCorrespondenceLoss(quantile=0.0)


def test_distributional_kl_matches_plain_reference_and_prefers_true_match():
    g = torch.Generator().manual_seed(2)
    da = F.normalize(torch.randn(1, 6, 5, 6, generator=g, dtype=torch.float64), dim=1)
    db = F.normalize(torch.randn(1, 6, 5, 6, generator=g, dtype=torch.float64), dim=1)
    kp_a = torch.tensor([[[1.0, 2.0], [4.0, 0.0]]], dtype=torch.float64)
    kp_b = torch.tensor([[[3.0, 1.0], [0.5, 4.0]]], dtype=torch.float64)
    loss = DistributionalLoss(temperature=0.1, sigma=1.0)(descriptors_a=da, descriptors_b=db, keypoints_a=kp_a, keypoints_b=kp_b)
    ys, xs = torch.meshgrid(torch.arange(5.0, dtype=torch.float64), torch.arange(6.0, dtype=torch.float64), indexing="ij")
    ref = []
    for (xa, ya), (xb, yb) in zip(kp_a[0].tolist(), kp_b[0].tolist()):
        p = torch.softmax((-((db[0] - da[0, :, int(ya), int(xa), None, None]) ** 2).sum(0) / 0.1).reshape(-1), 0)
        q = torch.exp(-((xs - xb) ** 2 + (ys - yb) ** 2) / 2.0).reshape(-1)
        q = q / q.sum()
        ref.append((q * (q.log() - p.log())).sum())
    assert torch.allclose(loss, torch.stack(ref).mean())
    # perfect field: the true match gives a lower KL than a wrong one
    ids = torch.arange(30).reshape(5, 6)
    field = F.one_hot(ids, 30).permute(2, 0, 1).unsqueeze(0).double()
    fn = IdenticalViewLoss(temperature=0.5, sigma=1.0)
    right = fn(descriptors_a=field, descriptors_b=field, keypoints_a=kp_a, keypoints_b=kp_a)
    wrong = fn(descriptors_a=field, descriptors_b=field, keypoints_a=kp_a, keypoints_b=kp_a.flip(-1))
    assert right < wrong


def test_expectation_distributional_is_zero_for_perfect_field_and_respects_valid():
    ids = torch.arange(30).reshape(5, 6)
    field = F.one_hot(ids, 30).permute(2, 0, 1).unsqueeze(0).double()
    kp = torch.tensor([[[1.0, 2.0], [4.0, 0.0], [5.0, 4.0]]], dtype=torch.float64)
    fn = DistributionalLoss(kind="expectation")
    assert fn(descriptors_a=field, descriptors_b=field, keypoints_a=kp, keypoints_b=kp).item() < 1e-5
    wrong = kp.clone()
    wrong[0, 2] = torch.tensor([0.0, 0.0])
    valid = torch.tensor([[True, True, False]])
    assert fn(descriptors_a=field, descriptors_b=field, keypoints_a=kp, keypoints_b=wrong, valid=valid).item() < 1e-5
    assert fn(descriptors_a=field, descriptors_b=field, keypoints_a=kp, keypoints_b=wrong).item() == pytest.approx(
        math.hypot(5, 4) / 3, rel=1e-5)


def test_geometric_losses_zero_for_perfect_field():
    ids = torch.arange(30).reshape(5, 6)
    field = F.one_hot(ids, 30).permute(2, 0, 1).unsqueeze(0).double()  # distinct pixels are sqrt(2) > margin apart
    kp = torch.tensor([[[1.0, 2.0], [4.0, 0.0], [5.0, 4.0]]], dtype=torch.float64)
    con = GeometricCorrespondenceLoss(kind="contrastive")
    # non-matches are sampled at sub-pixel positions; bilinear mixtures of one-hots can be close, so use integer grid:
    fn = PixelwiseContrastiveLoss(margin=0.5, min_nonmatch_distance=1.5)
    g = torch.Generator().manual_seed(0)
    val = fn(descriptors_a=field, descriptors_b=field, keypoints_a=kp, keypoints_b=kp, generator=g)
    assert val.item() < 0.05
    assert con(descriptors_a=field, descriptors_b=field, keypoints_a=kp, keypoints_b=kp).item() < 0.05
    shifted = torch.roll(field, 1, dims=3)
    assert fn(descriptors_a=field, descriptors_b=shifted, keypoints_a=kp, keypoints_b=kp, generator=g).item() > 1.0
    dist = GeometricCorrespondenceLoss()
    assert dist(descriptors_a=field, descriptors_b=field, keypoints_a=kp, keypoints_b=kp) < dist(
        descriptors_a=field, descriptors_b=shifted, keypoints_a=kp, keypoints_b=kp)
