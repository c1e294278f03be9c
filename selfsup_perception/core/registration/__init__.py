"""View registration for self-supervised pre-training (ROS-free): depth-based correspondences,
view-pair selection, unsupervised regions with Cantor-paired overlaps, and pixel-pair sampling."""

from selfsup_perception.core.registration.pixel_sampling import (
    PixelPairs,
    PixelPairSamplerConfig,
    sample_pixel_pairs,
)
from selfsup_perception.core.registration.regions import (
    FelzenszwalbConfig,
    RegionMatchConfig,
    RegionMatches,
    RegionOverlap,
    cantor_pair,
    cantor_unpair,
    felzenszwalb_regions,
    match_regions,
    region_overlap,
    relabel_consecutive,
)
from selfsup_perception.core.registration.reprojection import Correspondences, correspondences, view_overlap
from selfsup_perception.core.registration.view_pairs import ViewPair, select_view_pairs

__all__ = [
    "Correspondences",
    "FelzenszwalbConfig",
    "PixelPairSamplerConfig",
    "PixelPairs",
    "RegionMatchConfig",
    "RegionMatches",
    "RegionOverlap",
    "ViewPair",
    "cantor_pair",
    "cantor_unpair",
    "correspondences",
    "felzenszwalb_regions",
    "match_regions",
    "region_overlap",
    "relabel_consecutive",
    "sample_pixel_pairs",
    "select_view_pairs",
    "view_overlap",
]
