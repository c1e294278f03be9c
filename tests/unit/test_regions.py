"""Cantor pairing, region overlap (against brute-force all-pairs IoU) and region matching."""

import numpy as np
import pytest

from selfsup_perception.core.registration.regions import (
    FelzenszwalbConfig,
    RegionMatchConfig,
    cantor_pair,
    cantor_unpair,
    felzenszwalb_regions,
    match_regions,
    region_overlap,
    relabel_consecutive,
)
from selfsup_perception.core.registration.reprojection import correspondences
from selfsup_perception.core.types import CameraIntrinsics

W, H = 40, 30
K = CameraIntrinsics(40.0, 40.0, (W - 1) / 2, (H - 1) / 2, W, H)


def shifted_pair(shift_px: int):
    """Fronto-parallel plane at 2 m; B moved so that points appear ``shift_px`` further left."""
    depth = np.full((H, W), 2.0, np.float32)
    tb = np.eye(4)
    tb[0, 3] = shift_px * 2.0 / K.fx
    return correspondences(depth, K, np.eye(4), depth, K, tb)


@pytest.mark.parametrize("a, b, z", [(0, 0, 0), (1, 0, 1), (0, 1, 2), (2, 0, 3), (1, 1, 4), (0, 2, 5), (47, 32, 3192)])
def test_cantor_reference_vectors(a, b, z):
    assert int(cantor_pair(a, b)) == z
    ra, rb = cantor_unpair(z)
    assert (int(ra), int(rb)) == (a, b)


def test_cantor_is_int64_exact_and_bijective():
    # int32 would overflow here (a + b >= 65,536).
    assert int(cantor_pair(40000, 30000)) == 70000 * 70001 // 2 + 30000
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.integers(0, 2**31, 1000), [4_294_967_294, 0, 3_000_000_000]])
    b = np.concatenate([rng.integers(0, 2**31, 1000), [0, 4_294_967_294, 1_294_967_294]])
    z = cantor_pair(a, b)
    assert z.dtype == np.int64 and (z >= 0).all()
    ra, rb = cantor_unpair(z)
    np.testing.assert_array_equal(ra, a)
    np.testing.assert_array_equal(rb, b)
    small = np.arange(60)
    codes = cantor_pair(*np.meshgrid(small, small))
    assert np.unique(codes).size == 3600
    with pytest.raises(ValueError, match="non-negative"):
        cantor_pair(-1, 2)
    with pytest.raises(ValueError, match="int64"):
        cantor_pair(2**32, 2**32)


def brute_force_iou(regions_a, regions_b, corr):
    """All region pairs: IoU of (A region projected into B) and (B region), over co-visible pixels."""
    ia = regions_a.reshape(-1)[corr.flat_a()]
    ib = regions_b.reshape(-1)[corr.flat_b()]
    out = {}
    for r in np.unique(regions_a):
        for s in np.unique(regions_b):
            inter = np.sum((ia == r) & (ib == s))
            union = np.sum((ia == r) | (ib == s))
            if inter:
                out[(int(r), int(s))] = inter / union
    return out


def test_region_overlap_equals_brute_force():
    rng = np.random.default_rng(3)
    corr = shifted_pair(7)
    regions_a = rng.integers(0, 9, size=(H, W))
    regions_b = (np.arange(W)[None, :] // 6 + 7 * (np.arange(H)[:, None] // 10)).repeat(1, 0)
    ov = region_overlap(regions_a, regions_b, corr)
    ref = brute_force_iou(regions_a, regions_b, corr)
    got = {(int(a), int(b)): v for a, b, v in zip(ov.region_a, ov.region_b, ov.iou)}
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key] == pytest.approx(ref[key])
    assert ov.intersection.sum() == len(corr)
    np.testing.assert_array_equal(ov.covisible_a, np.bincount(regions_a[corr.valid], minlength=9))


def test_match_regions_recovers_shifted_blocks():
    # A: vertical stripes of 8 px; B sees the same stripes 4 px further left.
    stripes_a = np.repeat(np.arange(W // 8), 8)[None, :].repeat(H, 0)
    stripes_b = np.repeat(np.arange(W // 8 + 1), 8)[None, :W].repeat(H, 0)
    corr = shifted_pair(4)
    shifted_b = np.clip((np.arange(W) + 4) // 8, 0, None)[None, :].repeat(H, 0)  # B stripe ids of A's content
    m = match_regions(stripes_a, shifted_b, corr, RegionMatchConfig(criterion="iou", min_overlap=0.9))
    np.testing.assert_array_equal(m.match, np.arange(W // 8))
    assert np.allclose(m.score[1:], 1.0)
    # Misaligned regions: stripe r of A half in stripe r-1? No: B stripes offset by 4 px -> each A stripe
    # splits 4/4 over two B stripes; IoU 4/12 per half, fraction 0.5.
    m2 = match_regions(stripes_a, stripes_b, corr, RegionMatchConfig(criterion="fraction", min_overlap=0.4))
    assert (m2.match[1:] >= 0).all()
    np.testing.assert_allclose(m2.score[1:], 0.5)
    m3 = match_regions(stripes_a, stripes_b, corr, RegionMatchConfig(criterion="iou", min_overlap=0.5))
    assert (m3.match[1:4] == -1).all()
    np.testing.assert_allclose(m3.score[1:4], 4 / 12)
    # The last B stripe is only half co-visible (its right half maps outside A), so IoU counts
    # 4 / (8 + 4 - 4) = 0.5 for it: overlaps are measured on co-visible pixels only.
    assert m3.match[4] == 4 and m3.score[4] == pytest.approx(0.5)


def test_felzenszwalb_splits_colour_blocks_and_relabels():
    img = np.zeros((30, 40, 3), np.uint8)
    img[:, 20:] = (200, 30, 30)
    img[20:, :10] = (30, 200, 30)
    labels = felzenszwalb_regions(img, FelzenszwalbConfig(scale=50, sigma=0.5, min_size=10))
    assert labels.dtype == np.int64 and labels.min() == 0
    n = len(np.unique(labels))
    np.testing.assert_array_equal(np.unique(labels), np.arange(n))
    assert 3 <= n <= 10
    colour_id = img[..., 0].astype(int) * 256 + img[..., 1]
    for r in range(n):  # no region crosses a colour edge
        assert len(np.unique(colour_id[labels == r])) == 1
    np.testing.assert_array_equal(relabel_consecutive(np.array([[5, 9], [5, 2]])), [[1, 2], [1, 0]])
    with pytest.raises(ValueError, match="H, W, 3"):
        felzenszwalb_regions(np.zeros((4, 4), np.uint8))


def test_region_shape_mismatch_raises():
    corr = shifted_pair(2)
    with pytest.raises(ValueError, match="regions_b has shape"):
        region_overlap(np.zeros((H, W), int), np.zeros((H, W + 1), int), corr)
    with pytest.raises(ValueError, match="criterion"):
        match_regions(np.zeros((H, W), int), np.zeros((H, W), int), corr, RegionMatchConfig(criterion="dice"))
