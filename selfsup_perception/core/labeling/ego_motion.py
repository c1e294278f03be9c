"""The optical flow that the camera's own motion causes, to be removed before deciding what moved.

A before/after pair is rarely taken from exactly the same viewpoint: a hand-held or arm-mounted
camera shakes, a robot base sways when the arm pushes. Every pixel then "moves" by a few pixels, and a
labeler that thresholds raw flow labels parts of the static scene (measured on a real tabletop frame
shifted by 1-5 px: kept positive masks of 2,140-4,708 px). :func:`estimate_ego_motion` returns the
camera-induced flow in two stages:

1. **Poses** (when the two frames' ``camera_to_world`` differ, i.e. the camera motion is known):
   every before pixel with depth is back-projected, moved by T_ab = T_wa_after^-1 T_wa_before and
   projected (the reprojection of :mod:`selfsup_perception.core.registration.reprojection`); pixels
   without depth use the homography of the table plane, K (R - t n^T / d) K^-1, or the rotation-only
   homography K R K^-1 without a plane.
2. **A robust global model of what is left** (always tried; the only stage when the poses are not
   known or identical): a homography fitted by RANSAC (OpenCV ``findHomography``, reprojection
   threshold ``ransac_threshold_px``) to the residual flow at textured pixels of a grid, taken on the
   table/background (height above the table plane below ``background_height_m`` or no depth) when
   there are enough of them. A homography is exact for a camera rotation and for the table plane under
   any camera motion; objects a few centimetres above the table differ by a fraction of a pixel for a
   shake of millimetres. The model is applied only if it is *camera motion*, not a pushed object:
   it moves some pixel by more than ``min_model_motion_px``, explains at least ``min_inlier_fraction``
   of the points and clearly more of them than "the camera did not move" (identity) does
   (``min_gain``), and its inliers spread over the image (bounding box at least ``min_spread`` of the
   width and of the height). A pushed object covers a small part of the image, so its motion fails the
   spread test and stays in the flow. Finally the model must *register the images better*: at the same
   background points, the before colours must match the after image at p + induced(p) + model(p) clearly
   better than without the model (median colour error down by ``min_photometric_gain``). Flow errors fit
   homographies too: on a plain or grain-textured table DIS is off by ~2 px along the grain (realistic
   world: median 2.2 px against the known poses' flow on textured background pixels, and only 29 % within
   1 px), and a homography fitted to those errors moved a static object by 2 px (a wrong positive label).
   An image shift that is really there lowers the colour error; a model of flow errors does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from selfsup_perception.core.types import RgbdFrame


@dataclass(frozen=True)
class EgoMotionConfig:
    """Parameters of :func:`estimate_ego_motion`; pixel values are for 640x480 and scaled by the caller."""

    enabled: bool = True
    use_poses: bool = True
    grid_step_px: int = 8  # sample the flow every this many pixels
    ransac_threshold_px: float = 1.0
    min_points: int = 40  # fewer textured grid points -> no global model
    min_inlier_fraction: float = 0.4
    min_gain: float = 1.3  # homography inliers / identity inliers needed to believe the camera moved
    min_model_motion_px: float = 0.5  # a model moving no pixel more than this is "the camera did not move"
    min_spread: float = 0.5  # inliers' bounding box, as a fraction of the image width and of its height
    background_height_m: float = 0.02  # points lower than this above the table count as background
    # The model must lower the median colour error (before vs after seen through the compensation) at the
    # background points by at least this fraction; 0 = no photometric check.
    min_photometric_gain: float = 0.1

    def __post_init__(self) -> None:
        if self.grid_step_px < 1 or self.min_points < 4:
            raise ValueError("grid_step_px must be >= 1 and min_points >= 4")
        if not self.ransac_threshold_px > 0 or not 0 <= self.min_inlier_fraction <= 1:
            raise ValueError("ransac_threshold_px must be positive and min_inlier_fraction in [0, 1]")
        if not 0 <= self.min_photometric_gain < 1:
            raise ValueError(f"min_photometric_gain must be in [0, 1), got {self.min_photometric_gain}")


@dataclass
class EgoMotion:
    """Camera-induced flow (H, W, 2) float32 before -> after (zeros when the camera did not move)."""

    flow: np.ndarray
    source: str  # 'none' | 'poses' | 'homography' | 'poses+homography'
    max_px: float  # largest camera-induced displacement
    reason: str  # why the global model was (not) applied
    inlier_fraction: float = 0.0

    @property
    def compensated(self) -> bool:
        return self.source != "none"


def poses_known(before: RgbdFrame, after: RgbdFrame) -> bool:
    """True when the two frames carry different camera poses (identity on both = pose unknown)."""
    a = np.asarray(before.camera_to_world, dtype=np.float64)
    b = np.asarray(after.camera_to_world, dtype=np.float64)
    return not (np.allclose(a, np.eye(4)) and np.allclose(b, np.eye(4))) and not np.allclose(a, b)


def pose_induced_flow(before: RgbdFrame, after: RgbdFrame, plane_camera: Optional[tuple[np.ndarray, float]] = None
                      ) -> np.ndarray:
    """(H, W, 2) float32 flow of a static scene caused by the camera moving from ``before`` to ``after``.

    ``plane_camera`` (n, d) is the table plane in the *before* camera frame (n . X + d = 0), used where
    the depth is invalid; without it those pixels get the rotation-only (infinitely far) flow.
    """
    from selfsup_perception.core.geometry.camera import as_rigid_transform

    t_ab = np.linalg.inv(as_rigid_transform(after.camera_to_world, "after.camera_to_world")) @ \
        as_rigid_transform(before.camera_to_world, "before.camera_to_world")
    r, t = t_ab[:3, :3], t_ab[:3, 3]
    k_a, k_b = before.intrinsics, after.intrinsics
    h, w = before.shape
    # float32 throughout (errors ~1e-4 px, far below the flow's)
    u = np.arange(w, dtype=np.float32)[None, :]  # (1, W)
    v = np.arange(h, dtype=np.float32)[:, None]  # (H, 1)
    x = ((u - k_a.cx) / k_a.fx).astype(np.float32)  # normalised rays (separable)
    y = ((v - k_a.cy) / k_a.fy).astype(np.float32)
    z = np.asarray(before.depth, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(z) & (z > 0)
    if plane_camera is not None:
        n, d = plane_camera
        denom = n[0] * x + n[1] * y + n[2]  # (H, W)
        with np.errstate(divide="ignore", invalid="ignore"):
            zp = (np.float32(-d) / denom).astype(np.float32)
            z = np.where(valid, z, zp)
            valid = np.isfinite(z) & (z > 0)
    flow = np.empty((h, w, 2), np.float32)
    # Points: X = z (x, y, 1); X' = R X + t = z (R (x, y, 1)) + t. Without depth: the direction only
    # (t ignored, point at infinity). Broadcast over the separable rays (no (H, W) grids: sim pairs with poses
    # spent ~20 ms here).
    zz = np.where(valid, z, np.float32(1.0))
    r, t = r.astype(np.float32), t.astype(np.float32)
    rows = [(r[i, 0] * x + r[i, 2]) + r[i, 1] * y for i in range(3)]  # (H, W) each: R (x, y, 1), row i
    xb = rows[0] * zz + np.where(valid, t[0], np.float32(0.0))
    yb = rows[1] * zz + np.where(valid, t[1], np.float32(0.0))
    zb = rows[2] * zz + np.where(valid, t[2], np.float32(0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        flow[..., 0] = np.float32(k_b.fx) * xb / zb + np.float32(k_b.cx) - u
        flow[..., 1] = np.float32(k_b.fy) * yb / zb + np.float32(k_b.cy) - v
    flow[~np.isfinite(flow)] = 0.0
    return flow


def homography_flow(hmat: np.ndarray, shape: tuple[int, int], scale: float = 0.25) -> np.ndarray:
    """(H, W, 2) float32 flow p -> H p - p, evaluated at ``scale`` and resized (the field is smooth)."""
    h, w = shape
    sh, sw = max(int(round(h * scale)), 2), max(int(round(w * scale)), 2)
    v, u = np.mgrid[0:sh, 0:sw].astype(np.float64)
    u = (u + 0.5) * (w / sw) - 0.5  # low-res pixel centres in full-resolution coordinates
    v = (v + 0.5) * (h / sh) - 0.5
    den = hmat[2, 0] * u + hmat[2, 1] * v + hmat[2, 2]
    fu = (hmat[0, 0] * u + hmat[0, 1] * v + hmat[0, 2]) / den - u
    fv = (hmat[1, 0] * u + hmat[1, 1] * v + hmat[1, 2]) / den - v
    low = np.stack([fu, fv], axis=-1).astype(np.float32)
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)


def colour_error(before_blurred: np.ndarray, after_blurred: np.ndarray, u: np.ndarray, v: np.ndarray,
                 displacement: np.ndarray) -> float:
    """Median over the points (``u``, ``v``) (int arrays) of the sum of absolute channel differences between
    the before colour at p and the after colour at p + ``displacement`` (N, 2) (bilinear), of 3x3-blurred
    (H, W, 3) images; the after colours are first scaled per channel to the before colours' median (an
    exposure or white-balance change between the frames is not a misregistration)."""
    h, w = after_blurred.shape[:2]
    b = before_blurred[v, u].astype(np.float32)  # (N, 3)
    x = np.clip(u + displacement[:, 0], 0, w - 1.001).astype(np.float32)
    y = np.clip(v + displacement[:, 1], 0, h - 1.001).astype(np.float32)
    x0, y0 = x.astype(np.int64), y.astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    img = after_blurred
    a = ((img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx) * (1 - fy)
         + (img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx) * fy)  # (N, 3) float
    a = a * (np.median(b, axis=0) / np.maximum(np.median(a, axis=0), 1.0))
    return float(np.median(np.abs(b - a).sum(axis=1)))


def estimate_ego_motion(
    before: RgbdFrame,
    after: RgbdFrame,
    flow: np.ndarray,
    textured: np.ndarray,
    height: Optional[np.ndarray] = None,
    plane_camera: Optional[tuple[np.ndarray, float]] = None,
    config: Optional[EgoMotionConfig] = None,
    pixel_scale: float = 1.0,
) -> EgoMotion:
    """Camera-induced flow of the pair (see the module doc).

    ``flow`` (H, W, 2) measured before -> after; ``textured`` (H, W) bool: pixels where flow is observable;
    ``height`` (H, W) above the table plane in the before frame (NaN = no depth), or None;
    ``pixel_scale`` multiplies the pixel thresholds (sqrt(HW / 640x480)).
    """
    config = config or EgoMotionConfig()
    h, w = flow.shape[:2]
    zero = np.zeros((h, w, 2), np.float32)
    if not config.enabled:
        return EgoMotion(zero, "none", 0.0, "ego-motion compensation disabled")
    induced, source = zero, "none"
    if config.use_poses and poses_known(before, after):
        induced = pose_induced_flow(before, after, plane_camera)
        source = "poses"

    # Residual global model on a grid of textured (background) pixels.
    step = max(int(round(config.grid_step_px * pixel_scale)), 1)
    gy, gx = np.mgrid[step // 2:h:step, step // 2:w:step]
    sel = textured[gy, gx]
    if height is not None:
        hg = height[gy, gx]
        with np.errstate(invalid="ignore"):
            background = sel & ~(hg >= config.background_height_m)  # NaN (no depth) counts as background
        if background.sum() >= config.min_points:
            sel = background
    px, py = gx[sel].astype(np.float32), gy[sel].astype(np.float32)
    n_pts = int(px.size)
    max_px = float(np.abs(induced).max()) if source != "none" else 0.0
    if n_pts < config.min_points:
        return EgoMotion(induced, source, max_px, f"too few textured points for a global model ({n_pts})")
    residual = flow[py.astype(int), px.astype(int)] - induced[py.astype(int), px.astype(int)]  # (N, 2)
    src = np.stack([px, py], axis=1)
    dst = src + residual
    thr = config.ransac_threshold_px * pixel_scale
    hmat, inl = cv2.findHomography(src, dst, cv2.RANSAC, thr, maxIters=500, confidence=0.995)
    if hmat is None:
        return EgoMotion(induced, source, max_px, "no global model")
    inl = inl.ravel().astype(bool)
    frac = float(inl.mean())
    n_identity = int((np.linalg.norm(residual, axis=1) < thr).sum())
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [w / 2, h / 2]], np.float32)
    moved = cv2.perspectiveTransform(corners[None], hmat)[0] - corners
    model_px = float(np.linalg.norm(moved, axis=1).max())
    spread_u = (px[inl].max() - px[inl].min()) / w if inl.any() else 0.0
    spread_v = (py[inl].max() - py[inl].min()) / h if inl.any() else 0.0
    why = (f"homography moves <= {model_px:.2f} px, inliers {100 * frac:.0f} % ({int(inl.sum())} vs {n_identity} for "
           f"a still camera), spread {spread_u:.2f} x {spread_v:.2f}")
    if model_px < config.min_model_motion_px * pixel_scale:
        return EgoMotion(induced, source, max_px, "camera still: " + why, frac)
    if frac < config.min_inlier_fraction or inl.sum() < config.min_gain * max(n_identity, 1) \
            or min(spread_u, spread_v) < config.min_spread:
        return EgoMotion(induced, source, max_px, "global model not applied: " + why, frac)
    model = homography_flow(hmat, (h, w))
    if config.min_photometric_gain > 0 and before.rgb is not None and after.rgb is not None:
        ix, iy = px.astype(int), py.astype(int)
        b_blur, a_blur = cv2.blur(before.rgb, (3, 3)), cv2.blur(after.rgb, (3, 3))
        err_without = colour_error(b_blur, a_blur, ix, iy, induced[iy, ix])
        err_with = colour_error(b_blur, a_blur, ix, iy, induced[iy, ix] + model[iy, ix])
        why += f", colour error {err_without:.1f} -> {err_with:.1f}"
        if not err_with <= (1.0 - config.min_photometric_gain) * err_without:
            return EgoMotion(induced, source, max_px, "global model not applied (does not register the images "
                                                      "better): " + why, frac)
    induced = induced + model
    source = "homography" if source == "none" else "poses+homography"
    return EgoMotion(induced, source, float(np.abs(induced).max()), "applied: " + why, frac)
