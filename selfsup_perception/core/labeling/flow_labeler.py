"""Push masks from optical flow (paper 003, Sec. III-B; reference ``aeitel/self_deepmask`` ``create_masks.py``).

Pipeline of :meth:`FlowMaskLabeler.label` on one :class:`InteractionSample`:

0. Data conditions first: no depth, depth without a valid pixel, millimetres stored as float, or no
   table plane in view (:func:`find_table_plane`, any viewpoint) give a *skipped* label
   (``kept=False``, reason ``"skipped: ..."``, ``stats['skipped']``), never an exception; malformed
   inputs (shapes, dtypes, a non-finite action pixel) still raise ``ValueError``.
1. Flow before -> after (:func:`compute_flow`: OpenCV DIS, preset ``medium``, at
   half resolution by default; 'farneback' optional). The mask lives in the
   *before* image: flow at a before pixel says where it went.
1b. Ego-motion compensation (deviation; :mod:`.ego_motion`): the flow the camera's own motion causes
   -- from depth and the two poses when they differ, then a RANSAC homography of what is left on the
   table/background when it is camera-like -- is subtracted before anything below looks at the flow
   (the end points of step 3 still use the measured flow). Camera motion above ``max_ego_motion_px``
   discards the interaction ("large camera motion"). A moving region must also have *changed the
   image* (``change_threshold``, ``min_changed_fraction``): flow errors on plain surfaces after a
   shake do not, a pushed object does.
2. Large-motion filter: mean flow magnitude (unfiltered flow) >
   ``max_mean_flow_px`` -> discard the interaction (reference: 7 px at 640x480,
   over the whole image; checked after clustering so the discarded label still
   carries its candidate mask). Deviation (``mean_flow_region``): by default
   the mean is taken over the *textured* pixels of the before image (Sobel
   magnitude > ``texture_threshold``) *outside the chosen mask* (dilated 2 px).
   Reasons: (a) DIS propagates the motion of a pushed object far into an
   untextured table (measured on the simulated table: 8-10 px mean flow on the
   table for one object pushed ~46 px), and flow is not observable on
   untextured pixels anyway; (b) in our sparse simulated scenes the pushed
   object is a large share of the textured pixels, so even the textured mean
   exceeded 7 px for ordinary 4-7 cm pushes (bench: 4 of 6 low-clutter pushes
   discarded). What the filter is meant to catch -- camera motion, several
   objects moving -- shows up outside the pushed object's mask.
   ``mean_flow_region='image'`` restores the reference statistic.
3. Table filter (paper: "setting all flow vectors that point to the estimated
   table ground plane to zero"): the plane is fitted on the before depth
   (:func:`fit_table_plane`); flow is zeroed at before pixels that are on/below the
   plane (height < ``table_height``) or have invalid depth, and at pixels whose
   flow end point p + f lands on the table / invalid depth / outside the image in
   the *after* frame (the plane is applied to the after depth; it is fitted on every ``plane_decimation``-th
   depth row and column, for speed). So both frames'
   depth is used. Deviation (depth holes): a missing height takes the lowest valid height within
   ``hole_fill_px`` (:func:`fill_height_holes`), so a dark or shiny object with a few valid returns is
   not table, while the band a stereo camera cannot see beside an object stays table. Deviation: an end point within ``end_point_tolerance_px`` (6 px at
   640x480) of an above-table pixel passes (DIS underestimates long motions at object
   boundaries; on synthetic pushes on real frames and in the simulator it raised the IoU).
4. Moving pixels: filtered magnitude > ``motion_threshold_px``.
5. Clustering (:func:`cluster_flow`): SLIC + RAG + normalized cut on the
   colour-coded flow as in the reference, at reduced resolution, then adjacent
   segments with similar mean flow are merged (see :mod:`flow_clustering` for
   the deviations and why). Only the moving regions that come within
   ``cluster_reach_sigmas`` x ``prior_sigma_px`` of the action pixel are clustered
   (the segment choice never looks farther): bounded time when much of the image moves.
6. Segment choice: the segment under the action pixel; if that pixel is
   background, up to ``prior_samples`` (50) pixels drawn from a Gaussian
   (sigma ``prior_sigma_px`` = 10 px at 640x480) around it, the first that hits a
   segment wins (reference behaviour). Holes enclosed by the chosen segment are filled
   (``fill_holes``, deviation: a bowl's inside is within ``table_height`` of the table on real depth).
6b. Mask completion (deviation, :func:`complete_mask`): the segment grows through moving pixels and by up
   to ``completion_px`` beyond them into pixels that are not table by depth and whose colour moved with the
   segment (found at p + its median flow in the after image, not where the scene would have put it): an
   object's edge and lowest centimetre, which the depth and the table filter lose.
6c. Static pieces (deviation, :func:`without_static_pieces`): a piece of the segment (cut at depth jumps) whose
   before colour is still where it was in the after image at most of its pixels did not move and leaves
   the mask (DIS smears a pushed object's motion over a plain neighbour).
7. Mask filters: area > ``max_area_fraction`` (2.5 %) of the image or <
   ``min_area_px`` (100 px at 640x480) -> discard; std of the flow *magnitude*
   inside the mask > ``max_flow_std_px`` (15 px at 640x480) -> discard (rotation;
   the reference comments say angle, the code uses magnitude, so do we).
7b. Flow check (deviation): at least ``min_flow_match`` of the mask's flow-measured pixels must be found in
   the after image where their flow says they went (:func:`flow_match_fraction`); else discarded (a
   fragment of an object whose motion DIS lost, or an object that toppled).
7c. Depth fallback (deviation, :func:`vacated_object`): when no moving segment is found at the action
   pixel (nothing moved, or motion elsewhere), the object there -- its region above the table, cut at
   depth jumps, joined by neighbouring pieces that moved as well -- is the label if the after frame shows
   the table on at least ``min_vacated_fraction`` of it: it moved farther than DIS can follow (``stats
   ['source'] == 'depth'``).
8. (Almost) nothing moving anywhere (moving area < ``min_area_px``) -> negative
   example (``is_negative=True, kept=True``, empty mask). No segment at the action
   pixel but something else moved -> discarded ("motion elsewhere"), because the
   pushed object may simply have been blocked.

Resolution scaling: the reference thresholds are for 640x480. With
s = sqrt(H W / (640 * 480)), pixel distances (flow thresholds, sigma) are
multiplied by s and pixel areas by s^2; ``max_area_fraction`` is already relative.

A discarded label still carries the candidate mask (``kept=False``) for
diagnostics; consumers must check ``kept``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

from selfsup_perception.core.geometry.camera import depth_units_problem
from selfsup_perception.core.geometry.table_plane import TablePlane, TablePlaneConfig, find_table_plane
from selfsup_perception.core.labeling.ego_motion import EgoMotionConfig, estimate_ego_motion
from selfsup_perception.core.labeling.flow_clustering import ClusterConfig, cluster_flow
from selfsup_perception.core.labeling.optical_flow import FlowConfig, compute_flow, to_gray_u8
from selfsup_perception.core.registration.reprojection import pose_pair_problem
from selfsup_perception.core.types import InteractionSample, MaskLabel, RgbdFrame

REFERENCE_WIDTH, REFERENCE_HEIGHT = 640, 480


def resolution_scale(shape: tuple[int, int]) -> float:
    """Linear scale s = sqrt(H W / (640 * 480)) of an image relative to the reference 640x480."""
    return math.sqrt(shape[0] * shape[1] / (REFERENCE_WIDTH * REFERENCE_HEIGHT))


@dataclass(frozen=True)
class FlowLabelerConfig:
    """Flow labeler parameters; pixel values are for 640x480 and scaled (see module doc)."""

    flow: FlowConfig = field(default_factory=FlowConfig)
    clustering: ClusterConfig = field(default_factory=ClusterConfig)
    table: TablePlaneConfig = field(default_factory=TablePlaneConfig)
    ego_motion: EgoMotionConfig = field(default_factory=EgoMotionConfig)
    table_height: float = 0.01  # metres: pixels below this height above the plane are table
    motion_threshold_px: float = 1.0  # filtered flow magnitude above this counts as motion
    max_mean_flow_px: float = 7.0  # reference: discard the interaction above this mean magnitude
    max_area_fraction: float = 0.025  # reference: 2.5 % of the image
    min_area_px: float = 100.0  # reference: 100 px
    max_flow_std_px: float = 15.0  # reference: std of the magnitude inside the mask
    prior_sigma_px: float = 10.0  # reference: Gaussian around the push pixel
    prior_samples: int = 50  # reference
    seed: int = 0  # for the Gaussian prior samples
    # Where the large-motion statistic is averaged (deviation, see module doc):
    # 'image' (reference), 'textured', or 'textured_outside_mask' (default).
    mean_flow_region: str = "textured_outside_mask"
    texture_threshold: float = 20.0  # Sobel gradient magnitude (gray 0..255) of an observable pixel
    # A negative ("nothing moved") is only trusted when the depth did not change near the action
    # pixel either: DIS misses large motions of plain objects, and a wrong negative teaches that an
    # object pixel is background. Depth, not colour: a moving shadow or sheet of paper changes the
    # colours but is rightly a negative. Changed pixels: |depth difference| > negative_depth_change_m
    # within negative_check_radius_px (scaled) of the action pixel.
    negative_check_radius_px: float = 25.0
    negative_depth_change_m: float = 0.01
    negative_max_changed_fraction: float = 0.05
    # Only the moving regions that reach within cluster_reach_sigmas * prior_sigma_px of the action pixel
    # are clustered (the segment choice never looks farther), which bounds the time when much moves.
    cluster_reach_sigmas: float = 4.0
    # Camera motion larger than this (largest camera-induced displacement, px at 640x480) is not a shake:
    # the interaction is discarded ("large camera motion") rather than trusted to the compensation.
    max_ego_motion_px: float = 20.0
    # Photometric check of the moving regions: a region counts as moved only if at least
    # min_changed_fraction of its pixels changed by more than change_threshold (0..255, any colour channel,
    # at half resolution, against the range of a 3x3 window) between the before image and the after image
    # seen from the before camera
    # (warped back by the camera-induced flow). Flow errors on untextured or shaded surfaces (real
    # images: 1-2 px over whole objects after a camera shake) do not change the image; a pushed object does.
    change_threshold: float = 25.0
    min_changed_fraction: float = 0.1
    # Holes enclosed by the chosen segment belong to the object (a bowl's or a mug's inside: on real depth
    # its bottom is within table_height of the table, so the table filter removes it). Deviation.
    fill_holes: bool = True
    # A flow end point counts as landing above the table when an above-table pixel of the after frame is
    # within this many pixels (at 640x480, scaled; 0 = the exact pixel, the reference). Deviation.
    end_point_tolerance_px: float = 6.0
    # Depth holes (deviation). Real and simulated stereo depth is missing on dark, shiny and steep surfaces
    # and along object edges (realistic world: 15-30 % of an object's pixels, a dark object almost entirely),
    # and the table filter would treat every such pixel as table. A missing height is filled with the lowest
    # valid height within hole_fill_px (at 640x480, scaled; see fill_height_holes); wider holes stay unknown
    # (= table).
    hole_fill_px: float = 4.0
    # Mask completion (deviation, see complete_mask): the chosen mask grows by up to completion_px (at 640x480,
    # scaled) into neighbouring pixels whose colour moved with the object (an object's lowest centimetre and
    # its edge pixels without depth, which the table filter removed). 0 = off. Errors: sums of 3 channels 0..255.
    completion_px: float = 3.0
    completion_margin: float = 30.0
    completion_max_error: float = 60.0
    completion_min_height: float = 0.003  # pixels with valid depth lower than this above the table never join
    completion_through_moving: bool = True  # also through moving pixels of other segments that moved the same way
    # Flow check of the mask (deviation): at least min_flow_match of the mask's pixels must be found in the after
    # image where their measured flow says they went (error as in mask completion). DIS loses large motions of
    # plain objects and returns part of the object, or a toppled object changes its look; such masks are
    # fragments (realistic world and synthetic pushes on real frames: a match below ~0.7 went with IoU < 0.6).
    min_flow_match: float = 0.7
    # Depth fallback (deviation): when the flow sees no motion at the action pixel, the object there (its
    # region above the table, cut at depth jumps > depth_jump_m) is the label if the after frame shows the
    # table on at least min_vacated_fraction of it: it moved farther than DIS can follow (a plain object
    # pushed more than about its own size; realistic world: most pushes of 6-9 cm).
    depth_fallback: bool = True
    depth_jump_m: float = 0.015
    min_vacated_fraction: float = 0.6
    # Object check of a flow segment (deviation): the chosen segment must cover at least min_object_cover of
    # the object at the action pixel by depth (its region above the table, cut at depth jumps; as in the depth
    # fallback). A segment the Gaussian search found on a neighbour (a flow artefact at a static object's edge
    # while DIS lost the pushed one) or a fragment of the pushed object (a plain mug's outside not followed)
    # covers little of it; the interaction then goes to the depth fallback instead. Realistic world, tuning
    # seeds: kept flow masks with IoU > 0.8 covered >= 0.97 of that object, the wrong ones 0.0. 0 = off.
    min_object_cover: float = 0.6
    # Static pieces (deviation, see without_static_pieces): a piece of the chosen segment (cut at depth jumps, at
    # least static_min_piece_px at 640x480) whose before colour is still there in the after image (seen from the
    # before camera; error as in mask completion below static_colour_error) at max_static_fraction or more of its
    # pixels did not move: DIS smeared the pushed object's motion into a plain neighbour (realistic world: a
    # black mug in front of the pushed object joined its mask). 1 = off.
    max_static_fraction: float = 0.5
    static_colour_error: float = 30.0
    static_min_piece_px: float = 30.0
    # The table plane is fitted on every plane_decimation-th pixel (row and column) of the before depth
    # (speed: its full-image steps are 4x cheaper at 2; the plane is a 3-D quantity and is then applied at
    # full resolution). 1 = every pixel.
    plane_decimation: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.max_area_fraction <= 1:
            raise ValueError(f"max_area_fraction must be in (0, 1], got {self.max_area_fraction}")
        for name in ("motion_threshold_px", "max_mean_flow_px", "max_flow_std_px", "prior_sigma_px"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.mean_flow_region not in ("image", "textured", "textured_outside_mask"):
            raise ValueError(f"mean_flow_region must be 'image', 'textured' or 'textured_outside_mask', "
                             f"got {self.mean_flow_region!r}")
        if self.min_area_px < 0 or self.prior_samples < 0:
            raise ValueError("min_area_px and prior_samples must be non-negative")
        if self.plane_decimation < 1:
            raise ValueError(f"plane_decimation must be >= 1, got {self.plane_decimation}")
        if not 0 < self.max_static_fraction <= 1 or not self.static_colour_error > 0 or self.static_min_piece_px < 0:
            raise ValueError(f"max_static_fraction must be in (0, 1], static_colour_error positive and "
                             f"static_min_piece_px non-negative, got {self.max_static_fraction}, "
                             f"{self.static_colour_error}, {self.static_min_piece_px}")


def sample_data_problem(sample: InteractionSample) -> Optional[str]:
    """Why the sample's data cannot be labelled (a data condition, reported and skipped), or None.

    Missing frames or depth, depth without a single valid pixel (all NaN / zero / negative), and float
    depth that looks like millimetres. Malformed inputs (wrong shapes or dtypes) are programming errors
    and raise in :func:`check_sample` instead.
    """
    for name in ("before", "after"):
        fr = getattr(sample, name)
        if fr is None:
            return f"no {name} frame"
        if fr.depth is None:
            return f"the {name} frame has no depth image"
        depth = np.asarray(fr.depth)
        if np.issubdtype(depth.dtype, np.floating):
            with np.errstate(invalid="ignore"):
                if not (np.isfinite(depth) & (depth > 0)).any():
                    return f"not enough depth: the {name} depth has no valid pixel (all NaN, zero or negative)"
            problem = depth_units_problem(depth)
            if problem is not None:
                return f"{name} {problem}"
    return None


def skipped_label(sample: InteractionSample, labeler: str, reason: str, t0: float) -> MaskLabel:
    """A label that says the sample was skipped and why: ``kept=False``, empty mask, ``stats['skipped']``."""
    shape = (0, 0)
    if sample.before is not None and sample.before.rgb is not None:
        shape = np.asarray(sample.before.rgb).shape[:2]
    return MaskLabel(mask=np.zeros(shape, dtype=bool), is_negative=False, kept=False, reason=f"skipped: {reason}",
                     labeler=labeler,
                     stats={"skipped": True, "time_ms": 1000.0 * (time.perf_counter() - t0)})


def check_sample(sample: InteractionSample) -> tuple[int, int]:
    """Validate the before/after frames and the action pixel; return (H, W). Raises ValueError."""
    for name in ("before", "after"):
        fr = getattr(sample, name)
        if fr is None:
            raise ValueError(f"sample {sample.sample_id!r} has no {name} frame")
        if fr.depth is None:
            raise ValueError(f"sample {sample.sample_id!r}: the {name} frame has no depth image")
        rgb, depth = np.asarray(fr.rgb), np.asarray(fr.depth)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
            raise ValueError(f"{name} rgb must be non-empty (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        if depth.shape != rgb.shape[:2]:
            raise ValueError(f"{name} depth {depth.shape} does not match its rgb {rgb.shape[:2]}")
        if not np.issubdtype(depth.dtype, np.floating):
            raise ValueError(f"{name} depth must be float metres with NaN invalid, got {depth.dtype}")
    if sample.before.rgb.shape != sample.after.rgb.shape:
        raise ValueError(f"before {sample.before.rgb.shape} and after {sample.after.rgb.shape} differ in size")
    h, w = sample.before.rgb.shape[:2]
    u, v = sample.action_pixel
    if not (np.isfinite(u) and np.isfinite(v)):
        raise ValueError(f"action pixel {sample.action_pixel} is not finite")
    return h, w


def decimated_frame(frame: RgbdFrame, step: int) -> RgbdFrame:
    """``frame`` with every ``step``-th row and column (pixel (u, v) -> (step u, step v) of the original), with
    matching intrinsics and the same pose; ``frame`` itself for ``step`` 1. For fitting 3-D quantities (the
    table plane) at a fraction of the cost."""
    if step <= 1:
        return frame
    depth = np.asarray(frame.depth)[::step, ::step]
    k = frame.intrinsics
    h, w = depth.shape
    intr = dataclasses.replace(k, fx=k.fx / step, fy=k.fy / step, cx=k.cx / step, cy=k.cy / step, width=w, height=h)
    rgb = None if frame.rgb is None else np.asarray(frame.rgb)[::step, ::step]
    return dataclasses.replace(frame, rgb=rgb, depth=depth, intrinsics=intr)


def fill_mask_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its enclosed holes filled (8-connected background from the border of its bounding box)."""
    x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
    if bw == 0 or bh == 0:
        return mask
    crop = np.zeros((bh + 2, bw + 2), np.uint8)
    crop[1:-1, 1:-1] = mask[y:y + bh, x:x + bw]
    flood = crop.copy()
    cv2.floodFill(flood, np.zeros((bh + 4, bw + 4), np.uint8), (0, 0), 1)
    out = mask.copy()
    out[y:y + bh, x:x + bw] |= (flood[1:-1, 1:-1] == 0)
    return out


def fill_height_holes(height: np.ndarray, radius: int) -> np.ndarray:
    """``height`` (H, W) with each NaN pixel set to the *lowest* valid height in the (2r+1)^2 window around it
    (NaN when the window holds none). The lowest, so a hole next to the table (the band a stereo camera
    cannot see beside an object's edge) stays table, and a hole inside an object (a dark or shiny surface with
    a few valid returns) takes the object's height."""
    invalid = ~np.isfinite(height)
    if radius <= 0 or not invalid.any():
        return height
    big = np.float32(1e6)
    low = cv2.erode(np.where(invalid, big, height).astype(np.float32),
                    np.ones((2 * radius + 1, 2 * radius + 1), np.uint8), borderType=cv2.BORDER_REPLICATE)
    out = height.copy()
    fill = invalid & (low < big)
    out[fill] = low[fill]
    return out


def sampled_at(image: np.ndarray, displacement: Optional[np.ndarray], box: tuple[int, int, int, int],
               interpolation: int = cv2.INTER_LINEAR, border_value: Optional[float] = None) -> np.ndarray:
    """``image`` sampled at p + ``displacement`` for the pixels p of ``box`` (x0, y0, x1, y1): the after image
    seen from the before frame. ``displacement``: (H, W, 2) over the whole image, a (2,) vector for every
    pixel, or None (the crop itself). Outside the image: the nearest border pixel, or ``border_value``."""
    x0, y0, x1, y1 = box
    if displacement is None:
        return image[y0:y1, x0:x1]
    d = np.asarray(displacement, np.float32)
    dx, dy = (d[y0:y1, x0:x1, 0], d[y0:y1, x0:x1, 1]) if d.ndim == 3 else (d[0], d[1])
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    if border_value is None:
        return cv2.remap(image, gx + dx, gy + dy, interpolation, borderMode=cv2.BORDER_REPLICATE)
    return cv2.remap(image, gx + dx, gy + dy, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)


def complete_mask(mask: np.ndarray, before_rgb: np.ndarray, after_rgb: np.ndarray, flow: np.ndarray,
                  ego_flow: Optional[np.ndarray], steps: int, margin: float, max_error: float,
                  moving: Optional[np.ndarray] = None, not_table: Optional[np.ndarray] = None) -> np.ndarray:
    """``mask`` grown by up to ``steps`` 8-neighbour rings into pixels whose colour moved *with the object*.

    The object's motion is the median measured flow f of the mask (a translation); a neighbouring pixel p
    joins when its before colour matches the after image at p + f (sum of absolute channel differences of
    3x3-blurred images below ``max_error``) better, by ``margin``, than at p + ego(p) (where it would be
    had it stayed with the scene). A table pixel beside an object stays (its colour is still there), an
    object pixel that the depth or the flow missed (its bottom, its edge) moves with the object. With
    ``not_table`` (H, W) bool, only those pixels may join (a shadow on the table moves with its object too).
    """
    if steps <= 0 or not mask.any():
        return mask
    h, w = mask.shape
    x, y, bw, bh = cv2.boundingRect((mask | moving).astype(np.uint8) if moving is not None else
                                    mask.astype(np.uint8))
    x0, y0, x1, y1 = max(x - steps, 0), max(y - steps, 0), min(x + bw + steps, w), min(y + bh + steps, h)
    f = np.median(flow[mask], axis=0)  # (2,)
    b = cv2.blur(before_rgb[y0:y1, x0:x1], (3, 3)).astype(np.float32)
    a = cv2.blur(after_rgb, (3, 3))
    moved = sampled_at(a, f, (x0, y0, x1, y1)).astype(np.float32)
    stayed = sampled_at(a, ego_flow, (x0, y0, x1, y1))
    err_move = np.abs(b - moved).sum(axis=2)
    err_stay = np.abs(b - stayed.astype(np.float32)).sum(axis=2)
    allowed = (err_move < max_error) & (err_move + margin < err_stay)
    if not_table is not None:
        allowed &= not_table[y0:y1, x0:x1]
    allowed = allowed.astype(np.uint8)
    m = mask[y0:y1, x0:x1].astype(np.uint8)
    if moving is not None:  # first through the moving pixels that moved like the mask, however far
        n, comp = cv2.connectedComponents(m | (allowed & moving[y0:y1, x0:x1]), connectivity=8)
        ids = np.unique(comp[m > 0])
        m = np.isin(comp, ids[ids > 0]).astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    for _ in range(steps):
        m = m | (cv2.dilate(m, k) & allowed)
    out = mask.copy()
    out[y0:y1, x0:x1] = m.astype(bool)
    return out


def flow_match_fraction(mask: np.ndarray, before_rgb: np.ndarray, after_rgb: np.ndarray, flow: np.ndarray,
                        max_error: float) -> float:
    """Fraction of the ``mask`` pixels p whose before colour is found at p + flow(p) in the after image
    (sum of absolute channel differences of 3x3-blurred images below ``max_error``); 1.0 for an empty mask."""
    if not mask.any():
        return 1.0
    h, w = mask.shape
    x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
    x0, y0, x1, y1 = max(x - 1, 0), max(y - 1, 0), min(x + bw + 1, w), min(y + bh + 1, h)
    warped = sampled_at(cv2.blur(after_rgb, (3, 3)), flow, (x0, y0, x1, y1)).astype(np.float32)
    b = cv2.blur(before_rgb, (3, 3))[y0:y1, x0:x1].astype(np.float32)
    err = np.abs(b - warped).sum(axis=2)
    return float((err[mask[y0:y1, x0:x1]] < max_error).mean())


def depth_jumps(depth: np.ndarray, jump_m: float, hole_px: int = 3) -> np.ndarray:
    """(H, W) bool: pixels whose 3x3 neighbourhood holds depths more than ``jump_m`` apart.

    Missing depth (NaN, <= 0) first takes the *farthest* valid depth within ``hole_px`` (the lowest
    surface, as :func:`fill_height_holes`); wider holes are no jump. Without the fill every hole counted as a
    jump, so a line of holes across an object (a dark band, a shiny ridge; realistic world) cut it into
    pieces; with it, a hole between two objects at different depths still cuts them apart."""
    z = np.asarray(depth, np.float32)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(z) & (z > 0)
    z = np.where(valid, z, np.float32(0)).astype(np.float32)
    if hole_px > 0 and not valid.all():
        far = cv2.dilate(z, np.ones((2 * hole_px + 1, 2 * hole_px + 1), np.uint8))
        z = np.where(valid, z, far)
        valid = z > 0
    k = np.ones((3, 3), np.uint8)
    hi = cv2.dilate(np.where(valid, z, np.float32(-1e6)).astype(np.float32), k)
    lo = cv2.erode(np.where(valid, z, np.float32(1e6)).astype(np.float32), k)
    return (hi - lo) > jump_m  # a window without a valid depth gives hi - lo < 0


def nearest_label(labels: np.ndarray, pixel: tuple[float, float], radius: int) -> int:
    """The label (> 0) of ``labels`` (H, W) at ``pixel`` (u, v), else of the nearest labelled pixel within the
    (2 ``radius`` + 1)^2 window around it; 0 when the window holds none."""
    h, w = labels.shape
    u, v = int(round(pixel[0])), int(round(pixel[1]))
    u0, u1, v0, v1 = max(u - radius, 0), min(u + radius + 1, w), max(v - radius, 0), min(v + radius + 1, h)
    if u0 >= u1 or v0 >= v1:
        return 0
    win = labels[v0:v1, u0:u1]
    yy, xx = np.nonzero(win > 0)
    if not len(yy):
        return 0
    i = int(np.argmin((yy + v0 - v) ** 2 + (xx + u0 - u) ** 2))
    return int(win[yy[i], xx[i]])


def object_at_pixel(height_before: np.ndarray, depth_before: np.ndarray, action_pixel: tuple[float, float],
                    table_height: float, depth_jump_m: float, search_px: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The object at the action pixel by depth: (region, component labels, above-table mask), all (H, W).

    Region: the 8-connected pixels at least ``table_height`` above the table (``height_before``, holes
    filled) and not at a depth jump > ``depth_jump_m`` (:func:`depth_jumps`) that contain the action pixel, or
    the nearest such pixel within ``search_px``; empty when there is none."""
    h, w = height_before.shape
    with np.errstate(invalid="ignore"):
        above = height_before >= table_height
    inner = above & ~depth_jumps(depth_before, depth_jump_m)
    u, v = int(round(action_pixel[0])), int(round(action_pixel[1]))
    u0, u1, v0, v1 = max(u - search_px, 0), min(u + search_px + 1, w), max(v - search_px, 0), min(v + search_px + 1, h)
    if u0 >= u1 or v0 >= v1 or not inner[v0:v1, u0:u1].any():
        return np.zeros((h, w), bool), np.zeros((h, w), np.int32), above
    _, comp = cv2.connectedComponents(inner.astype(np.uint8), connectivity=8)
    return comp == nearest_label(comp, action_pixel, search_px), comp, above


def vacated_object(height_before: np.ndarray, height_after_seen_before: np.ndarray, depth_before: np.ndarray,
                   action_pixel: tuple[float, float], table_height: float, depth_jump_m: float,
                   search_px: int, merge_vacated: Optional[float] = None, merge_gap_px: int = 4
                   ) -> tuple[np.ndarray, float]:
    """The object under the action pixel as a region of the before frame, and the fraction of it it left.

    Region: the 8-connected pixels at least ``table_height`` above the table (``height_before``, holes
    filled) containing the action pixel -- or the nearest such pixel within ``search_px`` --, cut at depth
    jumps larger than ``depth_jump_m`` between neighbours (objects that touch at different depths stay
    apart); with ``merge_vacated``, pieces within ``merge_gap_px`` of it of which at least that fraction was
    vacated join it (an object's own depth jumps). The gap: on noisy stereo depth the band
    :func:`depth_jumps` marks at a fold of an object is 2 px for the step plus up to its hole fill
    (realistic world: with a 2 px gap, 13 depth-fallback masks below IoU 0.8 on two seed sets were one part
    of the object, recall 0.45-0.84 at precision >= 0.87; docs/labeling.md). Vacated: its pixels where the
    after frame, seen from the before camera (``height_after_seen_before``), shows the table. Returns (mask,
    vacated fraction); an empty mask and 0 when there is no object at the action pixel.
    """
    h, w = height_before.shape
    with np.errstate(invalid="ignore"):
        table_after = height_after_seen_before < table_height
    k = np.ones((3, 3), np.uint8)
    region, comp, above = object_at_pixel(height_before, depth_before, action_pixel, table_height, depth_jump_m,
                                          search_px)
    if not region.any():
        return region, 0.0
    n = int(comp.max()) + 1
    vacated = float(table_after[region].mean())
    if merge_vacated is not None:
        # an object's own depth jumps (a duck's head over its body) cut it too: neighbouring pieces that
        # were vacated as well belong to it; pieces of objects that stayed were not vacated
        frac = np.bincount(comp[table_after], minlength=n) / np.maximum(np.bincount(comp.ravel(), minlength=n), 1)
        kg = np.ones((2 * merge_gap_px + 1, 2 * merge_gap_px + 1), np.uint8)
        for _ in range(4):
            ring = cv2.dilate(region.astype(np.uint8), kg).astype(bool) & ~region
            ids = np.unique(comp[ring])
            ids = ids[(ids > 0) & (frac[ids] >= merge_vacated)]
            if not len(ids):
                break
            region |= np.isin(comp, ids)
    region = cv2.dilate(region.astype(np.uint8), k).astype(bool) & above  # the jump pixels at its border back
    return region, vacated


def without_static_pieces(mask: np.ndarray, before: RgbdFrame, after_rgb: np.ndarray, ego_flow: Optional[np.ndarray],
                          action_pixel: tuple[float, float], depth_jump_m: float, max_error: float,
                          max_static_fraction: float, min_piece_px: int, gap_px: int = 4) -> tuple[np.ndarray, int]:
    """``mask`` without its pieces that did not move, and how many pixels went.

    Pieces: 8-connected parts of ``mask`` cut at depth jumps (:func:`depth_jumps`) of at least ``min_piece_px``
    pixels. A piece is static when at ``max_static_fraction`` or more of its pixels the before colour is found
    at the same place of the after image seen from the before camera (p + ``ego_flow``; sum of absolute channel
    differences of 3x3-blurred images below ``max_error``). The piece at the ``action_pixel`` (or the nearest
    one within ``gap_px``) always stays: it is what was pushed, and a plain object moved by less than its size
    still finds most of its colours where they were (real frames: a 4,000-px object pushed a few cm). What
    remains is the mask within ``gap_px`` of its other pieces (the jump band next to a removed piece goes with
    it)."""
    if not mask.any():
        return mask, 0
    h, w = mask.shape
    x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
    x0, y0, x1, y1 = max(x - 2, 0), max(y - 2, 0), min(x + bw + 2, w), min(y + bh + 2, h)
    m = mask[y0:y1, x0:x1]
    jumps = depth_jumps(np.asarray(before.depth)[y0:y1, x0:x1], depth_jump_m)
    n, comp = cv2.connectedComponents((m & ~jumps).astype(np.uint8), connectivity=8)
    if n <= 2:  # one piece (or none): nothing to compare it with; the object checks decide
        return mask, 0
    stayed = sampled_at(cv2.blur(after_rgb, (3, 3)), ego_flow, (x0, y0, x1, y1))
    b = cv2.blur(before.rgb, (3, 3))[y0:y1, x0:x1]
    still = np.abs(b.astype(np.int16) - stayed.astype(np.int16)).sum(axis=2) < max_error
    size = np.bincount(comp.ravel(), minlength=n)
    frac = np.bincount(comp[still], minlength=n) / np.maximum(size, 1)
    static = (size >= min_piece_px) & (frac >= max_static_fraction)
    static[0] = False
    static[nearest_label(comp, (action_pixel[0] - x0, action_pixel[1] - y0), gap_px)] = False  # the pushed piece
    if not static.any():
        return mask, 0
    moved = (comp > 0) & ~static[comp]
    if not moved.any():
        return mask, 0  # every piece looks static: leave the decision to the later checks
    k = np.ones((2 * gap_px + 1, 2 * gap_px + 1), np.uint8)
    keep = m & ~static[comp] & cv2.dilate(moved.astype(np.uint8), k).astype(bool)
    out = mask.copy()
    out[y0:y1, x0:x1] = keep
    return out, int(mask.sum() - out.sum())


def _pixel_in(u: float, v: float, h: int, w: int) -> bool:
    return 0 <= int(round(u)) < w and 0 <= int(round(v)) < h


def segment_at_pixel(labels: np.ndarray, action_pixel: tuple[float, float], sigma: float, samples: int,
                     rng: np.random.Generator) -> int:
    """Label of the segment at ``action_pixel`` (u, v); else of the first of ``samples`` Gaussian
    (``sigma`` px) neighbours that hits a segment; 0 if none."""
    h, w = labels.shape
    u, v = action_pixel
    if _pixel_in(u, v, h, w) and labels[int(round(v)), int(round(u))] > 0:
        return int(labels[int(round(v)), int(round(u))])
    for du, dv in rng.normal(0.0, sigma, size=(samples, 2)):
        uu, vv = u + du, v + dv
        if _pixel_in(uu, vv, h, w) and labels[int(round(vv)), int(round(uu))] > 0:
            return int(labels[int(round(vv)), int(round(uu))])
    return 0


class FlowMaskLabeler:
    """Mask of the object moved by an interaction, from table-filtered, clustered optical flow."""

    name = "flow"

    def __init__(self, config: Optional[FlowLabelerConfig] = None):
        self.config = config or FlowLabelerConfig()

    def moving_mask(self, before: RgbdFrame, after: RgbdFrame, flow: np.ndarray, magnitude: np.ndarray,
                    plane: TablePlane, threshold_px: float, height_before: Optional[np.ndarray] = None,
                    fill_radius: int = 0) -> np.ndarray:
        """(H, W) bool: pixels whose flow survives the table filter and exceeds ``threshold_px``.

        Heights of both frames have their holes filled (:func:`fill_height_holes`, ``fill_radius`` px) where
        they are looked at: around the pixels moving more than ``threshold_px`` and around their end points.

        Zeroed (static): before pixels on/below the plane (height < ``table_height``) or with invalid
        depth, and pixels whose end point p + f falls outside the image or on the table / invalid depth
        of the *after* frame. Only the pixels above the table with enough motion are tested for their
        end point, so the cost is proportional to the moving area.
        """
        cfg = self.config
        h, w = magnitude.shape
        hb = plane.height_image(before) if height_before is None else height_before
        fast = magnitude > threshold_px
        if fill_radius > 0 and fast.any():
            bx, by, bw, bh = cv2.boundingRect(fast.astype(np.uint8))
            x0, y0 = max(bx - fill_radius, 0), max(by - fill_radius, 0)
            x1, y1 = min(bx + bw + fill_radius, w), min(by + bh + fill_radius, h)
            hb = hb.copy()
            hb[y0:y1, x0:x1] = fill_height_holes(hb[y0:y1, x0:x1], fill_radius)
        with np.errstate(invalid="ignore"):
            cand = (hb >= cfg.table_height) & fast  # NaN -> False
        idx = np.flatnonzero(cand)
        vv, uu = np.divmod(idx, w)
        ue = np.rint(uu + flow[vv, uu, 0]).astype(np.int64)
        ve = np.rint(vv + flow[vv, uu, 1]).astype(np.int64)
        ok = (ue >= 0) & (ue < w) & (ve >= 0) & (ve < h)
        r = int(round(cfg.end_point_tolerance_px * resolution_scale((h, w))))
        if r > 0 and ok.any():
            # End points within r px of an above-table pixel of the after frame pass: DIS underestimates
            # long motions near object boundaries, and the before pixel is already known to be above the table.
            y0, y1 = max(int(ve[ok].min()) - r, 0), min(int(ve[ok].max()) + r + 1, h)
            x0, x1 = max(int(ue[ok].min()) - r, 0), min(int(ue[ok].max()) + r + 1, w)
            # heights of the after frame around the end points (plus the hole-filling margin)
            fy0, fy1 = max(y0 - fill_radius, 0), min(y1 + fill_radius, h)
            fx0, fx1 = max(x0 - fill_radius, 0), min(x1 + fill_radius, w)
            vg, ug = np.mgrid[fy0:fy1, fx0:fx1]
            ha = plane.height_at_pixels(after, ug.ravel(), vg.ravel()).reshape(fy1 - fy0, fx1 - fx0)
            ha = fill_height_holes(ha.astype(np.float32), fill_radius)[y0 - fy0:y1 - fy0, x0 - fx0:x1 - fx0]
            with np.errstate(invalid="ignore"):
                above = ha >= cfg.table_height
            above = cv2.dilate(above.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)
            keep = np.zeros(idx.shape, bool)
            keep[ok] = above[ve[ok] - y0, ue[ok] - x0]
        else:
            ha = np.full(idx.shape, np.nan)
            ha[ok] = plane.height_at_pixels(after, ue[ok], ve[ok])
            with np.errstate(invalid="ignore"):
                keep = ha >= cfg.table_height
        moving = np.zeros(h * w, dtype=bool)
        moving[idx[keep]] = True
        return moving.reshape(h, w)

    def object_cover(self, mask: np.ndarray, height_before: np.ndarray, depth_before: np.ndarray,
                     action_pixel: tuple[float, float], s: float, max_area: float) -> Optional[float]:
        """Fraction of the object at the action pixel by depth (:func:`object_at_pixel`, holes filled as in the
        depth fallback) that ``mask`` covers; None when no object stands there. Computed on a crop around the
        mask and the action pixel, sqrt(``max_area``) px wider on each side (a larger object is cut at the crop:
        the check is then lenient, and such a mask is too large anyway)."""
        cfg = self.config
        h, w = mask.shape
        u, v = action_pixel
        x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
        m = int(math.ceil(math.sqrt(max_area)))
        x0, y0 = max(min(x, int(u)) - m, 0), max(min(y, int(v)) - m, 0)
        x1, y1 = min(max(x + bw, int(u) + 1) + m, w), min(max(y + bh, int(v) + 1) + m, h)
        if x0 >= x1 or y0 >= y1:
            return None
        hb = fill_height_holes(height_before[y0:y1, x0:x1], int(round(cfg.hole_fill_px * s)))
        obj, _, above = object_at_pixel(hb, depth_before[y0:y1, x0:x1], (u - x0, v - y0), cfg.table_height,
                                        cfg.depth_jump_m, int(round(cfg.prior_sigma_px * s)))
        if not obj.any():
            return None
        obj = cv2.dilate(obj.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & above
        return float((mask[y0:y1, x0:x1] & obj).sum() / obj.sum())

    @staticmethod
    def observable_pixels(gray: np.ndarray, threshold: float) -> np.ndarray:
        """(H, W) bool: pixels with Sobel gradient magnitude (3x3, gray 0..255) above ``threshold``."""
        gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
        return cv2.magnitude(gx, gy) > threshold

    def photometrically_changed(self, moving: np.ndarray, sample: InteractionSample,
                                ego_flow: Optional[np.ndarray]) -> np.ndarray:
        """``moving`` without the 8-connected regions whose image did not change (see the config)."""
        cfg = self.config
        if not moving.any() or cfg.min_changed_fraction <= 0:
            return moving
        h, w = moving.shape
        sw, sh = max(w // 2, 1), max(h // 2, 1)  # half resolution (area average = a light blur)
        # Only the bounding box of the moving pixels (plus 2 half-resolution pixels) is compared.
        bx, by, bw, bh = cv2.boundingRect(moving.astype(np.uint8))
        x0, x1 = max(bx * sw // w - 2, 0), min((bx + bw) * sw // w + 3, sw)
        y0, y1 = max(by * sh // h - 2, 0), min((by + bh) * sh // h + 3, sh)
        c0 = cv2.resize(sample.before.rgb, (sw, sh), interpolation=cv2.INTER_AREA)[y0:y1, x0:x1]
        c1 = cv2.resize(sample.after.rgb, (sw, sh), interpolation=cv2.INTER_AREA)
        # the after image seen from the before camera: after(p + ego(p)), at half resolution
        f = None if ego_flow is None else \
            cv2.resize(ego_flow, (sw, sh), interpolation=cv2.INTER_AREA) * np.float32(sw / w)
        c1 = sampled_at(c1, f, (x0, y0, x1, y1))
        # Tolerant to a pixel of misregistration (high-contrast edges under an imperfect ego-motion model):
        # changed where a before colour lies outside the range of the after colours in a 3x3 window.
        k3 = np.ones((3, 3), np.uint8)
        c0i = c0.astype(np.int16)
        thr = int(round(cfg.change_threshold))
        diff = ((c0i > cv2.dilate(c1, k3).astype(np.int16) + thr)
                | (c0i < cv2.erode(c1, k3).astype(np.int16) - thr)).any(axis=2)  # (y1-y0, x1-x0)
        changed = np.zeros((h, w), bool)
        rows = np.arange(by, by + bh)
        cols = np.arange(bx, bx + bw)
        changed[by:by + bh, bx:bx + bw] = diff[np.ix_(rows * sh // h - y0, cols * sw // w - x0)]
        n, comp = cv2.connectedComponents(moving.astype(np.uint8), connectivity=8)
        size = np.bincount(comp.ravel(), minlength=n)
        hits = np.bincount(comp[changed & moving], minlength=n)
        keep = hits >= cfg.min_changed_fraction * size
        keep[0] = False
        return keep[comp]

    @staticmethod
    def reachable(moving: np.ndarray, action_pixel: tuple[float, float], radius: float) -> np.ndarray:
        """The moving pixels of the 8-connected moving regions that come within ``radius`` of the action pixel."""
        h, w = moving.shape
        u, v = action_pixel
        r = int(math.ceil(radius))
        u0, u1 = max(int(u) - r, 0), min(int(u) + r + 1, w)
        v0, v1 = max(int(v) - r, 0), min(int(v) + r + 1, h)
        if u0 >= u1 or v0 >= v1 or not moving[v0:v1, u0:u1].any():
            return np.zeros_like(moving)
        _, comp = cv2.connectedComponents(moving.astype(np.uint8), connectivity=8)
        yy, xx = np.ogrid[v0:v1, u0:u1]
        disk = (xx - u) ** 2 + (yy - v) ** 2 <= radius * radius
        ids = np.unique(comp[v0:v1, u0:u1][disk])
        lut = np.zeros(int(comp.max()) + 1, dtype=bool)
        lut[ids[ids > 0]] = True
        return lut[comp]

    def changed_fraction_near_action(self, sample: InteractionSample, radius: float,
                                     ego_flow: Optional[np.ndarray] = None) -> float:
        """Fraction of pixels within ``radius`` of the action pixel whose depth changed (invalid depth: unchanged).

        With ``ego_flow`` (H, W, 2) the after depth is read where the camera's own motion moved each pixel
        (p + ego(p)), so a camera shake alone changes nothing.
        """
        cfg = self.config
        h, w = sample.before.shape
        u, v = sample.action_pixel
        r = int(math.ceil(radius))
        u0, u1, v0, v1 = max(int(u) - r, 0), min(int(u) + r + 2, w), max(int(v) - r, 0), min(int(v) + r + 2, h)
        if u0 >= u1 or v0 >= v1:
            return 0.0
        yy, xx = np.mgrid[v0:v1, u0:u1]
        disk = (xx - u) ** 2 + (yy - v) ** 2 <= radius * radius
        if not disk.any():
            return 0.0
        vv, uu = yy[disk], xx[disk]
        d0 = sample.before.depth[vv, uu]
        if ego_flow is not None:
            ue = np.rint(uu + ego_flow[vv, uu, 0]).astype(np.int64)
            ve = np.rint(vv + ego_flow[vv, uu, 1]).astype(np.int64)
            inside = (ue >= 0) & (ue < w) & (ve >= 0) & (ve < h)
            d1 = np.full(d0.shape, np.nan, np.float32)
            d1[inside] = sample.after.depth[ve[inside], ue[inside]]
        else:
            d1 = sample.after.depth[vv, uu]
        with np.errstate(invalid="ignore"):
            changed = np.abs(d1 - d0) > cfg.negative_depth_change_m  # NaN compares False
        return float(changed.mean())

    def label(self, sample: InteractionSample, plane: Optional[TablePlane] = None,
              flow: Optional[np.ndarray] = None, *,
              camera_poses: Optional[tuple[np.ndarray, np.ndarray]] = None) -> MaskLabel:
        """Label one interaction.

        ``plane`` (fitted on ``sample.before``) may be passed to skip the fit; ``flow`` (H, W, 2)
        before -> after may be passed to use another flow estimator (e.g. a network on a GPU);
        ``camera_poses`` (T_wc before, T_wc after) override the frames' ``camera_to_world`` for the
        ego-motion compensation. Data conditions (no depth, no table, ...) give a skipped label
        (``kept=False``, reason ``"skipped: ..."``); malformed inputs raise ``ValueError``.
        """
        cfg = self.config
        t0 = time.perf_counter()
        if camera_poses is not None:
            t_b, t_a = camera_poses
            sample = dataclasses.replace(
                sample, before=dataclasses.replace(sample.before, camera_to_world=np.asarray(t_b, np.float64)),
                after=dataclasses.replace(sample.after, camera_to_world=np.asarray(t_a, np.float64)))
        problem = sample_data_problem(sample)
        if problem is not None:
            return skipped_label(sample, self.name, problem, t0)
        h, w = check_sample(sample)
        s = resolution_scale((h, w))
        min_area = cfg.min_area_px * s * s
        max_area = cfg.max_area_fraction * h * w

        if plane is None:
            found = find_table_plane(decimated_frame(sample.before, cfg.plane_decimation), cfg.table,
                                     np.random.default_rng(cfg.seed))
            if not found.found:
                return skipped_label(sample, self.name, found.reason, t0)
            plane = found.plane
        if flow is None:
            flow = compute_flow(sample.before.rgb, sample.after.rgb, cfg.flow)  # (H, W, 2)
        else:
            flow = np.asarray(flow, dtype=np.float32)
            if flow.shape != (h, w, 2):
                raise ValueError(f"flow must be ({h}, {w}, 2), got {flow.shape}")
        height_b = plane.height_image(sample.before)  # (H, W), NaN without depth
        textured = self.observable_pixels(to_gray_u8(sample.before.rgb), cfg.texture_threshold)
        try:
            ego = estimate_ego_motion(sample.before, sample.after, flow, textured, height_b,
                                      plane.camera_plane(sample.before.camera_to_world), cfg.ego_motion, s)
        except ValueError as exc:  # a pose beyond the orthonormality tolerance
            return skipped_label(sample, self.name, f"bad camera pose: {exc}", t0)
        comp = flow - ego.flow if ego.compensated else flow  # (H, W, 2) flow of the scene itself
        raw_mag = cv2.magnitude(comp[..., 0], comp[..., 1])  # (H, W)
        moving = self.moving_mask(sample.before, sample.after, flow, raw_mag, plane, cfg.motion_threshold_px * s,
                                  height_b, int(round(cfg.hole_fill_px * s)))
        if ego.compensated:  # content shifted in at the borders has no before pixel to match
            m = int(math.ceil(ego.max_px)) + 2
            moving[:m], moving[-m:], moving[:, :m], moving[:, -m:] = False, False, False, False
        moving = self.photometrically_changed(moving, sample, ego.flow if ego.compensated else None)
        moving_area = int(moving.sum())
        labels = cluster_flow(comp, self.reachable(moving, sample.action_pixel, cfg.cluster_reach_sigmas
                                                   * cfg.prior_sigma_px * s), cfg.clustering, pixel_scale=s)
        seg = segment_at_pixel(labels, sample.action_pixel, cfg.prior_sigma_px * s, cfg.prior_samples,
                               np.random.default_rng(cfg.seed))
        mask = labels == seg if seg > 0 else np.zeros((h, w), dtype=bool)
        if cfg.completion_px > 0 and seg > 0:
            with np.errstate(invalid="ignore"):
                not_table = ~(height_b < cfg.completion_min_height)  # no depth, or above the table
            mask = complete_mask(mask, sample.before.rgb, sample.after.rgb, flow, ego.flow if ego.compensated else None,
                                 int(round(cfg.completion_px * s)), cfg.completion_margin, cfg.completion_max_error,
                                 moving if cfg.completion_through_moving else None, not_table)
        if cfg.fill_holes and seg > 0:
            mask = fill_mask_holes(mask)
        static_px = 0
        if cfg.max_static_fraction < 1 and seg > 0:
            mask, static_px = without_static_pieces(
                mask, sample.before, sample.after.rgb, ego.flow if ego.compensated else None, sample.action_pixel,
                cfg.depth_jump_m, cfg.static_colour_error, cfg.max_static_fraction,
                int(round(cfg.static_min_piece_px * s * s)))
        object_cover = None
        if cfg.min_object_cover > 0 and seg > 0:
            # The segment must be (most of) the object at the action pixel by depth; else the depth fallback.
            object_cover = self.object_cover(mask, height_b, sample.before.depth, sample.action_pixel, s, max_area)
            if object_cover is not None and object_cover < cfg.min_object_cover:
                seg = 0
        area = int(mask.sum())
        flowed = mask & moving  # the mask's pixels whose motion the flow measured (not those completion added)
        flow_std = float(raw_mag[flowed].std()) if flowed.any() else 0.0
        if cfg.mean_flow_region == "image":
            mean_flow = float(raw_mag.mean())
        else:
            region = textured.copy()
            if cfg.mean_flow_region == "textured_outside_mask":
                region &= ~cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            mean_flow = float(raw_mag[region].mean()) if region.mean() >= 0.01 else float(raw_mag.mean())
        stats = {
            "mean_flow": mean_flow, "flow_std": flow_std, "area": area, "moving_area": moving_area,
            "num_segments": int(labels.max()), "scale": s,
            "mask_mean_flow": float(raw_mag[flowed].mean()) if flowed.any() else 0.0,
            "ego_motion": ego.source, "ego_motion_px": ego.max_px, "ego_motion_reason": ego.reason,
            "source": "flow",  # 'depth' when the depth fallback made the mask
            "static_px": static_px,  # pixels of static pieces taken out of the segment
        }
        if object_cover is not None:
            stats["object_cover"] = object_cover

        def out(kept: bool, reason: str, negative: bool = False) -> MaskLabel:
            stats["time_ms"] = 1000.0 * (time.perf_counter() - t0)
            return MaskLabel(mask=mask, is_negative=negative, kept=kept, reason=reason, labeler=self.name,
                             stats=stats)

        if ego.max_px > cfg.max_ego_motion_px * s:
            reason = f"large camera motion: {ego.max_px:.1f} px > {cfg.max_ego_motion_px * s:.1f} px ({ego.source})"
            if ego.source.startswith("poses"):  # near-identical images but far-apart poses: say why
                b, a = sample.before, sample.after
                problem = pose_pair_problem(b.rgb, b.depth, b.intrinsics, b.camera_to_world, a.rgb, a.depth,
                                            a.intrinsics, a.camera_to_world)
                if problem is not None:
                    reason += f"; {problem}"
            return out(False, reason)
        if mean_flow > cfg.max_mean_flow_px * s:
            return out(False, f"large motion: mean flow {mean_flow:.2f} px > {cfg.max_mean_flow_px * s:.2f} px")
        changed_near = None
        if cfg.depth_fallback and (moving_area < min_area or seg == 0):
            changed_near = self.changed_fraction_near_action(sample, cfg.negative_check_radius_px * s,
                                                             ego.flow if ego.compensated else None)
            stats["changed_near_action"] = changed_near
        if changed_near is not None and changed_near > cfg.negative_max_changed_fraction:
            # The flow saw no motion of the object at the action pixel, but the depth there changed. If that
            # object has left most of the pixels it covered (a large motion that DIS cannot follow), its
            # before region is the label.
            hb_f = fill_height_holes(height_b, int(round(cfg.hole_fill_px * s)))
            ha_f = fill_height_holes(plane.height_image(sample.after), int(round(cfg.hole_fill_px * s)))
            ego_flow = ego.flow if ego.compensated else None
            # the after heights seen from the before camera: ha(p + ego(p))
            ha_f = sampled_at(ha_f, ego_flow, (0, 0, w, h), cv2.INTER_NEAREST, border_value=np.nan)
            region, vacated = vacated_object(hb_f, ha_f, sample.before.depth, sample.action_pixel, cfg.table_height,
                                             cfg.depth_jump_m, int(round(cfg.prior_sigma_px * s)), cfg.min_vacated_fraction)
            stats["vacated_fraction"] = vacated
            region_area = int(region.sum())
            if vacated >= cfg.min_vacated_fraction and min_area <= region_area <= max_area:
                # its edge and lowest centimetre (no depth, or low): neighbours that are not table by depth and
                # whose colour changed (the object left them)
                a_seen = sampled_at(sample.after.rgb, ego_flow, (0, 0, w, h))
                changed = np.abs(cv2.blur(sample.before.rgb, (3, 3)).astype(np.int16)
                                 - cv2.blur(a_seen, (3, 3)).astype(np.int16)).sum(axis=2) > cfg.completion_margin
                with np.errstate(invalid="ignore"):
                    grow = (changed & ~(height_b < cfg.completion_min_height)).astype(np.uint8)
                m = region.astype(np.uint8)
                for _ in range(int(round(2 * cfg.completion_px * s))):
                    m |= cv2.dilate(m, np.ones((3, 3), np.uint8)) & grow
                region = m.astype(bool)
                mask = fill_mask_holes(region) if cfg.fill_holes else region
                stats.update(area=int(mask.sum()), source="depth")
                return out(True, f"kept from the depth change: the flow saw no motion at the action pixel, but the "
                                 f"object there left {100 * vacated:.0f} % of its pixels")
        if moving_area < min_area:
            mask = np.zeros((h, w), dtype=bool)
            stats.update(area=0, flow_std=0.0, mask_mean_flow=0.0)
            changed = (self.changed_fraction_near_action(sample, cfg.negative_check_radius_px * s,
                                                         ego.flow if ego.compensated else None)
                       if changed_near is None else changed_near)
            stats["changed_near_action"] = changed
            if changed > cfg.negative_max_changed_fraction:
                return out(False, f"flow saw no motion but the depth changed at {100 * changed:.0f} % of the "
                                  f"pixels near the action pixel: not trusted as a negative")
            return out(True, f"nothing moved ({moving_area} px < {min_area:.0f} px): negative example",
                       negative=True)
        if seg == 0:
            if object_cover is not None and object_cover < cfg.min_object_cover:
                return out(False, f"not the object at the action pixel: the moving segment covers "
                                  f"{100 * object_cover:.0f} % of it (< {100 * cfg.min_object_cover:.0f} %)")
            return out(False, f"no moving segment at the action pixel ({moving_area} px moved elsewhere)")
        if area > max_area:
            return out(False, f"mask too large: {area} px > {max_area:.0f} px")
        if area < min_area:
            return out(False, f"mask too small: {area} px < {min_area:.0f} px")
        if flow_std > cfg.max_flow_std_px * s:
            return out(False, f"rotation: flow magnitude std {flow_std:.2f} px > {cfg.max_flow_std_px * s:.2f} px")
        if cfg.min_flow_match > 0:
            match = flow_match_fraction(flowed, sample.before.rgb, sample.after.rgb, flow, cfg.completion_max_error)
            stats["flow_match"] = match
            if match < cfg.min_flow_match:
                return out(False, f"flow does not explain the mask: {100 * match:.0f} % of its pixels found where "
                                  f"their flow went (< {100 * cfg.min_flow_match:.0f} %)")
        return out(True, "kept")
