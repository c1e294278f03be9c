"""Bottom-up baselines: segmentation of RGB-D without learning.

* Colour (:func:`bottom_up_instances`): pixels higher than ``min_height`` above the fitted table
  plane are segmented with Felzenszwalb's graph-based method (scikit-image) on the RGB image; each
  segment that is large enough becomes an instance, scored by the fraction of its pixels above the
  table. This is the 'bottom-up' comparison of the self-supervised instance segmentation papers.
* Depth (:func:`depth_bottom_up`): objects as the connected regions standing above the table plane,
  split where the depth jumps (occlusion boundaries between objects). On a real frame with a
  ground-truth mask, a many-coloured toy fell into 48 colour segments (best IoU 0.08) while its region
  above the table matched at IoU 0.92 (issue 11): depth separates objects on a table far better than
  colour. Touching objects at the same depth stay merged (no colour split here).

Both skip a frame without a usable table plane: no instances, and the depth variant says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np
from scipy import ndimage
from skimage.segmentation import felzenszwalb

from selfsup_perception.core.geometry.table_plane import TablePlane, find_table_plane
from selfsup_perception.core.types import RgbdFrame


@dataclass(frozen=True)
class BottomUpConfig:
    scale: float = 200.0
    sigma: float = 0.8
    min_size: int = 40  # pixels at 640x480
    min_height: float = 0.008  # metres above the table
    min_area: int = 80  # pixels at 640x480


def bottom_up_instances(frame: RgbdFrame, config: BottomUpConfig = BottomUpConfig()) -> list[tuple[np.ndarray, float]]:
    """(mask, score) instances of one RGB-D frame; none when the frame has no usable table plane."""
    found = find_table_plane(frame, rng=np.random.default_rng(0))
    if not found.found:
        return []
    plane = found.plane
    height = plane.height_image(frame)
    above = np.nan_to_num(height, nan=0.0) > config.min_height
    s = frame.rgb.shape[0] * frame.rgb.shape[1] / (640 * 480)
    labels = felzenszwalb(frame.rgb, scale=config.scale, sigma=config.sigma, min_size=max(int(config.min_size * s), 1))
    out = []
    for seg in np.unique(labels[above]):
        region = labels == seg
        inside = region & above
        if inside.sum() < config.min_area * s:
            continue
        # split disconnected parts of one colour segment into separate instances
        parts, n = ndimage.label(inside)
        for k in range(1, n + 1):
            m = parts == k
            if m.sum() >= config.min_area * s:
                out.append((m, float(m.sum() / region.sum())))
    return out


@dataclass(frozen=True)
class DepthBottomUpConfig:
    """Parameters of :func:`depth_bottom_up` (metres; pixels at 640x480, areas scaled)."""

    min_height: float = 0.015  # above the table plane: object
    max_height: float = 0.5  # higher than this is no object standing on a table (walls, people, shelves)
    jump_abs: float = 0.02  # a depth step between neighbours larger than jump_abs + jump_rel * depth
    jump_rel: float = 0.03  # ... is an occlusion boundary
    min_area: int = 400
    max_area_fraction: float = 0.25  # larger regions are scenery (the floor's edge, a chair), not objects
    regrow_px: float = 3.0  # boundary pixels rejoin the nearest region within this distance
    min_support: float = 0.3  # a region with less of its outline on the table ...
    min_shared_outline: float = 0.3  # ... and this much of it on another region is merged into that one


@dataclass
class BottomUpResult:
    """Instances (mask, score) of one frame, or none and the reason (e.g. no table in view)."""

    instances: list = field(default_factory=list)
    reason: str = ""
    plane: Optional[TablePlane] = None


def depth_bottom_up(frame: RgbdFrame, config: DepthBottomUpConfig = DepthBottomUpConfig(),
                    plane: Optional[TablePlane] = None) -> BottomUpResult:
    """Objects of one RGB-D frame as regions above the table plane, split at depth discontinuities.

    1. The table plane (:func:`find_table_plane`, any viewpoint) unless ``plane`` is given; no plane ->
       no instances and the reason.
    2. Candidate pixels: valid depth with ``min_height`` < height < ``max_height``.
    3. Pixels next to a depth jump (> ``jump_abs + jump_rel * depth`` to a 4-neighbour) are taken out,
       the rest is split into 4-connected regions; regions of at least ``min_area`` (scaled) and at most
       ``max_area_fraction`` of the image are kept and the boundary pixels rejoin the nearest kept region
       within ``regrow_px``. A region with less than ``min_support`` of its outline on the table and at
       least ``min_shared_outline`` of it on another region (an object's self-occluded part, e.g. a
       bowl's inside behind its rim) is merged into that region.
    4. Score: the fraction of the region's 3-px outer ring that is table or lower (an object standing
       on the table is surrounded by it), times the plane's confidence.
    """
    if plane is None:
        found = find_table_plane(frame, rng=np.random.default_rng(0))
        if not found.found:
            return BottomUpResult([], f"skipped: {found.reason}")
        plane, confidence = found.plane, found.confidence
    else:
        confidence = 1.0
    h, w = frame.shape
    s = h * w / (640 * 480)
    depth = np.asarray(frame.depth, dtype=np.float32)
    height = plane.height_image(frame)
    with np.errstate(invalid="ignore"):
        cand = (height > config.min_height) & (height < config.max_height)
        tol = config.jump_abs + config.jump_rel * depth
        jump_x = np.abs(np.diff(depth, axis=1)) > np.minimum(tol[:, 1:], tol[:, :-1])
        jump_y = np.abs(np.diff(depth, axis=0)) > np.minimum(tol[1:], tol[:-1])
    edge = np.zeros((h, w), bool)
    edge[:, 1:] |= jump_x
    edge[:, :-1] |= jump_x
    edge[1:] |= jump_y
    edge[:-1] |= jump_y
    n, comp, stats, _ = cv2.connectedComponentsWithStats((cand & ~edge).astype(np.uint8), connectivity=4)
    area = stats[:, cv2.CC_STAT_AREA]
    ok = (area >= config.min_area * s) & (area <= config.max_area_fraction * h * w)
    ok[0] = False
    lut = np.where(ok, np.arange(n), 0).astype(np.int32)
    lab = lut[comp]
    if not ok.any():
        return BottomUpResult([], "no object above the table", plane)
    # Boundary pixels (and small fragments) of the candidates rejoin the nearest kept region.
    rest = cand & (lab == 0)
    if rest.any():
        dist, idx = cv2.distanceTransformWithLabels((lab == 0).astype(np.uint8), cv2.DIST_L2, 3,
                                                    labelType=cv2.DIST_LABEL_PIXEL)
        zy, zx = np.nonzero(lab)
        near_lut = np.zeros(int(idx.max()) + 1, dtype=np.int32)
        near_lut[idx[zy, zx]] = lab[zy, zx]
        near = rest & (dist <= config.regrow_px * np.sqrt(s))
        lab[near] = near_lut[idx[near]]
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    low = ~(height > config.min_height)  # table, below it or no depth
    # A region that does not stand on the table but is enclosed by another region is that object's
    # self-occluded part (a bowl's inside behind its front rim): merge it into the neighbour it shares
    # most of its outline with.
    ring_of = {}
    for k in np.flatnonzero(ok):
        m = lab == k
        ring_of[k] = cv2.dilate(m.astype(np.uint8), kernel).astype(bool) & ~m
    for k in sorted(ring_of, key=lambda i: area[i]):
        ring = ring_of[k]
        if not ring.any() or float(low[ring].mean()) >= config.min_support:
            continue
        nb = lab[ring]
        nb = nb[(nb > 0) & (nb != k)]
        if nb.size < config.min_shared_outline * ring.sum():
            continue
        target = int(np.bincount(nb).argmax())
        lab[lab == k] = target
        ok[k] = False
        m = lab == target
        ring_of[target] = cv2.dilate(m.astype(np.uint8), kernel).astype(bool) & ~m
    out = []
    for k in np.flatnonzero(ok):
        m = lab == k
        ring = ring_of[k]
        support = float(low[ring].mean()) if ring.any() else 0.0
        out.append((m, support * confidence))
    out.sort(key=lambda t: -t[1])
    return BottomUpResult(out, "found" if out else "no object above the table", plane)
