"""The registry of a static scene's views: duplicate filter, overlap, pair selection, regions (ROS-free).

A :class:`ViewRegistry` sits on a :class:`~selfsup_perception.core.registration.pair_store.PairStore`
and keeps the geometry (depth, intrinsics, pose) of every registered view in memory, which is all
the overlap test needs. Adding a view:

1. its view overlap (IoU of co-visible pixels, depth reprojection at ``overlap_stride``) with every
   registered view within ``max_baseline_m`` is computed;
2. a view overlapping a registered one by more than ``duplicate_iou`` (the camera did not move) is
   refused, with the view it duplicates;
3. otherwise it is stored atomically with its Felzenszwalb regions (computed at ``region_size``),
   and the pairs whose IoU lies in [``iou_low``, ``iou_high``] (RegConsist: [0.3, 0.9]) are stored
   *before* anyone is told about them, so a crash loses nothing.

:meth:`pair_correspondences` gives the depth+pose pixel correspondences of a stored pair, uniformly
subsampled to ``max_correspondences``. Used by the registration node and by bag replay (``views``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from selfsup_perception.core.registration.pair_store import PairStore, StoredPair, pair_id_of
from selfsup_perception.core.registration.regions import FelzenszwalbConfig, felzenszwalb_regions
from selfsup_perception.core.registration.reprojection import (
    DEFAULT_DEPTH_TOLERANCE,
    DEFAULT_RELATIVE_DEPTH_TOLERANCE,
    correspondences,
    view_overlap,
)
from selfsup_perception.core.types import RgbdFrame

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewRegistryConfig:
    iou_low: float = 0.3
    iou_high: float = 0.9
    duplicate_iou: float = 0.97
    min_valid_depth_fraction: float = 0.05  # views with less valid depth cannot be registered
    depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE  # m
    relative_depth_tolerance: float = DEFAULT_RELATIVE_DEPTH_TOLERANCE
    overlap_stride: int = 4
    max_baseline_m: float = 0.0  # 0 = compare with every registered view
    max_correspondences: int = 5000
    compute_regions: bool = True
    region_size: tuple[int, int] = (160, 120)  # (width, height)
    felzenszwalb: FelzenszwalbConfig = field(default_factory=FelzenszwalbConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.iou_low <= self.iou_high <= 1.0:
            raise ValueError(f"need 0 <= iou_low <= iou_high <= 1, got [{self.iou_low}, {self.iou_high}]")
        if not self.iou_high < self.duplicate_iou <= 1.0 + 1e-9:
            raise ValueError(f"duplicate_iou must be in (iou_high, 1], got {self.duplicate_iou}")
        if self.overlap_stride < 1 or self.max_correspondences < 1:
            raise ValueError("overlap_stride and max_correspondences must be >= 1")
        if self.max_baseline_m < 0 or not 0.0 <= self.min_valid_depth_fraction <= 1.0:
            raise ValueError("max_baseline_m must be >= 0 and min_valid_depth_fraction in [0, 1]")


@dataclass(frozen=True)
class AddedView:
    """Outcome of :meth:`ViewRegistry.add_view`: a new view and its pairs, or why it was not stored."""

    view_id: Optional[str]  # None: not stored (a duplicate, or unusable: see ``reason``)
    pairs: list[StoredPair]
    compared: int  # registered views it was compared with
    duplicate_of: Optional[str] = None
    duplicate_iou: float = 0.0
    reason: str = ""

    @property
    def stored(self) -> bool:
        return self.view_id is not None

    @property
    def is_duplicate(self) -> bool:
        return self.duplicate_of is not None


def subsample_correspondences(pixels_a: np.ndarray, pixels_b: np.ndarray, max_count: int,
                              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_count`` correspondences, a uniform subsample kept in the original (row-major) order."""
    if len(pixels_a) <= max_count:
        return pixels_a, pixels_b
    keep = np.sort(rng.choice(len(pixels_a), size=max_count, replace=False))
    return pixels_a[keep], pixels_b[keep]


def pose_matches(frame: RgbdFrame, commanded_pose: np.ndarray, tolerance_m: float) -> bool:
    """Whether a captured view was taken where the camera was commanded to be (position within tolerance)."""
    return bool(np.linalg.norm(frame.camera_to_world[:3, 3] - np.asarray(commanded_pose)[:3, 3]) <= tolerance_m)


class ViewRegistry:
    def __init__(self, store: PairStore, config: ViewRegistryConfig = ViewRegistryConfig()):
        self.store = store
        self.config = config
        # depth, intrinsics and pose of every registered view (what the overlap test needs)
        self._geometry: dict[str, tuple[np.ndarray, object, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._geometry)

    def load_registered(self) -> list[str]:
        """Load the geometry of the store's registered views; returns the ids that were missing or corrupt."""
        skipped = []
        for view_id in self.store.registered_view_ids():
            frame = self.store.load_view_or_quarantine(view_id)
            if frame is None:
                skipped.append(view_id)
                continue
            self._geometry[view_id] = (frame.depth, frame.intrinsics, frame.camera_to_world)
        return skipped

    def overlaps(self, frame: RgbdFrame, exclude: str = "") -> dict[str, float]:
        """View IoU of ``frame`` with every registered view (within ``max_baseline_m``)."""
        c = self.config
        centre = frame.camera_to_world[:3, 3]
        out = {}
        for vid, (depth, k, t) in self._geometry.items():
            if vid == exclude or (c.max_baseline_m > 0 and np.linalg.norm(t[:3, 3] - centre) > c.max_baseline_m):
                continue
            out[vid] = view_overlap(depth, k, t, frame.depth, frame.intrinsics, frame.camera_to_world,
                                    depth_tolerance=c.depth_tolerance,
                                    relative_depth_tolerance=c.relative_depth_tolerance, stride=c.overlap_stride)
        return out

    def regions(self, frame: RgbdFrame) -> Optional[np.ndarray]:
        """Felzenszwalb regions of ``frame`` at ``region_size`` (None when regions are off)."""
        c = self.config
        if not c.compute_regions:
            return None
        import cv2

        rgb = frame.rgb
        width, height = c.region_size
        if rgb.shape[:2] != (height, width):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        return felzenszwalb_regions(rgb, c.felzenszwalb)

    def add_view(self, frame: RgbdFrame) -> AddedView:
        """Store ``frame`` as a new view and register its pairs, unless it duplicates a registered view or has
        too little valid depth (a result with a reason, not an exception)."""
        c = self.config
        frame.validate()
        valid = float(np.isfinite(frame.depth).mean()) if frame.depth.size else 0.0
        if valid < c.min_valid_depth_fraction:
            return AddedView(None, [], 0, reason=f"too little valid depth: {100 * valid:.1f} % < "
                                                 f"{100 * c.min_valid_depth_fraction:.0f} %")
        overlaps = self.overlaps(frame)
        best = max(overlaps.items(), key=lambda kv: kv[1], default=None)
        if best is not None and best[1] > c.duplicate_iou:
            return AddedView(None, [], len(overlaps), duplicate_of=best[0], duplicate_iou=float(best[1]),
                             reason=f"duplicate: overlaps {best[0]} by IoU {best[1]:.3f} > {c.duplicate_iou}")
        view_id = self.store.next_view_id()
        self.store.write_view(view_id, frame, self.regions(frame))
        pairs = self.register(view_id, frame, overlaps)
        return AddedView(view_id, pairs, len(overlaps), reason=f"{len(pairs)} pair(s) of {len(overlaps)} compared views")

    def register(self, view_id: str, frame: RgbdFrame, overlaps: Optional[dict[str, float]] = None) -> list[StoredPair]:
        """Select and store the pairs of a stored view with every registered view (before anyone is told)."""
        c = self.config
        if overlaps is None:
            overlaps = self.overlaps(frame, exclude=view_id)
        pairs = [StoredPair(pair_id_of(vid, view_id), vid, view_id, iou) for vid, iou in overlaps.items()
                 if c.iou_low <= iou <= c.iou_high]
        self.store.register_view(view_id, pairs)
        self._geometry[view_id] = (frame.depth, frame.intrinsics, frame.camera_to_world)
        return pairs

    def pair_correspondences(self, pair: StoredPair, frame_b: RgbdFrame, rng: np.random.Generator
                             ) -> tuple[RgbdFrame, np.ndarray, np.ndarray]:
        """(frame of view A, pixels in A (N, 2), matching pixels in B (N, 2)) of a stored pair, subsampled."""
        c = self.config
        frame_a = self.store.read_view(pair.view_a)
        corr = correspondences(frame_a.depth, frame_a.intrinsics, frame_a.camera_to_world,
                               frame_b.depth, frame_b.intrinsics, frame_b.camera_to_world,
                               depth_tolerance=c.depth_tolerance, relative_depth_tolerance=c.relative_depth_tolerance)
        pa, pb = subsample_correspondences(corr.pixels_a, corr.pixels_b, c.max_correspondences, rng)
        return frame_a, pa, pb
