"""Positive pixel-pair sampling across two registered views (RegConsist Sec. III-C), ROS-free.

First pixel p in view A:
  * ``random``   -- uniformly over the eligible pixels of A;
  * ``balanced`` -- the same number of samples from every eligible region of A (uniform inside the
    region), against class imbalance (walls/floors, or table/floor here).
Second pixel q in view B:
  * ``exact``  -- the correspondence of p itself (eq. 1), rounded to the nearest pixel;
  * ``region`` -- uniformly among all pixels of the B region matched to p's region (spatial
    consistency, S = {(p^, q^) | p^ in N(p), q^ in N(q)}).

Eligible pixels of A are those with a correspondence in B; in ``region`` mode also only those whose
region has a match in B. Balanced sampling draws with replacement inside each region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from selfsup_perception.core.registration.regions import RegionMatches
from selfsup_perception.core.registration.reprojection import Correspondences

SAMPLING_MODES = ("random", "balanced")
MATCHING_MODES = ("exact", "region")


@dataclass(frozen=True)
class PixelPairSamplerConfig:
    sampling: str = "balanced"  # 'random' | 'balanced'
    matching: str = "region"  # 'exact' | 'region'
    num_pairs: int = 1024  # pixel pairs per view pair (the paper: 81,920 per batch of 16 view pairs)

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {self.sampling!r}")
        if self.matching not in MATCHING_MODES:
            raise ValueError(f"matching must be one of {MATCHING_MODES}, got {self.matching!r}")
        if self.num_pairs < 1:
            raise ValueError(f"num_pairs must be >= 1, got {self.num_pairs}")


@dataclass
class PixelPairs:
    """``pixels_a``, ``pixels_b`` (N, 2) int64 (u, v); ``region_a`` (N,) region of each p (-1 if no regions)."""

    pixels_a: np.ndarray
    pixels_b: np.ndarray
    region_a: np.ndarray

    def __len__(self) -> int:
        return int(self.pixels_a.shape[0])


def _group_by(labels: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices sorted by label, group start offsets and group sizes (counting sort)."""
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return order, starts, sizes


def _draw_in_groups(order, starts, sizes, groups, rng) -> np.ndarray:
    """One uniform member (index into the sorted array's source) of each group in ``groups``."""
    offs = np.floor(rng.random(groups.size) * sizes[groups]).astype(np.int64)
    return order[starts[groups] + np.minimum(offs, sizes[groups] - 1)]


def _split_budget(total: int, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """``total`` split into ``n_groups`` counts differing by at most one (remainder to random groups)."""
    counts = np.full(n_groups, total // n_groups, dtype=np.int64)
    counts[rng.choice(n_groups, size=total % n_groups, replace=False)] += 1
    return counts


def sample_pixel_pairs(
    corr: Correspondences,
    config: PixelPairSamplerConfig = PixelPairSamplerConfig(),
    *,
    regions_a: Optional[np.ndarray] = None,
    regions_b: Optional[np.ndarray] = None,
    matches: Optional[RegionMatches] = None,
    rng: Optional[np.random.Generator] = None,
) -> PixelPairs:
    """Sample ``config.num_pairs`` positive pixel pairs (fewer only if no pixel is eligible: then 0).

    ``regions_a`` is needed for balanced sampling and region matching; ``regions_b`` and ``matches``
    (from :func:`~selfsup_perception.core.registration.regions.match_regions`) for region matching.
    """
    rng = rng if rng is not None else np.random.default_rng()
    needs_regions = config.sampling == "balanced" or config.matching == "region"
    if needs_regions and regions_a is None:
        raise ValueError(f"{config.sampling}/{config.matching} sampling needs regions_a")
    if config.matching == "region" and (regions_b is None or matches is None):
        raise ValueError("region matching needs regions_b and matches")
    empty = PixelPairs(np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
    if len(corr) == 0:
        return empty

    ids_a = np.full(len(corr), -1, dtype=np.int64)
    if regions_a is not None:
        regions_a = np.asarray(regions_a)
        if regions_a.shape != corr.valid.shape:
            raise ValueError(f"regions_a has shape {regions_a.shape}, expected {corr.valid.shape}")
        ids_a = regions_a.reshape(-1)[corr.flat_a()].astype(np.int64)
    eligible = np.arange(len(corr))
    if config.matching == "region":
        if regions_b is None or np.asarray(regions_b).shape != corr.shape_b:
            raise ValueError(f"regions_b must have shape {corr.shape_b}")
        has_match = np.zeros(ids_a.max() + 1, dtype=bool)
        m = matches.match[: has_match.size]
        has_match[: m.size] = m >= 0
        eligible = eligible[has_match[ids_a]]
    if eligible.size == 0:
        return empty

    # First pixel p.
    n = config.num_pairs
    if config.sampling == "random":
        chosen = eligible[rng.integers(0, eligible.size, size=n)]
    else:
        labels = ids_a[eligible]
        n_groups = int(labels.max()) + 1
        order, starts, sizes = _group_by(labels, n_groups)
        present = np.nonzero(sizes > 0)[0]
        per_region = _split_budget(n, present.size, rng)
        groups = np.repeat(present, per_region)
        chosen = eligible[_draw_in_groups(order, starts, sizes, groups, rng)]
    pixels_a = corr.pixels_a[chosen]
    region_a = ids_a[chosen]

    # Second pixel q.
    if config.matching == "exact":
        pixels_b = corr.pixels_b_int[chosen]
    else:
        rb = np.asarray(regions_b).reshape(-1).astype(np.int64)
        n_b = int(rb.max()) + 1
        order, starts, sizes = _group_by(rb, n_b)
        target = matches.match[region_a]
        flat = _draw_in_groups(order, starts, sizes, target, rng)
        w_b = corr.shape_b[1]
        pixels_b = np.stack([flat % w_b, flat // w_b], axis=1).astype(np.int64)
    return PixelPairs(pixels_a=pixels_a.astype(np.int64), pixels_b=pixels_b, region_a=region_a)
