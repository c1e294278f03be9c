"""Unsupervised regions, Cantor pairing and cross-view region matching (RegConsist Sec. III-B), ROS-free.

* Regions: Felzenszwalb-Huttenlocher graph segmentation (scikit-image ``felzenszwalb``).
* Overlap of every region of A with every region of B in ``O(|R1 ∩ R2|)``: the pair of region ids of
  each co-visible pixel is encoded as one int64 with the Cantor pairing function, and a single
  ``np.unique(return_counts=True)`` gives the intersection size of every overlapping region pair.
* Matching: each region of A goes to the region of B with the largest overlap, if that overlap
  reaches a threshold.

Felzenszwalb parameters: the paper uses ``scale = 250, sigma = 2000`` (tuned on its 5 % labels). In
scikit-image, ``scale`` is the k of the original algorithm on an image it converts to floats in
[0, 1] (it divides ``scale`` by 255 internally, so k keeps 0..255 units), and ``sigma`` is the standard
deviation in *pixels* of a Gaussian pre-blur: sigma = 2000 would blur a 640x480 image to a constant, so
the paper's value cannot be pixels (likely another implementation's units or a typo). We use
``scale = 100, sigma = 0.8, min_size = 30`` at 160x120 (scale ``min_size`` with the image area): on the
simulated tabletop this gives a few dozen regions per view that rarely cross object boundaries; see
docs/registration.md for how they were chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selfsup_perception.core.registration.reprojection import Correspondences

# Largest a + b for which the Cantor pairing fits in int64: (a+b)(a+b+1)/2 + b < 2**63.
_CANTOR_MAX_SUM = 4_294_967_294


@dataclass(frozen=True)
class FelzenszwalbConfig:
    scale: float = 100.0  # k (0..255 intensity units); larger -> fewer, larger regions
    sigma: float = 0.8  # Gaussian pre-blur, pixels
    min_size: int = 30  # minimum region size, pixels (post-processing merge)


def felzenszwalb_regions(rgb: np.ndarray, config: FelzenszwalbConfig = FelzenszwalbConfig()) -> np.ndarray:
    """(H, W) int64 region ids 0..R-1 of an (H, W, 3) uint8 image (scikit-image Felzenszwalb)."""
    from skimage.segmentation import felzenszwalb

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"rgb must be a non-empty (H, W, 3) image, got shape {rgb.shape}")
    if config.scale <= 0 or config.sigma < 0 or config.min_size < 1:
        raise ValueError(f"invalid Felzenszwalb parameters {config}")
    labels = felzenszwalb(rgb, scale=config.scale, sigma=config.sigma, min_size=config.min_size, channel_axis=-1)
    return relabel_consecutive(labels)


def relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Map arbitrary non-negative integer labels to 0..R-1 (int64), keeping their order."""
    labels = np.asarray(labels)
    if labels.size and labels.min() < 0:
        raise ValueError("region labels must be non-negative")
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int64)


def cantor_pair(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cantor pairing ``pi(a, b) = (a + b)(a + b + 1) / 2 + b`` in int64 (a, b >= 0).

    int32 would overflow once a + b >= 65,536; int64 holds a + b up to about 4.29e9.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if (a.size and a.min() < 0) or (b.size and b.min() < 0):
        raise ValueError("Cantor pairing needs non-negative integers")
    s = a + b
    if s.size and s.max() > _CANTOR_MAX_SUM:
        raise ValueError(f"a + b must be <= {_CANTOR_MAX_SUM} for int64 Cantor pairing")
    return _triangular(s) + b


def _triangular(w: np.ndarray) -> np.ndarray:
    """w (w + 1) / 2 without the int64 overflow of w (w + 1) for w near 4.29e9."""
    return np.where(w % 2 == 0, (w // 2) * (w + 1), w * ((w + 1) // 2))


def cantor_unpair(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`cantor_pair`: ``w = floor((sqrt(8z + 1) - 1) / 2)``, ``b = z - w(w+1)/2``, ``a = w - b``.

    The float square root is corrected in integer arithmetic so the inverse is exact for all int64
    pairings.
    """
    z = np.asarray(z, dtype=np.int64)
    if z.size and z.min() < 0:
        raise ValueError("Cantor codes are non-negative")
    w = np.floor((np.sqrt(8.0 * z.astype(np.float64) + 1.0) - 1.0) / 2.0).astype(np.int64)
    # Fix float rounding: need w(w+1)/2 <= z < (w+1)(w+2)/2.
    for _ in range(2):
        w = np.where(_triangular(w) > z, w - 1, w)
        w = np.where(_triangular(w + 1) <= z, w + 1, w)
    b = z - _triangular(w)
    return w - b, b


@dataclass
class RegionOverlap:
    """Overlap of regions of A (projected into B) with regions of B, over co-visible pixels only.

    For every region pair with a non-empty intersection: ``region_a``, ``region_b`` (K,) ids,
    ``intersection`` (K,) number of correspondences with A-pixel in ``region_a`` and B-pixel in
    ``region_b``; ``covisible_a`` (R_a,) correspondences per A region; ``covisible_b`` (R_b,)
    correspondences landing in each B region. Then

        iou(r, s)      = n_rs / (covisible_a[r] + covisible_b[s] - n_rs)
        fraction(r, s) = n_rs / covisible_a[r]   (share of r's visible part that lands in s)
    """

    region_a: np.ndarray
    region_b: np.ndarray
    intersection: np.ndarray
    covisible_a: np.ndarray
    covisible_b: np.ndarray

    @property
    def iou(self) -> np.ndarray:
        n = self.intersection.astype(np.float64)
        return n / (self.covisible_a[self.region_a] + self.covisible_b[self.region_b] - n)

    @property
    def fraction(self) -> np.ndarray:
        return self.intersection / self.covisible_a[self.region_a].astype(np.float64)


def _check_regions(regions: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    regions = np.asarray(regions)
    if regions.shape != tuple(shape):
        raise ValueError(f"{name} has shape {regions.shape}, expected {tuple(shape)}")
    if not np.issubdtype(regions.dtype, np.integer):
        raise ValueError(f"{name} must hold integer region ids, got {regions.dtype}")
    if regions.size and regions.min() < 0:
        raise ValueError(f"{name} must hold non-negative region ids")
    return regions.astype(np.int64, copy=False)


def region_overlap(regions_a: np.ndarray, regions_b: np.ndarray, corr: Correspondences) -> RegionOverlap:
    """All overlapping region pairs in ``O(N + |R1 ∩ R2| log)`` via Cantor pairing + one ``np.unique``.

    ``regions_a`` / ``regions_b`` are (H, W) non-negative int region ids of the two views; pixels of
    A without a correspondence do not count (so a region only partly visible in B is compared with
    the part of B it can project into).
    """
    ra = _check_regions(regions_a, corr.valid.shape, "regions_a")
    rb = _check_regions(regions_b, corr.shape_b, "regions_b")
    n_a = int(ra.max()) + 1 if ra.size else 0
    n_b = int(rb.max()) + 1 if rb.size else 0
    ids_a = ra.reshape(-1)[corr.flat_a()]
    ids_b = rb.reshape(-1)[corr.flat_b()]
    codes, counts = np.unique(cantor_pair(ids_a, ids_b), return_counts=True)
    a, b = cantor_unpair(codes)
    return RegionOverlap(
        region_a=a,
        region_b=b,
        intersection=counts.astype(np.int64),
        covisible_a=np.bincount(a, weights=counts, minlength=n_a).astype(np.int64),
        covisible_b=np.bincount(b, weights=counts, minlength=n_b).astype(np.int64),
    )


@dataclass(frozen=True)
class RegionMatchConfig:
    criterion: str = "iou"  # 'iou' or 'fraction' (see RegionOverlap)
    min_overlap: float = 0.3  # keep the best match only if its criterion value reaches this
    min_covisible_pixels: int = 10  # ignore A regions with fewer co-visible pixels


@dataclass
class RegionMatches:
    """``match`` (R_a,) int64: the matched B region of each A region, -1 if none; ``score`` (R_a,)."""

    match: np.ndarray
    score: np.ndarray

    @property
    def matched_regions(self) -> np.ndarray:
        return np.nonzero(self.match >= 0)[0]


def match_regions(
    regions_a: np.ndarray,
    regions_b: np.ndarray,
    corr: Correspondences,
    config: RegionMatchConfig = RegionMatchConfig(),
) -> RegionMatches:
    """Match each region of A to the B region with the largest overlap (RegConsist Sec. III-B).

    The paper matches "highly overlapping" regions by IoU; ``criterion='fraction'`` is offered for
    heavily over-segmented views where one A region maps onto a much larger B region.
    """
    if config.criterion not in ("iou", "fraction"):
        raise ValueError(f"criterion must be 'iou' or 'fraction', got {config.criterion!r}")
    ov = region_overlap(regions_a, regions_b, corr)
    n_a = int(np.asarray(regions_a).max()) + 1 if np.asarray(regions_a).size else 0
    match = np.full(n_a, -1, dtype=np.int64)
    score = np.zeros(n_a, dtype=np.float64)
    if ov.region_a.size == 0:
        return RegionMatches(match, score)
    s = ov.iou if config.criterion == "iou" else ov.fraction
    order = np.lexsort((-s, ov.region_a))  # by region_a, best score first
    first = np.ones(order.size, dtype=bool)
    first[1:] = ov.region_a[order][1:] != ov.region_a[order][:-1]
    best = order[first]
    ra, rb, sb = ov.region_a[best], ov.region_b[best], s[best]
    ok = (sb >= config.min_overlap) & (ov.covisible_a[ra] >= config.min_covisible_pixels)
    match[ra[ok]] = rb[ok]
    score[ra] = sb
    return RegionMatches(match, score)
