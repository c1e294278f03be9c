import math

import pytest
import torch
import torch.nn.functional as F

from selfsup_perception.core.descriptors.spatial_expectation import (
    expectation_and_variance_from_log_probs,
    expected_descriptor,
    grid_to_image,
    heatmap_log_probs,
    image_to_grid,
    sample_descriptors,
    spatial_expectation,
    spatial_expectation_and_variance,
    spatial_expectation_from_logits,
)


def test_delta_heatmap_returns_its_pixel_exactly():
    h = torch.zeros(7, 9)
    h[5, 2] = 3.0  # row 5, column 2 -> (x, y) = (2, 5)
    mean, var = spatial_expectation_and_variance(h)
    assert mean.tolist() == [2.0, 5.0]
    assert var.tolist() == [0.0, 0.0]


def test_uniform_heatmap_returns_centre():
    w, h = 9, 6
    mean = spatial_expectation(torch.ones(h, w))
    assert torch.allclose(mean, torch.tensor([(w - 1) / 2, (h - 1) / 2]))


def test_variance_of_known_gaussian():
    sx, sy, mx, my = 2.0, 3.0, 20.0, 17.0
    ys, xs = torch.meshgrid(torch.arange(40.0, dtype=torch.float64), torch.arange(41.0, dtype=torch.float64), indexing="ij")
    g = torch.exp(-((xs - mx) ** 2) / (2 * sx**2) - ((ys - my) ** 2) / (2 * sy**2))
    mean, var = spatial_expectation_and_variance(g)
    assert torch.allclose(mean, torch.tensor([mx, my], dtype=torch.float64), atol=1e-9)
    # a discretely sampled Gaussian with sigma >= 2 px has variance sigma^2 to ~1e-6
    assert torch.allclose(var, torch.tensor([sx**2, sy**2], dtype=torch.float64), atol=1e-4)


def test_heatmap_renormalises_and_rejects_bad_input():
    h = torch.zeros(3, 3)
    h[0, 0], h[2, 2] = 1.0, 3.0
    assert torch.allclose(spatial_expectation(h), torch.tensor([1.5, 1.5]))
    with pytest.raises(ValueError, match="zero mass"):
        spatial_expectation(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="non-negative"):
        spatial_expectation(-torch.ones(3, 3))
    with pytest.raises(ValueError):
        spatial_expectation(torch.ones(0, 3))


def test_low_temperature_is_finite_where_naive_exp_is_nan():
    torch.manual_seed(0)
    desc = F.normalize(torch.randn(1, 8, 6, 7), dim=1)
    query = -desc[:, :, 3, 4].unsqueeze(1)  # antipodal: squared distance 4 everywhere near -> scores ~ -133
    query = F.normalize(query + 0.3 * torch.randn_like(query), dim=-1)
    # naive exp of unnormalised scores underflows to 0/0 in float32 at tau = 0.001
    tau = 0.001
    d2 = ((desc.reshape(1, 8, -1) - query.transpose(1, 2)) ** 2).sum(1)
    naive = torch.exp(-d2 / tau)
    assert torch.isnan(naive / naive.sum()).any()
    lp = heatmap_log_probs(query, desc, tau)
    mean, var = expectation_and_variance_from_log_probs(lp)
    assert torch.isfinite(lp).all() and torch.isfinite(mean).all() and torch.isfinite(var).all()
    assert torch.allclose(lp.exp().sum(dim=(-2, -1)), torch.ones(1, 1))


def test_heatmap_peaks_at_identical_descriptor_and_matches_plain_reference():
    torch.manual_seed(1)
    desc = F.normalize(torch.randn(2, 16, 5, 6, dtype=torch.float64), dim=1)
    q = desc[:, :, [1, 4], [2, 0]].transpose(1, 2)  # (B, 2, D): pixels (x=2, y=1), (x=0, y=4)
    lp = heatmap_log_probs(q, desc, 0.03)
    flat = lp.reshape(2, 2, -1).argmax(-1)
    assert flat[:, 0].tolist() == [1 * 6 + 2] * 2 and flat[:, 1].tolist() == [4 * 6 + 0] * 2
    ref = torch.softmax(-((desc.reshape(2, 16, 1, 30) - q.transpose(1, 2).unsqueeze(-1)) ** 2).sum(1) / 0.03, -1)
    assert torch.allclose(lp.exp().reshape(2, 2, 30), ref, atol=1e-10)


def test_expectation_from_logits_invariant_to_constant_shift():
    logits = torch.randn(2, 4, 5, dtype=torch.float64)
    m1, v1 = spatial_expectation_from_logits(logits)
    m2, v2 = spatial_expectation_from_logits(logits + 1000.0)
    assert torch.allclose(m1, m2) and torch.allclose(v1, v2)


def test_expected_descriptor_of_delta_is_that_descriptor():
    desc = F.normalize(torch.randn(1, 4, 3, 3), dim=1)
    lp = torch.full((1, 1, 3, 3), -math.inf)
    lp[0, 0, 2, 1] = 0.0
    d = expected_descriptor(lp, desc)
    assert torch.allclose(d[0, 0], desc[0, :, 2, 1], atol=1e-6)


def test_sample_descriptors_at_integer_pixels_and_midpoints():
    desc = torch.arange(2 * 3 * 4, dtype=torch.float64).reshape(1, 2, 3, 4)
    pts = torch.tensor([[[3.0, 2.0], [0.5, 0.0]]], dtype=torch.float64)
    out = sample_descriptors(desc, pts)
    assert torch.allclose(out[0, 0], desc[0, :, 2, 3])
    assert torch.allclose(out[0, 1], 0.5 * (desc[0, :, 0, 0] + desc[0, :, 0, 1]))


def test_grid_conversion_round_trip():
    p = torch.tensor([[0.0, 0.0], [3.5, 7.0], [159.0, 119.0]])
    assert torch.allclose(grid_to_image(image_to_grid(p, 8), 8), p)
    # the centre of feature cell 0 covers image pixels 0..7 -> centre 3.5
    assert torch.allclose(grid_to_image(torch.zeros(1, 2), 8), torch.tensor([[3.5, 3.5]]))
