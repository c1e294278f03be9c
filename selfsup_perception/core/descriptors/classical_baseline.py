"""Classical SIFT / ORB matching of given query pixels (OpenCV), a baseline for learned descriptors.

Descriptors are computed *at the query pixels* of the reference image (fixed
keypoint size, orientation from the detector's convention) and at candidate
pixels of the target image = detected keypoints plus a dense grid (step
``grid_step`` px). Each query takes its nearest candidate (L2 for SIFT, Hamming
for ORB); confidence = Lowe's ratio ``1 - d1 / d2`` with ``d2`` the best candidate farther than
``exclusion_px`` from the best one (on a dense grid the adjacent pixels are near-duplicates). Queries
that OpenCV cannot describe (too close to the border for ORB) get NaN pixels
and confidence 0.
"""

from __future__ import annotations

import cv2
import numpy as np

METHODS = ("sift", "orb")


def _gray(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise ValueError(f"images must be non-empty (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _extractor(method: str, patch_size: int):
    if method == "sift":
        return cv2.SIFT_create(), cv2.NORM_L2
    if method == "orb":
        return cv2.ORB_create(nfeatures=2000, edgeThreshold=patch_size, patchSize=patch_size, fastThreshold=5), cv2.NORM_HAMMING
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _describe(extractor, gray: np.ndarray, pts: np.ndarray, size: float, method: str):
    # Upright descriptors (angle 0) on both sides: the viewpoint changes here have little camera roll.
    kps = [cv2.KeyPoint(float(x), float(y), size, 0.0, 0, 0, i) for i, (x, y) in enumerate(pts)]
    kps, desc = extractor.compute(gray, kps)
    ids = np.array([k.class_id for k in kps], dtype=np.int64)
    locs = np.array([k.pt for k in kps], dtype=np.float64).reshape(-1, 2)
    return ids, locs, desc


def match_classical(rgb_ref: np.ndarray, rgb_target: np.ndarray, pixels_ref: np.ndarray, *, method: str = "sift",
                    keypoint_size: float = 8.0, grid_step: int = 2, patch_size: int = 15,
                    exclusion_px: float = 4.0, ratio_candidates: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(pixels_target (N, 2) float64 with NaN where undescribable, confidence (N,) float64 in [0, 1])."""
    g_ref, g_tgt = _gray(rgb_ref), _gray(rgb_target)
    px = np.asarray(pixels_ref, dtype=np.float64)
    if px.ndim != 2 or px.shape[1] != 2 or not np.isfinite(px).all():
        raise ValueError(f"pixels_ref must be finite (N, 2), got {px.shape}")
    if grid_step < 1:
        raise ValueError("grid_step must be >= 1")
    extractor, norm = _extractor(method, patch_size)
    n = len(px)
    out = np.full((n, 2), np.nan)
    conf = np.zeros(n)
    if n == 0:
        return out, conf
    q_ids, _, q_desc = _describe(extractor, g_ref, px, keypoint_size, method)
    h, w = g_tgt.shape
    ys, xs = np.mgrid[0:h:grid_step, 0:w:grid_step]
    cand = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    detected = extractor.detect(g_tgt, None)
    if detected:
        cand = np.concatenate([cand, np.array([k.pt for k in detected])], 0)
    _, c_locs, c_desc = _describe(extractor, g_tgt, cand, keypoint_size, method)
    if q_desc is None or c_desc is None or len(q_desc) == 0 or len(c_desc) < 2:
        return out, conf
    matcher = cv2.BFMatcher(norm)
    for qi, ranked in zip(q_ids, matcher.knnMatch(q_desc, c_desc, k=min(ratio_candidates, len(c_desc)))):
        if len(ranked) == 0:
            continue
        best = ranked[0]
        out[qi] = c_locs[best.trainIdx]
        second = next((m for m in ranked[1:] if np.linalg.norm(c_locs[m.trainIdx] - out[qi]) > exclusion_px), None)
        if second is None:
            conf[qi] = 1.0 if best.distance == 0 else 0.0
        elif second.distance > 0:
            conf[qi] = max(0.0, 1.0 - best.distance / second.distance)
    return out, conf
