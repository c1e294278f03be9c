"""Synthetic pushes on real RGB-D frames: real-looking before/after pairs with a known mask.

Real frames have no ground truth of what a push moved, and the simulator's flat-coloured world is too
easy. :func:`synthetic_push` makes the "after" of a push from one real frame:

1. Objects: the connected regions standing above the table plane
   (:func:`~selfsup_perception.core.evaluation.bottom_up.depth_bottom_up` without the split at depth
   jumps, so that a bowl moves with its inside); one of those with an area
   in [``min_area_px``, ``max_area_fraction``] of the image, away from the border, is picked at random,
   and its outline is refined on the colour image (:func:`refine_object_mask`: holes filled, GrabCut
   in a band around the depth outline), so that the whole object moves, not a depth-shaped cut of it.
2. Motion: a translation ``t`` of ``distance_m`` (a few centimetres) in the table plane, in a random
   direction. Every object pixel is back-projected (X), moved (X + t) and projected; an affine map
   fitted to these pixel pairs (least squares; exact to well under a pixel for a small object moved a
   few centimetres) warps the object's colour and depth (depth + t_z, exactly the moved points' depth)
   into the after image. Directions whose target is not free table (``min_free_fraction``) or leaves
   the image are rejected; up to ``tries`` directions are tried.
3. The hole the object leaves is filled from the table: colour by inpainting (OpenCV Telea), depth
   from the plane (the ray's intersection with it).
4. Optional camera shake of the after frame: a shift of up to ``shake_px`` and a rotation about the
   image centre of up to ``shake_deg`` (colour bilinear, depth nearest).

The known mask is the object's region in the *before* image (what the flow labeler should return).
Caveats: the pasted object carries no new shadow (its old shadow stays), and the object was found
with depth (then refined on colour) -- so a depth-based segmenter is favoured when scored on these
masks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from selfsup_perception.core.evaluation.bottom_up import DepthBottomUpConfig, depth_bottom_up
from selfsup_perception.core.types import InteractionKind, InteractionOutcome, InteractionSample, RgbdFrame


@dataclass(frozen=True)
class SyntheticPushConfig:
    """Parameters of :func:`synthetic_push` (metres, pixels at the image's resolution)."""

    distance_m: tuple[float, float] = (0.03, 0.06)  # push length range
    min_area_px: int = 800
    max_area_fraction: float = 0.02  # below the flow labeler's 2.5 % limit
    border_px: int = 12  # the object and its target stay this far from the image border
    min_free_fraction: float = 0.97  # of the target pixels outside the object: table with valid depth
    tries: int = 24
    shake_px: float = 0.0  # camera shake of the after frame: shift up to this (0 = none)
    shake_deg: float = 0.0  # ... and rotation about the image centre up to this
    # Whole connected regions above the table (no split at depth jumps: a self-occluding object such as a
    # bowl behind its own rim must move as one piece).
    segmentation: DepthBottomUpConfig = dataclasses.field(
        default_factory=lambda: DepthBottomUpConfig(jump_abs=float("inf")))
    refine_px: int = 0  # colour refinement band around the depth outline (0: use the depth region as is)


@dataclass
class SyntheticPush:
    """A before/after pair with the moved object's masks."""

    sample: InteractionSample
    mask: np.ndarray  # (H, W) bool: the moved object in the before image
    mask_after: np.ndarray  # (H, W) bool: where it is in the after image (before any shake)
    translation_m: np.ndarray  # (3,) camera frame
    shake: np.ndarray  # (3, 3) homography applied to the after frame (identity: none)


def shake_frame(frame: RgbdFrame, homography: np.ndarray) -> RgbdFrame:
    """``frame`` warped by a 3x3 ``homography`` (colour bilinear, depth nearest, borders replicated)."""
    h, w = frame.shape
    rgb = cv2.warpPerspective(frame.rgb, homography, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    depth = cv2.warpPerspective(np.nan_to_num(frame.depth, nan=0.0), homography, (w, h), flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_REPLICATE)
    depth[~(depth > 0)] = np.nan
    return dataclasses.replace(frame, rgb=rgb, depth=depth.astype(np.float32))


def shake_homography(shape: tuple[int, int], shift_px: tuple[float, float], angle_deg: float,
                     scale: float = 1.0) -> np.ndarray:
    """3x3 homography: rotation by ``angle_deg`` and scaling about the image centre, then a shift."""
    h, w = shape
    m = np.eye(3)
    m[:2] = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle_deg, scale)
    m[0, 2] += shift_px[0]
    m[1, 2] += shift_px[1]
    return m


def random_shake(shape: tuple[int, int], rng: np.random.Generator, max_px: float, max_deg: float) -> np.ndarray:
    """A random shake homography: shift of length up to ``max_px``, rotation up to ``max_deg``."""
    a = rng.uniform(0, 2 * np.pi)
    r = rng.uniform(0.5, 1.0) * max_px
    return shake_homography(shape, (r * np.cos(a), r * np.sin(a)), rng.uniform(-max_deg, max_deg))


def refine_object_mask(rgb: np.ndarray, mask: np.ndarray, band_px: int) -> Optional[np.ndarray]:
    """The object's outline in the colour image, from its region above the table.

    Real depth is blurred and shifted against the colour image at object edges, and low parts (a bowl's
    inside, a brick's lowest face) fall under the height threshold. Holes are filled, then GrabCut
    (OpenCV, 4 iterations) decides the ``band_px`` band around the depth outline: the depth region
    eroded by a third of the band is certain object, beyond the band certain background. Returns the
    largest connected part, or None if GrabCut leaves almost nothing.
    """
    from scipy import ndimage

    filled = ndimage.binary_fill_holes(mask)
    if band_px <= 0:
        return filled
    h, w = mask.shape
    ys, xs = np.nonzero(filled)
    m = 2 * band_px
    y0, y1, x0, x1 = max(ys.min() - m, 0), min(ys.max() + m + 1, h), max(xs.min() - m, 0), min(xs.max() + m + 1, w)
    crop = filled[y0:y1, x0:x1].astype(np.uint8)
    k = lambda r: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))  # noqa: E731
    gc = np.full(crop.shape, cv2.GC_BGD, np.uint8)
    gc[cv2.dilate(crop, k(band_px)) > 0] = cv2.GC_PR_BGD
    gc[crop > 0] = cv2.GC_PR_FGD
    gc[cv2.erode(crop, k(max(band_px // 3, 1))) > 0] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(rgb[y0:y1, x0:x1, ::-1])
    cv2.grabCut(bgr, gc, None, bgd, fgd, 4, cv2.GC_INIT_WITH_MASK)
    fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=4)
    if n <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    out = np.zeros((h, w), bool)
    out[y0:y1, x0:x1] = ndimage.binary_fill_holes(lab == best)
    return out if out.sum() >= 0.5 * mask.sum() else None


def _action_pixel(mask: np.ndarray) -> tuple[float, float]:
    """The mask's most interior pixel (u, v)."""
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    v, u = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(u), float(v)


def synthetic_push(frame: RgbdFrame, rng: np.random.Generator, config: Optional[SyntheticPushConfig] = None,
                   sample_id: str = "synthetic") -> tuple[Optional[SyntheticPush], str]:
    """One synthetic push on ``frame`` (see the module doc): (push, "ok") or (None, the reason)."""
    config = config or SyntheticPushConfig()
    h, w = frame.shape
    seg = depth_bottom_up(frame, config.segmentation)
    if seg.plane is None:
        return None, seg.reason
    plane = seg.plane
    b = config.border_px
    candidates = []
    for m, _ in seg.instances:
        area = int(m.sum())
        if not config.min_area_px <= area <= config.max_area_fraction * h * w:
            continue
        ys, xs = np.nonzero(m)
        if ys.min() < b or xs.min() < b or ys.max() >= h - b or xs.max() >= w - b:
            continue
        candidates.append(m)
    if not candidates:
        return None, "no object of a pushable size away from the border"
    obj = refine_object_mask(frame.rgb, candidates[int(rng.integers(len(candidates)))], config.refine_px)
    if obj is None:
        return None, "the object's outline could not be refined"
    k = frame.intrinsics
    n_c, d_c = plane.camera_plane(frame.camera_to_world)
    depth = np.asarray(frame.depth, dtype=np.float32)
    height = plane.height_image(frame)
    with np.errstate(invalid="ignore"):
        free = np.isfinite(height) & (np.abs(height) < config.segmentation.min_height)
    vs, us = np.nonzero(obj & np.isfinite(depth))
    if len(us) < 10:
        return None, "the object has too little valid depth"
    z = depth[vs, us].astype(np.float64)
    pts = np.stack([(us - k.cx) / k.fx * z, (vs - k.cy) / k.fy * z, z], axis=1)  # (N, 3) camera frame
    # Two unit vectors spanning the table plane.
    e1 = np.cross(n_c, [1.0, 0.0, 0.0] if abs(n_c[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n_c, e1)
    src = np.stack([us, vs], axis=1).astype(np.float64)
    for _ in range(config.tries):
        ang = rng.uniform(0, 2 * np.pi)
        t = (np.cos(ang) * e1 + np.sin(ang) * e2) * rng.uniform(*config.distance_m)
        moved = pts + t
        if (moved[:, 2] <= 0.05).any():
            continue
        dst = np.stack([k.fx * moved[:, 0] / moved[:, 2] + k.cx, k.fy * moved[:, 1] / moved[:, 2] + k.cy], axis=1)
        a, _ = cv2.estimateAffine2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
        if a is None:
            continue
        target = cv2.warpAffine(obj.astype(np.uint8), a, (w, h), flags=cv2.INTER_NEAREST).astype(bool)
        ys, xs = np.nonzero(target)
        if len(ys) == 0 or ys.min() < b or xs.min() < b or ys.max() >= h - b or xs.max() >= w - b:
            continue
        outside = target & ~obj
        if outside.any() and free[outside].mean() < config.min_free_fraction:
            continue
        break
    else:
        return None, f"no free table within {config.distance_m[1]:.2f} m around the object ({config.tries} tries)"

    # After image: fill the hole from the table, then paste the moved object.
    rgb = cv2.inpaint(frame.rgb, obj.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    v, u = np.nonzero(obj)
    ray = n_c[0] * (u - k.cx) / k.fx + n_c[1] * (v - k.cy) / k.fy + n_c[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        zt = -d_c / ray
    after_depth = depth.copy()
    after_depth[v, u] = np.where(zt > 0, zt, np.nan)
    warped_rgb = cv2.warpAffine(frame.rgb, a, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    warped_depth = cv2.warpAffine(np.nan_to_num(depth, nan=0.0), a, (w, h), flags=cv2.INTER_NEAREST)
    rgb[target] = warped_rgb[target]
    wd = warped_depth[target]
    after_depth[target] = np.where(wd > 0, wd + t[2], np.nan)
    after = dataclasses.replace(frame, rgb=rgb, depth=after_depth.astype(np.float32))
    shake = np.eye(3)
    if config.shake_px > 0 or config.shake_deg > 0:
        shake = random_shake((h, w), rng, config.shake_px, config.shake_deg)
        after = shake_frame(after, shake)
    sample = InteractionSample(sample_id, InteractionKind.PUSH, frame, after, _action_pixel(obj), (0.0, 0.0, 0.0),
                               tuple(float(x) for x in t), InteractionOutcome.EXECUTED, "synthetic push")
    return SyntheticPush(sample, obj, target, t, shake), "ok"
