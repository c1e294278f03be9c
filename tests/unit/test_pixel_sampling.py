"""Statistics of the four pixel-pair sampling modes (random/balanced x exact/region)."""

import numpy as np
import pytest

from selfsup_perception.core.registration.pixel_sampling import PixelPairSamplerConfig, sample_pixel_pairs
from selfsup_perception.core.registration.regions import RegionMatchConfig, match_regions
from selfsup_perception.core.registration.reprojection import correspondences
from selfsup_perception.core.types import CameraIntrinsics

W, H, SHIFT = 60, 40, 4
K = CameraIntrinsics(40.0, 40.0, (W - 1) / 2, (H - 1) / 2, W, H)


@pytest.fixture(scope="module")
def scene():
    depth = np.full((H, W), 2.0, np.float32)
    tb = np.eye(4)
    tb[0, 3] = SHIFT * 2.0 / K.fx  # content moves SHIFT px left in B
    corr = correspondences(depth, K, np.eye(4), depth, K, tb)
    # Very unequal regions in A: a big "floor" (0), a medium block (1), a small block (2).
    regions_a = np.zeros((H, W), np.int64)
    regions_a[5:25, 10:40] = 1
    regions_a[30:35, 45:50] = 2
    regions_b = np.zeros((H, W), np.int64)  # the same regions seen in B
    regions_b[5:25, 10 - SHIFT:40 - SHIFT] = 1
    regions_b[30:35, 45 - SHIFT:50 - SHIFT] = 2
    matches = match_regions(regions_a, regions_b, corr, RegionMatchConfig(min_overlap=0.5))
    return corr, regions_a, regions_b, matches


def run(scene, sampling, matching, n=6000, seed=0):
    corr, ra, rb, m = scene
    cfg = PixelPairSamplerConfig(sampling=sampling, matching=matching, num_pairs=n)
    return sample_pixel_pairs(corr, cfg, regions_a=ra, regions_b=rb, matches=m, rng=np.random.default_rng(seed))


def test_matches_are_the_identity_on_this_scene(scene):
    np.testing.assert_array_equal(scene[3].match, [0, 1, 2])


def test_random_exact_follows_area_and_returns_the_correspondence(scene):
    corr, ra, _, _ = scene
    pairs = run(scene, "random", "exact")
    assert len(pairs) == 6000
    np.testing.assert_array_equal(pairs.pixels_b, pairs.pixels_a - [SHIFT, 0])
    assert corr.valid[pairs.pixels_a[:, 1], pairs.pixels_a[:, 0]].all()
    area = np.bincount(ra[corr.valid], minlength=3) / corr.valid.sum()
    freq = np.bincount(pairs.region_a, minlength=3) / len(pairs)
    np.testing.assert_allclose(freq, area, atol=0.02)  # small block: ~1 % of samples


def test_balanced_gives_equal_counts_per_region(scene):
    for matching in ("exact", "region"):
        pairs = run(scene, "balanced", matching, n=1000)
        counts = np.bincount(pairs.region_a, minlength=3)
        assert counts.max() - counts.min() <= 1 and counts.sum() == 1000
    # Uniform inside a region: the small 5x5 block's 25 pixels are all drawn about equally.
    pairs = run(scene, "balanced", "exact", n=30000)
    small = pairs.pixels_a[pairs.region_a == 2]
    hits = np.bincount(small[:, 1] * W + small[:, 0], minlength=H * W)
    hits = hits[hits > 0]
    assert hits.size == 25 and hits.min() > 0.6 * hits.mean()


def test_region_matching_stays_in_the_matched_region_and_varies(scene):
    _, ra, rb, m = scene
    for sampling in ("random", "balanced"):
        pairs = run(scene, sampling, "region")
        assert (rb[pairs.pixels_b[:, 1], pairs.pixels_b[:, 0]] == m.match[pairs.region_a]).all()
        assert (ra[pairs.pixels_a[:, 1], pairs.pixels_a[:, 0]] == pairs.region_a).all()
        # Not the exact correspondence in general.
        assert np.mean(np.all(pairs.pixels_b == pairs.pixels_a - [SHIFT, 0], axis=1)) < 0.05
    # The whole matched B region is covered: q of region 2 hits all 25 pixels of B's block.
    pairs = run(scene, "balanced", "region", n=30000)
    q = pairs.pixels_b[pairs.region_a == 2]
    assert len(np.unique(q[:, 1] * W + q[:, 0])) == 25


def test_unmatched_regions_are_skipped_in_region_mode(scene):
    corr, ra, rb, _ = scene
    m = match_regions(ra, rb, corr)
    m.match[2] = -1
    cfg = PixelPairSamplerConfig(sampling="balanced", matching="region", num_pairs=600)
    pairs = sample_pixel_pairs(corr, cfg, regions_a=ra, regions_b=rb, matches=m, rng=np.random.default_rng(0))
    assert set(np.unique(pairs.region_a)) == {0, 1}
    assert np.all(np.bincount(pairs.region_a) == 300)


def test_seeded_and_errors(scene):
    a, b = run(scene, "balanced", "region", seed=3), run(scene, "balanced", "region", seed=3)
    np.testing.assert_array_equal(a.pixels_b, b.pixels_b)
    corr = scene[0]
    with pytest.raises(ValueError, match="needs regions_a"):
        sample_pixel_pairs(corr, PixelPairSamplerConfig(sampling="balanced", matching="exact"))
    with pytest.raises(ValueError, match="regions_b and matches"):
        sample_pixel_pairs(corr, PixelPairSamplerConfig(matching="region"), regions_a=scene[1])
    with pytest.raises(ValueError, match="sampling must be"):
        PixelPairSamplerConfig(sampling="uniform")
    pairs = sample_pixel_pairs(corr, PixelPairSamplerConfig(sampling="random", matching="exact", num_pairs=10))
    assert len(pairs) == 10 and (pairs.region_a == -1).all()
