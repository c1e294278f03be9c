"""Frame-differencing masks: the baseline of paper 003 (Table I "DeepMask frame differencing") and the
change detection of paper 001 (grasp interaction: the region that changed between before and after).

Changed pixels: max over RGB channels of |before - after| > ``color_threshold``
(0..255), or |depth_before - depth_after| > ``depth_threshold`` metres where both
are valid (``use_depth``). Then a morphological opening (``open_px``) removes
speckle and a closing (``close_px``) fills holes (elliptic kernels, sizes at
640x480 scaled by s = sqrt(H W / 640x480)). The label is the 8-connected
component containing the action pixel, else the component nearest to it within
``max_distance_px``. The mask is therefore the union of the object's old and new
positions (plus shadows) -- by construction a worse fit to the object in the
before image than flow, which is the point of the comparison.

Filters and the negative rule follow :class:`FlowMaskLabeler`: area outside
[``min_area_px``, ``max_area_fraction``] -> discarded; (almost) no change ->
negative example; change only far from the action pixel -> discarded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from selfsup_perception.core.labeling.flow_labeler import check_sample, resolution_scale, sample_data_problem, skipped_label
from selfsup_perception.core.types import InteractionSample, MaskLabel


@dataclass(frozen=True)
class FrameDifferenceConfig:
    """Frame-differencing parameters; pixel values are for 640x480 and scaled."""

    color_threshold: float = 30.0  # max channel |difference|, 0..255
    use_depth: bool = True
    depth_threshold: float = 0.01  # metres
    open_px: int = 3
    close_px: int = 7
    max_distance_px: float = 30.0  # how far the chosen component may be from the action pixel
    max_area_fraction: float = 0.025
    min_area_px: float = 100.0

    def __post_init__(self) -> None:
        if not 0 <= self.color_threshold <= 255:
            raise ValueError(f"color_threshold must be in [0, 255], got {self.color_threshold}")
        if not self.depth_threshold > 0:
            raise ValueError(f"depth_threshold must be positive, got {self.depth_threshold}")
        if not 0 < self.max_area_fraction <= 1:
            raise ValueError(f"max_area_fraction must be in (0, 1], got {self.max_area_fraction}")


def _ellipse(size: int) -> np.ndarray:
    size = max(int(size), 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


class FrameDifferenceLabeler:
    """Mask of the changed region around the action pixel (baseline)."""

    name = "frame_difference"

    def __init__(self, config: Optional[FrameDifferenceConfig] = None):
        self.config = config or FrameDifferenceConfig()

    def changed_mask(self, sample: InteractionSample) -> np.ndarray:
        """(H, W) bool of changed pixels after morphology."""
        cfg = self.config
        h, w = check_sample(sample)
        s = resolution_scale((h, w))
        a = sample.before.rgb.astype(np.int16)
        b = sample.after.rgb.astype(np.int16)
        changed = np.abs(a - b).max(axis=2) > cfg.color_threshold
        if cfg.use_depth:
            da, db = sample.before.depth, sample.after.depth
            with np.errstate(invalid="ignore"):
                changed |= np.abs(da - db) > cfg.depth_threshold  # NaN compares False
        m = changed.astype(np.uint8)
        if cfg.open_px > 1:
            m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _ellipse(round(cfg.open_px * s)))
        if cfg.close_px > 1:
            m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _ellipse(round(cfg.close_px * s)))
        return m.astype(bool)

    def label(self, sample: InteractionSample) -> MaskLabel:
        """Label one interaction; data conditions (no depth, no valid depth, millimetres as float) give a
        skipped label (``kept=False``, reason ``"skipped: ..."``), malformed inputs raise ``ValueError``."""
        cfg = self.config
        t0 = time.perf_counter()
        problem = sample_data_problem(sample)
        if problem is not None:
            return skipped_label(sample, self.name, problem, t0)
        h, w = check_sample(sample)
        s = resolution_scale((h, w))
        min_area, max_area = cfg.min_area_px * s * s, cfg.max_area_fraction * h * w
        changed = self.changed_mask(sample)
        changed_area = int(changed.sum())
        n, comp = cv2.connectedComponents(changed.astype(np.uint8), connectivity=8)
        u, v = (int(round(x)) for x in sample.action_pixel)
        chosen = 0
        if 0 <= u < w and 0 <= v < h and comp[v, u] > 0:
            chosen = int(comp[v, u])
        elif n > 1:
            # nearest changed pixel to the action pixel
            dist, idx = cv2.distanceTransformWithLabels((~changed).astype(np.uint8), cv2.DIST_L2, 5,
                                                        labelType=cv2.DIST_LABEL_PIXEL)
            uc, vc = min(max(u, 0), w - 1), min(max(v, 0), h - 1)
            extra = float(np.hypot(u - uc, v - vc))  # action pixel outside the image
            if dist[vc, uc] + extra <= cfg.max_distance_px * s:
                zy, zx = np.nonzero(changed)
                lut = np.zeros(int(idx.max()) + 1, dtype=np.int32)
                lut[idx[zy, zx]] = comp[zy, zx]
                chosen = int(lut[idx[vc, uc]])
        mask = comp == chosen if chosen > 0 else np.zeros((h, w), dtype=bool)
        area = int(mask.sum())
        stats = {"changed_area": changed_area, "area": area, "scale": s}

        def out(kept: bool, reason: str, negative: bool = False) -> MaskLabel:
            stats["time_ms"] = 1000.0 * (time.perf_counter() - t0)
            return MaskLabel(mask=mask, is_negative=negative, kept=kept, reason=reason, labeler=self.name,
                             stats=stats)

        if changed_area < min_area:
            mask = np.zeros((h, w), dtype=bool)
            stats["area"] = 0
            return out(True, f"nothing changed ({changed_area} px < {min_area:.0f} px): negative example",
                       negative=True)
        if chosen == 0:
            return out(False, f"no change near the action pixel ({changed_area} px changed elsewhere)")
        if area > max_area:
            return out(False, f"mask too large: {area} px > {max_area:.0f} px")
        if area < min_area:
            return out(False, f"mask too small: {area} px < {min_area:.0f} px")
        return out(True, "kept")
