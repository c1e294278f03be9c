"""A grasp outcome is itself a label (Pathak et al., "Learning instance segmentation by interaction": the
robot grasps a hypothesised object, and whether something came up confirms or rejects the hypothesis).

:meth:`GraspOutcomeLabeler.label` on one pick-and-place :class:`InteractionSample` (``kind`` GRASP, pick at
``start_point`` / ``action_pixel``, place at ``end_point``):

0. Data conditions first, as the flow labeler: an arm failure (``outcome`` FAILED), a push given to this
   labeler, no depth, depth without a valid pixel, millimetres stored as float, or no table plane in view
   give a *skipped* label (``kept=False``, reason ``"skipped: ..."``, ``stats['skipped']``), never an
   exception; malformed inputs (shapes, dtypes, a non-finite action pixel) raise ``ValueError``.
1. Heights above the table plane (:func:`find_table_plane` on the before frame, applied to both frames;
   holes filled with the lowest valid height within ``hole_fill_px``, :func:`fill_height_holes`).
2. Camera motion between the frames as in the flow labeler (:func:`estimate_ego_motion`: the poses when
   they differ, else a homography of the background flow): the after heights are looked up where each
   before pixel went (``ha(p + ego(p))``). Camera motion above ``max_ego_motion_px`` -> discarded.
3. *Vanished* pixels: above the table before (>= ``table_height``), table after. The object at the pick is
   the region above the table containing the action pixel (or the nearest such pixel within
   ``search_px``), cut at depth jumps, joined by neighbouring pieces that vanished too
   (:func:`vacated_object`).
4. Outcome:

   * the object left at least ``min_vacated_fraction`` of its region -> **confirmed**: the positive mask is
     its region in the before frame, with every vanished piece touching it (``join_vanished``: depth jumps
     cut a steep or noisy side into pieces), grown by up to ``completion_px`` into neighbouring pixels that
     are not table by depth and whose colour changed, and by up to ``hole_growth_px`` through pixels that
     had no depth before (or were lower than ``table_height``, ``hole_growth_low``), are table after and
     changed colour (a dark or shiny object's missing depth; the colour compared after a per-channel gain
     fitted on the table, ``normalise_lighting``), holes filled, within the flow labeler's area filters;
   * fewer than ``min_area_px`` pixels vanished within ``negative_check_radius_px`` of the pick and no
     object stands there by depth -> **rejected**: a negative example (nothing there, the action pixel is
     background);
   * nothing vanished although an object stands at the pick (the grasp slipped) -> discarded by default:
     the hypothesis is rejected (``stats['grasp_failed']``), but the pixel is not background, and a negative
     would teach that it is; ``negative_on_failed_grasp=True`` makes it a negative anyway;
   * the object left only part of its region (pushed aside, toppled, dropped back) or the mask is too
     small/large -> discarded with the reason.

   ``stats['appeared_at_place']`` is the fraction of the pixels within ``place_radius_px`` of the place
   point (projected into the after image) that are above the table after and were table before: the
   object showing up where it was put (a statistic, not a filter: a dropped object still vanished from the
   pick, and its region is still an object).

Resolution scaling as the flow labeler: pixel distances x s, areas x s^2, s = sqrt(H W / 640x480).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

from selfsup_perception.core.geometry.table_plane import TablePlane, TablePlaneConfig, find_table_plane
from selfsup_perception.core.labeling.ego_motion import EgoMotionConfig, estimate_ego_motion
from selfsup_perception.core.labeling.flow_labeler import (
    check_sample,
    fill_height_holes,
    fill_mask_holes,
    resolution_scale,
    sample_data_problem,
    skipped_label,
    vacated_object,
)
from selfsup_perception.core.labeling.optical_flow import FlowConfig, compute_flow, to_gray_u8
from selfsup_perception.core.types import InteractionKind, InteractionOutcome, InteractionSample, MaskLabel


@dataclass(frozen=True)
class GraspOutcomeConfig:
    """Grasp-outcome labeler parameters; pixel values are for 640x480 and scaled (see module doc)."""

    table: TablePlaneConfig = field(default_factory=TablePlaneConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)  # only for the camera-motion estimate
    ego_motion: EgoMotionConfig = field(default_factory=EgoMotionConfig)
    table_height: float = 0.01  # metres: pixels lower than this above the plane are table
    hole_fill_px: float = 4.0
    depth_jump_m: float = 0.015  # objects that touch at different depths stay apart
    search_px: float = 10.0  # the object may start this far from the action pixel
    min_vacated_fraction: float = 0.6  # share of the object's region that must be table after
    negative_check_radius_px: float = 25.0  # "nothing vanished" is judged within this radius of the pick
    negative_on_failed_grasp: bool = False  # a slipped grasp at an object: negative (True) or discarded
    min_area_px: float = 100.0
    max_area_fraction: float = 0.025
    max_ego_motion_px: float = 20.0
    texture_threshold: float = 20.0  # Sobel magnitude of a pixel the homography may use
    completion_px: float = 3.0
    completion_margin: float = 30.0  # sum of 3 channel differences (0..255) that counts as changed
    completion_min_height: float = 0.003
    hole_growth_px: float = 40.0  # how far the mask may grow through pixels without depth before (0 = off)
    hole_growth_needs_change: bool = True
    join_vanished: bool = True
    hole_growth_low: bool = True
    normalise_lighting: bool = True  # colour change after a per-channel gain fitted on the table (both frames)
    place_radius_px: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.max_area_fraction <= 1:
            raise ValueError(f"max_area_fraction must be in (0, 1], got {self.max_area_fraction}")
        if not 0 < self.min_vacated_fraction <= 1:
            raise ValueError(f"min_vacated_fraction must be in (0, 1], got {self.min_vacated_fraction}")
        for name in ("table_height", "depth_jump_m", "negative_check_radius_px", "max_ego_motion_px"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.min_area_px < 0 or self.search_px < 0 or self.completion_px < 0:
            raise ValueError("min_area_px, search_px and completion_px must be non-negative")


def _disk(shape: tuple[int, int], u: float, v: float, radius: float) -> np.ndarray:
    h, w = shape
    yy, xx = np.ogrid[0:h, 0:w]
    return (xx - u) ** 2 + (yy - v) ** 2 <= radius * radius


class GraspOutcomeLabeler:
    """Mask of the object a grasp lifted (confirmed), or a negative where nothing was there (rejected)."""

    name = "grasp_outcome"
    version = "1"

    def __init__(self, config: Optional[GraspOutcomeConfig] = None):
        self.config = config or GraspOutcomeConfig()

    def label(self, sample: InteractionSample, plane: Optional[TablePlane] = None) -> MaskLabel:
        """Label one grasp; ``plane`` (fitted on ``sample.before``) may be passed to skip the fit."""
        cfg = self.config
        t0 = time.perf_counter()
        if sample.kind != InteractionKind.GRASP:
            return skipped_label(sample, self.name, f"not a grasp ({InteractionKind(sample.kind).name.lower()}): "
                                                    "the grasp-outcome labeler labels grasps only", t0)
        if sample.outcome == InteractionOutcome.FAILED:
            return skipped_label(sample, self.name, f"the arm failed: {sample.message or 'no message'}", t0)
        problem = sample_data_problem(sample)
        if problem is not None:
            return skipped_label(sample, self.name, problem, t0)
        h, w = check_sample(sample)
        s = resolution_scale((h, w))
        min_area, max_area = cfg.min_area_px * s * s, cfg.max_area_fraction * h * w
        if plane is None:
            found = find_table_plane(sample.before, cfg.table, np.random.default_rng(cfg.seed))
            if not found.found:
                return skipped_label(sample, self.name, found.reason, t0)
            plane = found.plane
        fill = int(round(cfg.hole_fill_px * s))
        height_b = plane.height_image(sample.before)
        hb = fill_height_holes(height_b, fill)
        ha = fill_height_holes(plane.height_image(sample.after), fill)

        # camera motion, as the flow labeler removes it
        flow = compute_flow(sample.before.rgb, sample.after.rgb, cfg.flow)
        gray = to_gray_u8(sample.before.rgb)
        gx_, gy_ = cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)
        textured = cv2.magnitude(gx_, gy_) > cfg.texture_threshold
        try:
            ego = estimate_ego_motion(sample.before, sample.after, flow, textured, height_b,
                                      plane.camera_plane(sample.before.camera_to_world), cfg.ego_motion, s)
        except ValueError as exc:  # a pose beyond the orthonormality tolerance
            return skipped_label(sample, self.name, f"bad camera pose: {exc}", t0)
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        a_seen = sample.after.rgb
        if ego.compensated:  # the after frame seen from the before camera
            mx, my = gx + ego.flow[..., 0], gy + ego.flow[..., 1]
            ha = cv2.remap(ha, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
            a_seen = cv2.remap(a_seen, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        with np.errstate(invalid="ignore"):
            vanished = (hb >= cfg.table_height) & (ha < cfg.table_height)
        u, v = (float(x) for x in sample.action_pixel)
        near = _disk((h, w), u, v, cfg.negative_check_radius_px * s)
        vanished_near = int((vanished & near).sum())
        region, vacated = vacated_object(hb, ha, sample.before.depth, sample.action_pixel, cfg.table_height,
                                         cfg.depth_jump_m, int(round(cfg.search_px * s)), cfg.min_vacated_fraction)
        mask = np.zeros((h, w), dtype=bool)
        stats = {"area": 0, "object_area": int(region.sum()), "vacated_fraction": vacated,
                 "vanished_near_action": vanished_near, "scale": s, "ego_motion": ego.source,
                 "ego_motion_px": ego.max_px, "ego_motion_reason": ego.reason, "source": "grasp",
                 "grasp_failed": False, "appeared_at_place": self._appeared_at_place(sample, plane, cfg, s)}

        def out(kept: bool, reason: str, negative: bool = False) -> MaskLabel:
            stats["area"] = int(mask.sum())
            stats["time_ms"] = 1000.0 * (time.perf_counter() - t0)
            return MaskLabel(mask=mask, is_negative=negative, kept=kept, reason=reason, labeler=self.name,
                             stats=stats)

        if ego.max_px > cfg.max_ego_motion_px * s:
            return out(False, f"large camera motion: {ego.max_px:.1f} px > {cfg.max_ego_motion_px * s:.1f} px "
                              f"({ego.source})")
        place = stats["appeared_at_place"]
        place_note = "" if not np.isfinite(place) else f"; {100 * place:.0f} % of the place area filled"
        if region.any() and vacated >= cfg.min_vacated_fraction:
            # confirmed: the object at the pick was lifted. Its edge and lowest centimetre (no depth, or low):
            # neighbours that are not table by depth and whose colour changed (the object left them).
            changed = self._colour_changed(sample.before.rgb, a_seen, hb, ha, cfg)
            with np.errstate(invalid="ignore"):
                grow = (changed & ~(height_b < cfg.completion_min_height)).astype(np.uint8)
            m = region.astype(np.uint8)
            k3 = np.ones((3, 3), np.uint8)
            if cfg.join_vanished:
                # the whole object left: every vanished piece touching the region is part of it (depth jumps cut a
                # steep or noisy side, e.g. a mug's, into pieces the region does not join); objects that stayed
                # never vanish
                n, comp = cv2.connectedComponents(vanished.astype(np.uint8), connectivity=8)
                ids = np.unique(comp[cv2.dilate(m, np.ones((5, 5), np.uint8)).astype(bool)])
                m |= np.isin(comp, ids[ids > 0]).astype(np.uint8)
            for _ in range(int(round(cfg.completion_px * s))):
                m |= cv2.dilate(m, k3) & grow
            if cfg.hole_growth_px > 0:
                # the parts of a dark or shiny object that had no depth before (realistic world: most of a dark
                # object's pixels): no depth before, table after, connected to the region; with
                # hole_growth_needs_change, only where the colour changed too (the band beside an object that a
                # stereo camera cannot see is table before and after)
                with np.errstate(invalid="ignore"):
                    unseen = ~np.isfinite(height_b) & (ha < cfg.table_height)
                    if cfg.hole_growth_needs_change:
                        unseen &= changed
                    if cfg.hole_growth_low:  # an object's parts lower than table_height whose colour changed
                        unseen |= changed & (height_b >= cfg.completion_min_height) & (ha < cfg.table_height)
                unseen = unseen.astype(np.uint8)
                for _ in range(int(round(cfg.hole_growth_px * s))):
                    grown = m | (cv2.dilate(m, k3) & unseen)
                    if np.array_equal(grown, m):
                        break
                    m = grown
            mask = fill_mask_holes(m.astype(bool))
            area = int(mask.sum())
            if area > max_area:
                return out(False, f"mask too large: {area} px > {max_area:.0f} px")
            if area < min_area:
                return out(False, f"mask too small: {area} px < {min_area:.0f} px")
            return out(True, f"grasp confirmed the object: it left {100 * vacated:.0f} % of its pixels{place_note}")
        if vanished_near < min_area:
            if stats["object_area"] < min_area:  # nothing, or a speck of depth noise, above the table there
                return out(True, f"grasp rejected: no object at the pick ({stats['object_area']} px above the "
                                 f"table) and nothing vanished ({vanished_near} px < {min_area:.0f} px): negative example",
                       negative=True)
            stats["grasp_failed"] = True
            if cfg.negative_on_failed_grasp:
                return out(True, f"grasp failed at an object ({stats['object_area']} px above the table stayed): "
                                 "negative example (negative_on_failed_grasp)", negative=True)
            return out(False, f"grasp failed: the object at the pick ({stats['object_area']} px above the table) "
                              "stayed; the hypothesis is rejected but the pixel is not background")
        mask = region
        if not region.any():
            return out(False, f"{vanished_near} px vanished near the pick but no object stood at the action pixel")
        return out(False, f"the object at the pick left only {100 * vacated:.0f} % of its pixels "
                          f"(< {100 * cfg.min_vacated_fraction:.0f} %): moved or dropped, not lifted away")

    @staticmethod
    def _colour_changed(before_rgb: np.ndarray, after_rgb: np.ndarray, hb: np.ndarray, ha: np.ndarray,
                        cfg: GraspOutcomeConfig) -> np.ndarray:
        """(H, W) bool: the sum of the 3 channel differences of 3x3-blurred images exceeds ``completion_margin``;
        with ``normalise_lighting``, the after image is first scaled per channel by the median ratio over pixels
        that are table in both frames (a light that changed between the frames)."""
        b = cv2.blur(before_rgb, (3, 3)).astype(np.float32)
        a = cv2.blur(after_rgb, (3, 3)).astype(np.float32)
        if cfg.normalise_lighting:
            with np.errstate(invalid="ignore"):
                table = (np.abs(hb) < cfg.table_height) & (np.abs(ha) < cfg.table_height)
            if table.sum() >= 100:
                gain = np.median(b[table] + 1.0, axis=0) / np.median(a[table] + 1.0, axis=0)  # (3,)
                a = a * gain.astype(np.float32)
        return np.abs(b - a).sum(axis=2) > cfg.completion_margin

    @staticmethod
    def _appeared_at_place(sample: InteractionSample, plane: TablePlane, cfg: GraspOutcomeConfig,
                           s: float) -> float:
        """Fraction of the after pixels within ``place_radius_px`` of the place point that are above the table
        after and were table before (same pixel; the camera motion is a few pixels); NaN when the place point
        is behind the camera or out of view."""
        after = sample.after
        p = np.linalg.inv(np.asarray(after.camera_to_world, np.float64)) @ np.append(
            np.asarray(sample.end_point, np.float64), 1.0)
        if not p[2] > 0:
            return float("nan")
        k = after.intrinsics
        u, v = k.fx * p[0] / p[2] + k.cx, k.fy * p[1] / p[2] + k.cy
        h, w = after.rgb.shape[:2]
        if not (0 <= u < w and 0 <= v < h):
            return float("nan")
        disk = _disk((h, w), u, v, cfg.place_radius_px * s)
        with np.errstate(invalid="ignore"):
            appeared = (plane.height_image(after) >= cfg.table_height) & (plane.height_image(sample.before)
                                                                          < cfg.table_height)
        return float(appeared[disk].mean())
