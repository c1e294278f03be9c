"""Depth-based pixel correspondences between two registered RGB-D views (ROS-free, numpy only).

RegConsist eq. (1): ``T_{1->2}(I1) = { K (T2^-1 (T1 (K^-1 x))) for x in I1 }`` -- back-project each
pixel of view A with its depth, move it to the world with A's camera-to-world pose, into B's camera
frame with B's inverse pose, and project it with B's intrinsics. A pixel pair is kept only if

* the projected point lies inside B's image (after rounding to the nearest pixel) and in front of B,
* B observed a valid depth there, and
* that observed depth agrees with the projected depth ``z``:
  ``|d_B(q) - z| <= depth_tolerance + relative_depth_tolerance * z`` (occlusion / consistency check).

Dense Object Nets (``correspondence_finder.py``) applies only the one-sided occlusion test
``d_B(q) >= z - 3 mm``; we use the two-sided test because a farther observed surface than predicted is
just as inconsistent (thin structures, depth holes filled by the background, pose error), and a relative
term because RGB-D noise grows with range.

Everything here takes plain arrays so it works on any real RGB-D sequence with poses (e.g. a SLAM
trajectory): depth as uint16 millimetres (0 = invalid) or float metres (NaN/0/inf = invalid), intrinsics
as a :class:`~selfsup_perception.core.types.CameraIntrinsics` or a 3x3 K matrix, and poses as 4x4
camera-to-world transforms (optical frame: x right, y down, z forward).

Sanity checks on real data: rotations that are orthonormal within
:data:`~selfsup_perception.core.geometry.ROTATION_TOLERANCE` (1e-2) are re-orthonormalised by SVD, others
are rejected with their deviation; float depth whose valid median is beyond 20 m is rejected as "looks like
millimetres"; :func:`pose_pair_problem` flags a pair whose reprojection overlap is ~0 although the images
are near-identical, and says whether inverting the poses (world->camera given) explains it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from selfsup_perception.core.geometry.camera import as_rigid_transform, depth_units_problem, sanitize_depth
from selfsup_perception.core.types import CameraIntrinsics

IntrinsicsLike = Union[CameraIntrinsics, np.ndarray]

DEFAULT_DEPTH_TOLERANCE = 0.01  # metres, absolute part of the depth-consistency test
DEFAULT_RELATIVE_DEPTH_TOLERANCE = 0.02  # fraction of the projected depth


@dataclass
class Correspondences:
    """Pixel correspondences from view A to view B.

    ``pixels_a`` (N, 2) int64 (u, v) in A, ``pixels_b`` (N, 2) float64 sub-pixel (u, v) in B,
    ``valid`` (H_a, W_a) bool marks the pixels of A that have a correspondence (row-major order of
    ``pixels_a`` follows ``np.nonzero(valid)``), ``depth_b`` (N,) the projected depth in B (metres).
    """

    pixels_a: np.ndarray
    pixels_b: np.ndarray
    valid: np.ndarray
    depth_b: np.ndarray
    shape_b: tuple[int, int]  # (H_b, W_b)

    def __len__(self) -> int:
        return int(self.pixels_a.shape[0])

    @property
    def pixels_b_int(self) -> np.ndarray:
        """(N, 2) int64 nearest pixel in B (the pixel whose depth passed the consistency test)."""
        return np.rint(self.pixels_b).astype(np.int64)

    def flat_a(self) -> np.ndarray:
        """(N,) flat indices v * W_a + u of ``pixels_a``."""
        return self.pixels_a[:, 1] * self.valid.shape[1] + self.pixels_a[:, 0]

    def flat_b(self) -> np.ndarray:
        """(N,) flat indices v * W_b + u of the nearest B pixels."""
        q = self.pixels_b_int
        return q[:, 1] * self.shape_b[1] + q[:, 0]


def as_intrinsics(intrinsics: IntrinsicsLike, shape: tuple[int, int]) -> CameraIntrinsics:
    """A :class:`CameraIntrinsics` for an image of ``shape`` (H, W) from a CameraIntrinsics or a 3x3 K."""
    h, w = shape
    if isinstance(intrinsics, CameraIntrinsics):
        if (intrinsics.width, intrinsics.height) != (w, h):
            raise ValueError(
                f"intrinsics are for {intrinsics.width}x{intrinsics.height} but the depth image is {w}x{h}"
            )
        return intrinsics
    k = np.asarray(intrinsics, dtype=np.float64)
    if k.shape != (3, 3) or not np.all(np.isfinite(k)):
        raise ValueError(f"intrinsics must be a CameraIntrinsics or a finite 3x3 matrix, got shape {k.shape}")
    return CameraIntrinsics.from_matrix(k, w, h)


def _as_pose(t: np.ndarray, name: str) -> np.ndarray:
    """A 4x4 camera-to-world pose, re-orthonormalised within ``ROTATION_TOLERANCE`` (real poses deviate by
    ~1e-4); rejected beyond it with the deviation in the message (see :func:`as_rigid_transform`)."""
    t = np.asarray(t, dtype=np.float64)
    if t.shape != (4, 4):
        raise ValueError(f"{name} must be a 4x4 camera-to-world matrix, got shape {t.shape}")
    return as_rigid_transform(t, name)


def _as_depth(depth: np.ndarray, name: str) -> np.ndarray:
    depth = np.asarray(depth)
    if depth.ndim != 2 or depth.size == 0:
        raise ValueError(f"{name} must be a non-empty (H, W) image, got shape {depth.shape}")
    problem = depth_units_problem(depth)
    if problem is not None:
        raise ValueError(f"{name}: {problem}")
    return sanitize_depth(depth)


def correspondences(
    depth_a: np.ndarray,
    intrinsics_a: IntrinsicsLike,
    T_wa: np.ndarray,
    depth_b: np.ndarray,
    intrinsics_b: IntrinsicsLike,
    T_wb: np.ndarray,
    *,
    depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE,
    relative_depth_tolerance: float = DEFAULT_RELATIVE_DEPTH_TOLERANCE,
    stride: int = 1,
) -> Correspondences:
    """Correspondences A -> B by reprojection with an occlusion/depth-consistency check (RegConsist eq. 1).

    ``stride`` > 1 only evaluates every ``stride``-th pixel of A in each direction (for fast overlap
    estimates); ``valid`` keeps A's full resolution. Returns an empty :class:`Correspondences` when the
    views do not overlap.
    """
    if depth_tolerance < 0 or relative_depth_tolerance < 0:
        raise ValueError("depth tolerances must be non-negative")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    da = _as_depth(depth_a, "depth_a")
    db = _as_depth(depth_b, "depth_b")
    ka = as_intrinsics(intrinsics_a, da.shape)
    kb = as_intrinsics(intrinsics_b, db.shape)
    t_ba = np.linalg.inv(_as_pose(T_wb, "T_wb")) @ _as_pose(T_wa, "T_wa")  # A camera -> B camera
    ha, wa = da.shape
    hb, wb = db.shape

    # Valid A pixels (optionally strided), back-projected: X_a = z * K_a^-1 [u, v, 1]^T.
    sub = da[::stride, ::stride]
    vs, us = np.nonzero(np.isfinite(sub))
    vs, us = vs * stride, us * stride
    z = da[vs, us].astype(np.float64)
    xa = (us - ka.cx) / ka.fx * z
    ya = (vs - ka.cy) / ka.fy * z
    # X_b = R_ba X_a + t_ba, written per component to avoid (N, 3) temporaries.
    r, t = t_ba[:3, :3], t_ba[:3, 3]
    xb = r[0, 0] * xa + r[0, 1] * ya + r[0, 2] * z + t[0]
    yb = r[1, 0] * xa + r[1, 1] * ya + r[1, 2] * z + t[1]
    zb = r[2, 0] * xa + r[2, 1] * ya + r[2, 2] * z + t[2]
    front = zb > 1e-6
    us, vs, xb, yb, zb = us[front], vs[front], xb[front], yb[front], zb[front]
    ub = kb.fx * xb / zb + kb.cx
    vb = kb.fy * yb / zb + kb.cy
    ui = np.rint(ub)
    vi = np.rint(vb)
    inside = (ui >= 0) & (ui <= wb - 1) & (vi >= 0) & (vi <= hb - 1)
    us, vs, ub, vb, zb = us[inside], vs[inside], ub[inside], vb[inside], zb[inside]
    observed = db[vi[inside].astype(np.int64), ui[inside].astype(np.int64)]
    with np.errstate(invalid="ignore"):
        consistent = np.abs(observed - zb) <= depth_tolerance + relative_depth_tolerance * zb  # NaN -> False
    us, vs = us[consistent], vs[consistent]
    valid = np.zeros((ha, wa), dtype=bool)
    valid[vs, us] = True
    # Row-major order, as np.nonzero(valid) would give (np.nonzero already returned row-major order).
    return Correspondences(
        pixels_a=np.stack([us, vs], axis=1).astype(np.int64),
        pixels_b=np.stack([ub[consistent], vb[consistent]], axis=1),
        valid=valid,
        depth_b=zb[consistent],
        shape_b=(hb, wb),
    )


def view_overlap(
    depth_a: np.ndarray,
    intrinsics_a: IntrinsicsLike,
    T_wa: np.ndarray,
    depth_b: np.ndarray,
    intrinsics_b: IntrinsicsLike,
    T_wb: np.ndarray,
    *,
    depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE,
    relative_depth_tolerance: float = DEFAULT_RELATIVE_DEPTH_TOLERANCE,
    stride: int = 1,
) -> float:
    """IoU of two views, in [0, 1]: ``|covisible| / |valid_a U valid_b|``.

    The paper selects view pairs by an "IoU" of the views without giving the formula; we define it on
    the observed surface: ``valid_a`` / ``valid_b`` are the pixels with valid depth, ``covisible_ab`` the
    pixels of A with a consistent correspondence in B and ``covisible_ba`` those of B with one in A.
    With ``|covisible| = (|covisible_ab| + |covisible_ba|) / 2`` (the two counts differ slightly with
    resolution and viewing angle; the mean makes the measure symmetric),

        IoU = |covisible| / (|valid_a| + |valid_b| - |covisible|).

    Identical views give 1, disjoint views 0. ``stride`` subsamples both images (counts are scaled
    consistently, so the result estimates the full-resolution value).
    """
    kwargs = dict(depth_tolerance=depth_tolerance, relative_depth_tolerance=relative_depth_tolerance, stride=stride)
    ab = correspondences(depth_a, intrinsics_a, T_wa, depth_b, intrinsics_b, T_wb, **kwargs)
    ba = correspondences(depth_b, intrinsics_b, T_wb, depth_a, intrinsics_a, T_wa, **kwargs)
    da = sanitize_depth(np.asarray(depth_a))[::stride, ::stride]
    db = sanitize_depth(np.asarray(depth_b))[::stride, ::stride]
    n_a, n_b = int(np.isfinite(da).sum()), int(np.isfinite(db).sum())
    covisible = 0.5 * (len(ab) + len(ba))
    union = n_a + n_b - covisible
    return float(covisible / union) if union > 0 else 0.0


def images_similarity(rgb_a: np.ndarray, rgb_b: np.ndarray, size: int = 32) -> float:
    """Normalised cross-correlation in [-1, 1] of the two images' grey levels, blurred (Gaussian, sigma
    1/50 of the width) and area-resized to ``size`` x ``size``: only the coarse layout counts, so a
    few pixels of camera motion keep it near 1."""
    import cv2

    def prep(im: np.ndarray) -> np.ndarray:
        im = np.asarray(im)
        g = im.mean(axis=2) if im.ndim == 3 else im
        g = cv2.GaussianBlur(g.astype(np.float32), (0, 0), max(g.shape[1] / 50.0, 0.5))
        g = cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA)
        g = g - g.mean()
        return g / (np.linalg.norm(g) + 1e-9)

    return float((prep(rgb_a) * prep(rgb_b)).sum())


def pose_pair_problem(
    rgb_a: np.ndarray,
    depth_a: np.ndarray,
    intrinsics_a: IntrinsicsLike,
    T_wa: np.ndarray,
    rgb_b: np.ndarray,
    depth_b: np.ndarray,
    intrinsics_b: IntrinsicsLike,
    T_wb: np.ndarray,
    *,
    min_overlap: float = 0.05,
    min_similarity: float = 0.8,
    stride: int = 4,
) -> "str | None":
    """Why a pose pair looks wrong (None if it does not).

    Near-identical images (:func:`images_similarity` >= ``min_similarity``) whose reprojection overlap
    (:func:`view_overlap`) is below ``min_overlap`` mean the poses do not describe the views: the message
    gives both overlaps and, when the inverted poses (world->camera instead of camera->world) overlap
    better, says so ("inverted pose?").
    """
    similarity = images_similarity(rgb_a, rgb_b)
    if similarity < min_similarity:
        return None
    overlap = view_overlap(depth_a, intrinsics_a, T_wa, depth_b, intrinsics_b, T_wb, stride=stride)
    if overlap >= min_overlap:
        return None
    inv_a, inv_b = np.linalg.inv(_as_pose(T_wa, "T_wa")), np.linalg.inv(_as_pose(T_wb, "T_wb"))
    inverted = view_overlap(depth_a, intrinsics_a, inv_a, depth_b, intrinsics_b, inv_b, stride=stride)
    msg = (f"the images are near-identical (similarity {similarity:.2f}) but the poses give a reprojection "
           f"overlap of {overlap:.2f}")
    if inverted > max(2 * overlap, min_overlap):
        return msg + f"; with both poses inverted it is {inverted:.2f}: inverted pose? (world->camera given " \
                     "instead of camera->world)"
    return msg + "; the poses do not describe these views"
