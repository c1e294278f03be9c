"""Dense visual descriptors: spatial expectation, augmentation with known mappings, matching, metrics, baselines.

Losses live in :mod:`selfsup_perception.core.learning.losses.correspondence` and
:mod:`selfsup_perception.core.learning.losses.alignment`; the network in
:mod:`selfsup_perception.core.learning.models.descriptor_net`; the training task in
:mod:`selfsup_perception.core.learning.tasks.descriptors`. See docs/descriptors.md.
"""

from selfsup_perception.core.descriptors.matching import compute_descriptor_image, find_correspondences
from selfsup_perception.core.descriptors.metrics import matching_metrics, pck, pck_auc, normalized_mean_error

__all__ = [
    "compute_descriptor_image",
    "find_correspondences",
    "matching_metrics",
    "normalized_mean_error",
    "pck",
    "pck_auc",
]
