"""Register a stream of posed RGB-D views into a :class:`PairStore` (ROS-free).

What the registration node does per captured view, for any source of views (a replayed bag):
compare the new view with every registered one by view overlap IoU (RegConsist Sec. IV-A), drop it
when it nearly duplicates one (the camera did not move), else store it with its Felzenszwalb regions
and register its pairs whose IoU lies in ``[iou_low, iou_high]`` in one atomic index write. A view
that cannot be used (too little valid depth) is a result with a reason, not an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from selfsup_perception.core.registration.pair_store import PairStore, StoredPair, pair_id_of
from selfsup_perception.core.registration.regions import FelzenszwalbConfig, felzenszwalb_regions
from selfsup_perception.core.registration.reprojection import (
    DEFAULT_DEPTH_TOLERANCE,
    DEFAULT_RELATIVE_DEPTH_TOLERANCE,
    view_overlap,
)
from selfsup_perception.core.types import RgbdFrame


@dataclass(frozen=True)
class ViewRegistryConfig:
    iou_low: float = 0.3  # RegConsist: pairs with IoU in [0.3, 0.9]
    iou_high: float = 0.9
    duplicate_iou: float = 0.97  # a new view overlapping a stored one more than this is dropped
    min_valid_depth_fraction: float = 0.05  # views with less valid depth cannot be registered
    depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE
    relative_depth_tolerance: float = DEFAULT_RELATIVE_DEPTH_TOLERANCE
    overlap_stride: int = 4
    max_baseline_m: float = 0.0  # 0: compare with every stored view
    compute_regions: bool = True
    region_size: tuple[int, int] = (160, 120)  # (width, height) Felzenszwalb runs at
    felzenszwalb: FelzenszwalbConfig = field(default_factory=FelzenszwalbConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.iou_low <= self.iou_high <= 1.0:
            raise ValueError(f"need 0 <= iou_low <= iou_high <= 1, got [{self.iou_low}, {self.iou_high}]")
        if not self.iou_high < self.duplicate_iou <= 1.0 + 1e-9:
            raise ValueError(f"duplicate_iou must be in (iou_high, 1], got {self.duplicate_iou}")
        if self.overlap_stride < 1 or self.max_baseline_m < 0:
            raise ValueError("overlap_stride must be >= 1 and max_baseline_m >= 0")


@dataclass(frozen=True)
class RegisterResult:
    view_id: Optional[str]  # None: not stored
    pairs: int
    reason: str


class ViewRegistry:
    """Adds views to a pair store; re-reads the registered views' geometry so a run can continue a store."""

    def __init__(self, store: PairStore, config: ViewRegistryConfig = ViewRegistryConfig()):
        self.store = store
        self.config = config
        self._geometry: dict[str, tuple[np.ndarray, object, np.ndarray]] = {}
        for view_id in store.registered_view_ids():
            frame = store.load_view_or_quarantine(view_id)
            if frame is not None:
                self._geometry[view_id] = (frame.depth, frame.intrinsics, frame.camera_to_world)

    def __len__(self) -> int:
        return len(self._geometry)

    def overlaps(self, frame: RgbdFrame) -> dict[str, float]:
        c = self.config
        centre = frame.camera_to_world[:3, 3]
        out = {}
        for vid, (depth, k, pose) in self._geometry.items():
            if c.max_baseline_m > 0 and np.linalg.norm(pose[:3, 3] - centre) > c.max_baseline_m:
                continue
            out[vid] = view_overlap(depth, k, pose, frame.depth, frame.intrinsics, frame.camera_to_world,
                                    depth_tolerance=c.depth_tolerance,
                                    relative_depth_tolerance=c.relative_depth_tolerance, stride=c.overlap_stride)
        return out

    def regions(self, frame: RgbdFrame) -> Optional[np.ndarray]:
        if not self.config.compute_regions:
            return None
        import cv2

        w, h = self.config.region_size
        rgb = frame.rgb
        if rgb.shape[:2] != (h, w):
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        return felzenszwalb_regions(rgb, self.config.felzenszwalb)

    def add(self, frame: RgbdFrame) -> RegisterResult:
        """Store and register ``frame`` (or say why not)."""
        c = self.config
        frame.validate()
        valid = float(np.isfinite(frame.depth).mean())
        if valid < c.min_valid_depth_fraction:
            return RegisterResult(None, 0, f"too little valid depth: {100 * valid:.1f} % < "
                                           f"{100 * c.min_valid_depth_fraction:.0f} %")
        overlaps = self.overlaps(frame)
        best = max(overlaps.items(), key=lambda kv: kv[1], default=None)
        if best is not None and best[1] > c.duplicate_iou:
            return RegisterResult(None, 0, f"duplicate: overlaps {best[0]} by IoU {best[1]:.3f} > {c.duplicate_iou}")
        view_id = self.store.next_view_id()
        self.store.write_view(view_id, frame, self.regions(frame))
        selected = [(vid, iou) for vid, iou in overlaps.items() if c.iou_low <= iou <= c.iou_high]
        self.store.register_view(view_id, [StoredPair(pair_id_of(vid, view_id), vid, view_id, iou)
                                           for vid, iou in selected])
        self._geometry[view_id] = (frame.depth, frame.intrinsics, frame.camera_to_world)
        return RegisterResult(view_id, len(selected), f"{len(selected)} pair(s) of {len(overlaps)} compared views")
