"""View-pair selection by overlap (RegConsist Sec. IV-A "View-Pair Selection"), ROS-free.

The paper keeps the pairs of views whose IoU lies in ``[iou_low, iou_high]`` (0.3 and 0.9 for
pre-training; 0.3-0.7 was best in its ablation, Fig. 4). Selection runs once per environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import numpy as np

from selfsup_perception.core.registration.reprojection import (
    DEFAULT_DEPTH_TOLERANCE,
    DEFAULT_RELATIVE_DEPTH_TOLERANCE,
    IntrinsicsLike,
    view_overlap,
)


class ViewLike(Protocol):
    """Anything with a depth image, intrinsics and a camera-to-world pose (e.g. an RgbdFrame)."""

    depth: np.ndarray
    intrinsics: IntrinsicsLike
    camera_to_world: np.ndarray


@dataclass(frozen=True)
class ViewPair:
    index_a: int
    index_b: int
    iou: float


def select_view_pairs(
    frames: Sequence[ViewLike],
    iou_low: float = 0.3,
    iou_high: float = 0.9,
    max_pairs: Optional[int] = None,
    *,
    max_baseline: Optional[float] = None,
    stride: int = 4,
    depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE,
    relative_depth_tolerance: float = DEFAULT_RELATIVE_DEPTH_TOLERANCE,
    seed: int = 0,
) -> list[ViewPair]:
    """Unordered pairs ``i < j`` whose :func:`view_overlap` IoU is within ``[iou_low, iou_high]``.

    ``max_baseline`` (metres) skips pairs whose camera centres are farther apart without computing
    their overlap (cheap pre-filter for long trajectories). ``stride`` subsamples the depth images for
    the IoU estimate (4 -> 1/16 of the pixels). With ``max_pairs``, a uniformly random subset (seeded)
    is returned, sorted by index.
    """
    if not 0.0 <= iou_low <= iou_high <= 1.0:
        raise ValueError(f"need 0 <= iou_low <= iou_high <= 1, got [{iou_low}, {iou_high}]")
    if max_pairs is not None and max_pairs < 0:
        raise ValueError(f"max_pairs must be >= 0, got {max_pairs}")
    pairs: list[ViewPair] = []
    centres = [np.asarray(f.camera_to_world, dtype=np.float64)[:3, 3] for f in frames]
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            if max_baseline is not None and np.linalg.norm(centres[i] - centres[j]) > max_baseline:
                continue
            fa, fb = frames[i], frames[j]
            iou = view_overlap(
                fa.depth, fa.intrinsics, fa.camera_to_world, fb.depth, fb.intrinsics, fb.camera_to_world,
                depth_tolerance=depth_tolerance, relative_depth_tolerance=relative_depth_tolerance, stride=stride,
            )
            if iou_low <= iou <= iou_high:
                pairs.append(ViewPair(i, j, iou))
    if max_pairs is not None and len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(pairs), size=max_pairs, replace=False))
        pairs = [pairs[k] for k in keep]
    return pairs
