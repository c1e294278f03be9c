"""Noisy-label losses against plain reference implementations, REFERENCES.md vectors and invariances."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfsup_perception.core.learning.losses import (
    CoTeachingLoss,
    HardBootstrappingLoss,
    RobustSetLoss,
    SoftIoUHingeLoss,
    binary_iou,
    coteaching_select,
    forget_rate_schedule,
    hard_bootstrap_targets,
    num_remembered,
    robust_set_refine,
    small_loss_mean,
)


def square(n: int, y0: int, x0: int, size: int) -> torch.Tensor:
    m = torch.zeros(1, n, n, dtype=torch.bool)
    m[0, y0 : y0 + size, x0 : x0 + size] = True
    return m


# ----------------------------------------------------------------------------- robust set loss


def _np_iou(a, b):
    inter = np.logical_and(a, b).sum(axis=(1, 2)).astype(float)
    union = np.logical_or(a, b).sum(axis=(1, 2)).astype(float)
    union[union == 0] += 1e-12
    return inter / union


def reference_robust_set(log_probs, gt, step=0.1, th=0.75, max_iter=25, fix_bug=True):
    """Plain loop port of pathak22/seg-by-interaction robust_set_loss (2-channel log-probs, [B,H,W,2]).

    ``fix_bug=False`` keeps the reference's double subtraction in the 'out' branch.
    """
    lp = log_probs.copy()
    gt = gt.astype(bool)
    iters = np.zeros(len(gt), int)
    for _ in range(max_iter):
        iou_orig = _np_iou(np.argmax(lp, -1), gt)
        unconv = ~(iou_orig > th)
        if not unconv.any():
            break
        iters += unconv
        for i in np.nonzero(unconv)[0]:
            fg = lp[i, ..., 1]
            fg[gt[i]] += step
            up_in = _np_iou(np.argmax(lp[i : i + 1], -1), gt[i : i + 1])[0]
            fg[gt[i]] -= step
            fg[~gt[i]] -= step
            down_out = _np_iou(np.argmax(lp[i : i + 1], -1), gt[i : i + 1])[0]
            fg[gt[i]] += step  # state: in +, out -
            if up_in > iou_orig[i]:
                fg[~gt[i]] += step  # keep 'in' only
            elif down_out > iou_orig[i]:
                if fix_bug:
                    fg[gt[i]] -= step  # keep 'out' only
                else:
                    fg[~gt[i]] -= step  # the reference's bug
    return np.argmax(lp, -1).astype(bool), iters


def test_robust_set_reference_vector_all_background():
    target = square(10, 2, 2, 6)
    logits = torch.full((1, 10, 10), -1.0)  # all background, margin 1.0
    refined, iters, iou = robust_set_refine(logits, target)
    assert int(iters[0]) == 11
    assert float(iou[0]) == 1.0
    assert torch.equal(refined, target)


def test_robust_set_reference_vector_shift():
    target = square(10, 2, 2, 6)
    pred = square(10, 4, 4, 6)
    assert float(binary_iou(pred, target)[0]) == pytest.approx(0.2857, abs=1e-4)
    logits = torch.where(pred, 0.5, -0.5)
    refined, iters, iou = robust_set_refine(logits, target)
    assert int(iters[0]) == 7
    assert float(iou[0]) == 1.0


def test_robust_set_prediction_equal_to_target_is_unchanged():
    target = square(12, 3, 1, 5)
    logits = torch.where(target, 2.0, -2.0)
    refined, iters, _ = robust_set_refine(logits, target)
    assert int(iters[0]) == 0
    assert torch.equal(refined, target)


def test_robust_set_converged_sample_keeps_its_own_prediction():
    # IoU(pred, target) = 30/36 > 0.75: the refined target is the prediction, not the noisy target
    target = square(10, 2, 2, 6)
    pred = target.clone()
    pred[0, 2, 2:8] = False
    logits = torch.where(pred, 1.0, -1.0)
    refined, iters, _ = robust_set_refine(logits, target)
    assert int(iters[0]) == 0
    assert torch.equal(refined, pred)


def test_robust_set_matches_plain_reference_on_random_batches():
    rng = np.random.default_rng(3)
    b, n = 6, 12
    fg = rng.normal(0, 0.6, (b, n, n))
    gt = np.zeros((b, n, n), bool)
    for i in range(b):
        y, x, s = rng.integers(0, 5), rng.integers(0, 5), rng.integers(3, 7)
        gt[i, y : y + s, x : x + s] = True
    log_probs = np.stack([np.zeros_like(fg), fg], -1)
    expected, expected_iters = reference_robust_set(log_probs, gt)
    refined, iters, _ = robust_set_refine(torch.from_numpy(fg), torch.from_numpy(gt))
    np.testing.assert_array_equal(refined.numpy(), expected)
    np.testing.assert_array_equal(iters.numpy(), expected_iters)


def test_robust_set_bug_fix_changes_the_out_branch():
    # left half of the target predicted (+0.5), right half just below (-0.15), a false halo (+0.05):
    # iteration 1 keeps the 'out' move (halo off). Fixed: (0 in, -0.1 out), then 'in+out', then 'in'
    # -> 3 iterations. The reference's bug leaves (+0.1 in, -0.2 out) and finishes in 2.
    target = square(10, 2, 2, 6)
    fg = np.where(square(10, 1, 1, 8)[0].numpy(), 0.05, -1.0)
    fg[2:8, 2:5] = 0.5
    fg[2:8, 5:8] = -0.15
    fg = fg[None]
    log_probs = np.stack([np.zeros_like(fg), fg], -1)
    fixed, fixed_iters = reference_robust_set(log_probs, target.numpy(), fix_bug=True)
    buggy, buggy_iters = reference_robust_set(log_probs, target.numpy(), fix_bug=False)
    assert (fixed_iters[0], buggy_iters[0]) == (3, 2)
    ours, iters, iou = robust_set_refine(torch.from_numpy(fg), target)
    np.testing.assert_array_equal(ours.numpy(), fixed)
    assert int(iters[0]) == 3 and float(iou[0]) == 1.0


def test_robust_set_loss_is_bce_against_refined_target():
    torch.manual_seed(0)
    logits = torch.randn(3, 8, 8, requires_grad=True)
    target = torch.rand(3, 8, 8) > 0.6
    loss = RobustSetLoss()(logits=logits, targets=target)
    refined, _, _ = robust_set_refine(logits, target)
    expected = F.binary_cross_entropy_with_logits(logits, refined.float(), reduction="none").mean((1, 2)).mean()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_robust_set_rejects_bad_input():
    with pytest.raises(ValueError, match="do not match"):
        robust_set_refine(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        robust_set_refine(torch.full((1, 4, 4), float("nan")), torch.zeros(1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        robust_set_refine(torch.zeros(4, 4), torch.zeros(4, 4, dtype=torch.bool))


def test_soft_iou_hinge_zero_above_threshold_and_invariant_to_flip():
    target = square(10, 2, 2, 6)
    good = torch.where(target, 20.0, -20.0)
    assert float(SoftIoUHingeLoss()(logits=good, targets=target)) == pytest.approx(0.0, abs=1e-6)
    torch.manual_seed(1)
    logits = torch.randn(2, 10, 10)
    tgt = torch.rand(2, 10, 10) > 0.5
    loss = SoftIoUHingeLoss(reduction="none")
    np.testing.assert_allclose(
        loss(logits=logits, targets=tgt).numpy(), loss(logits=logits.flip(-1), targets=tgt.flip(-1)).numpy(), rtol=1e-6
    )


# ----------------------------------------------------------------------------- bootstrapping


def test_hard_bootstrap_targets_match_formula():
    y = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    logits = torch.tensor([[[2.0, -2.0, 2.0, -2.0]]])  # p > 0.5, <, >, <
    t, w = hard_bootstrap_targets(logits, y, beta=0.7)
    np.testing.assert_allclose(t.numpy(), [[[1.0, 0.7, 0.3, 0.0]]], atol=1e-7)
    np.testing.assert_array_equal(w.numpy(), [[[1.0, 1.0, 0.0, 1.0]]])  # confident fg on label 0 ignored
    _, w2 = hard_bootstrap_targets(logits, y, beta=0.7, ignore_confident_foreground=False)
    assert float(w2.min()) == 1.0


def test_hard_bootstrapping_loss_matches_plain_computation():
    torch.manual_seed(2)
    logits = torch.randn(4, 6, 7)
    y = (torch.rand(4, 6, 7) > 0.5).float()
    loss = HardBootstrappingLoss(beta=0.7)(logits=logits, targets=y)
    p = torch.sigmoid(logits)
    t = 0.7 * y + 0.3 * (p > 0.5).float()
    w = 1.0 - ((y == 0) & (p > 0.5)).float()
    bce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    expected = ((bce * w).sum((1, 2)) / w.sum((1, 2))).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_hard_bootstrapping_beta_one_without_ignore_is_bce():
    torch.manual_seed(4)
    logits = torch.randn(2, 5, 5)
    y = (torch.rand(2, 5, 5) > 0.5).float()
    loss = HardBootstrappingLoss(beta=1.0, ignore_confident_foreground=False)(logits=logits, targets=y)
    assert float(loss) == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, y)), rel=1e-6)


def test_hard_bootstrapping_uses_teacher_and_validates():
    logits = torch.zeros(1, 2, 2)
    teacher = torch.full((1, 2, 2), 5.0)
    t, w = hard_bootstrap_targets(logits, torch.zeros(1, 2, 2), teacher_logits=teacher)
    assert float(w.sum()) == 0.0 and float(t.max()) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="beta"):
        HardBootstrappingLoss(beta=1.5)


# ----------------------------------------------------------------------------- co-teaching


def test_forget_rate_ramp():
    assert forget_rate_schedule(0, forget_rate=0.2, ramp_steps=10) == 0.0
    assert forget_rate_schedule(5, forget_rate=0.2, ramp_steps=10) == pytest.approx(0.1)
    assert forget_rate_schedule(50, forget_rate=0.2, ramp_steps=10) == pytest.approx(0.2)
    assert forget_rate_schedule(3, forget_rate=0.1, ramp_steps=0) == 0.1
    with pytest.raises(ValueError):
        forget_rate_schedule(0, forget_rate=1.0)


def test_coteaching_select_keeps_small_loss_samples_of_each_net():
    loss_a = torch.tensor([0.1, 5.0, 0.3, 0.2, 9.0, 0.4, 0.5, 0.6, 0.7, 0.8])
    loss_b = torch.tensor([9.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 5.0])
    pick_a, pick_b = coteaching_select(loss_a, loss_b, forget_rate=0.2)
    assert num_remembered(10, 0.2) == 8
    assert set(pick_a.tolist()) == set(range(10)) - {1, 4}
    assert set(pick_b.tolist()) == set(range(10)) - {0, 9}


def test_coteaching_loss_trains_each_net_on_peer_picks():
    loss_a = torch.tensor([1.0, 2.0, 3.0, 100.0], requires_grad=True)
    loss_b = torch.tensor([100.0, 1.0, 2.0, 3.0], requires_grad=True)
    loss, info = CoTeachingLoss(forget_rate=0.25, ramp_steps=0)(loss_a=loss_a, loss_b=loss_b, step=0)
    # B keeps {1,2,3} -> A trains on mean(2,3,100); A keeps {0,1,2} -> B trains on mean(100,1,2)
    assert float(loss.detach()) == pytest.approx((2 + 3 + 100) / 3 + (100 + 1 + 2) / 3)
    assert info == {"forget_rate": 0.25, "kept": 3.0}
    loss.backward()
    np.testing.assert_allclose(loss_a.grad.numpy(), [0, 1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(loss_b.grad.numpy(), [1 / 3, 1 / 3, 1 / 3, 0])


def test_coteaching_permutation_invariance():
    torch.manual_seed(5)
    a, b = torch.rand(16), torch.rand(16)
    perm = torch.randperm(16)
    loss = CoTeachingLoss(forget_rate=0.3, ramp_steps=0)
    l1, _ = loss(loss_a=a, loss_b=b, step=0)
    l2, _ = loss(loss_a=a[perm], loss_b=b[perm], step=0)
    assert float(l1) == pytest.approx(float(l2), rel=1e-6)
    with pytest.raises(ValueError, match="empty"):
        coteaching_select(torch.zeros(0), torch.zeros(0), 0.1)


# ----------------------------------------------------------------------------- small-loss selection (one network)


def test_small_loss_mean_keeps_the_smallest_losses():
    losses = torch.tensor([0.4, 7.0, 0.1, 0.3, 5.0, 0.2, 0.6, 0.5], requires_grad=True)
    loss, picks = small_loss_mean(losses, 0.25)  # int(0.75 * 8) = 6 kept: all but 7.0 and 5.0
    assert sorted(picks.tolist()) == [0, 2, 3, 5, 6, 7]
    assert float(loss.detach()) == pytest.approx((0.4 + 0.1 + 0.3 + 0.2 + 0.6 + 0.5) / 6)
    loss.backward()
    np.testing.assert_allclose(losses.grad.numpy(), [1 / 6, 0, 1 / 6, 1 / 6, 0, 1 / 6, 1 / 6, 1 / 6], rtol=1e-6)
    # forget rate 0 is the plain mean; a single sample is always kept
    assert float(small_loss_mean(losses, 0.0)[0].detach()) == pytest.approx(float(losses.detach().mean()))
    assert small_loss_mean(torch.tensor([3.0]), 0.9)[1].tolist() == [0]


def test_small_loss_mean_permutation_invariance_and_validation():
    torch.manual_seed(3)
    x = torch.rand(13)
    perm = torch.randperm(13)
    assert float(small_loss_mean(x, 0.3)[0]) == pytest.approx(float(small_loss_mean(x[perm], 0.3)[0]), rel=1e-6)
    with pytest.raises(ValueError, match="1-D"):
        small_loss_mean(torch.zeros(2, 2), 0.1)
    with pytest.raises(ValueError, match="forget_rate"):
        small_loss_mean(torch.zeros(4), 1.0)
