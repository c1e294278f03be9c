"""Table plane from one depth image: RANSAC on a subsample, least-squares refit on the inliers.

The plane is ``n . x + d = 0`` with a unit normal ``n`` oriented so that the
camera centre has a positive height: ``height_above(x) = n . x + d`` is the signed
distance of ``x`` above the table (metres). Papers 001/003 segment the table with
depth before pushing / grasping; neither specifies the estimator, so we use
the standard one (RANSAC [Fischler & Bolles 1981] + total-least-squares refit by SVD).

The plane lives in either the world frame (``frame='world'``, points from
``camera_to_world``; lets the fit prefer planes whose normal is close to world
+z) or the camera optical frame of the frame it was fitted on (``frame='camera'``).
:meth:`TablePlane.height_image` handles other views of the same scene by going
through the world frame, so a plane fitted on the *before* frame can be applied
to the *after* frame even when the camera moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from selfsup_perception.core.geometry.camera import backproject_pixels, transform_points
from selfsup_perception.core.types import RgbdFrame


@dataclass(frozen=True)
class TablePlaneConfig:
    """Parameters of :func:`fit_table_plane` (metres, pixels)."""

    frame: str = "world"  # 'world' | 'camera': where the plane is fitted and expressed
    max_points: int = 1500  # random subsample used for the RANSAC hypotheses and scoring
    iterations: int = 100  # RANSAC hypotheses
    inlier_threshold: float = 0.008  # |height| below this counts as an inlier (metres)
    refit_iterations: int = 2  # least-squares refits on the inliers of all valid pixels
    min_inlier_fraction: float = 0.1  # of the valid pixels; fewer -> ValueError
    # Prior on the normal, in the WORLD frame (rotated into the camera frame for frame='camera');
    # world +z by default; None disables it.
    expected_normal: Optional[tuple[float, float, float]] = (0.0, 0.0, 1.0)
    max_normal_angle_deg: float = 30.0
    stride: int = 6  # pixel stride for the refit (speed); the inlier mask is always full resolution

    def __post_init__(self) -> None:
        if self.frame not in ("world", "camera"):
            raise ValueError(f"frame must be 'world' or 'camera', got {self.frame!r}")
        if self.max_points < 3 or self.iterations < 1:
            raise ValueError("max_points must be >= 3 and iterations >= 1")
        if not self.inlier_threshold > 0:
            raise ValueError(f"inlier_threshold must be positive, got {self.inlier_threshold}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")


@dataclass
class TablePlane:
    """A fitted plane ``n . x + d = 0``; ``height_above`` is positive on the camera's side."""

    normal: np.ndarray  # (3,) unit
    offset: float  # d
    inlier_mask: np.ndarray  # (H, W) bool: pixels of the fitted frame within the inlier threshold
    frame: str = "world"  # 'world' | 'camera'
    camera_to_world: np.ndarray = field(default_factory=lambda: np.eye(4))  # T_wc of the fitted frame
    rms_error: float = 0.0  # RMS height of the inliers (metres)

    def height_above(self, points: np.ndarray) -> np.ndarray:
        """Signed height ``n . p + d`` of points (..., 3) expressed in the plane's frame."""
        points = np.asarray(points, dtype=np.float64)
        if points.shape[-1] != 3:
            raise ValueError(f"points must have shape (..., 3), got {points.shape}")
        return points @ self.normal + self.offset

    def camera_plane(self, camera_to_world: np.ndarray) -> tuple[np.ndarray, float]:
        """(n_c, d_c): the plane in the optical frame of a camera with pose ``camera_to_world``.

        With x_p = T x_c (T = T_wc for a world plane, T_{c0}^{-1} T_wc for a camera plane):
        n . (R x_c + t) + d = (R^T n) . x_c + (n . t + d).
        """
        t = np.asarray(camera_to_world, dtype=np.float64)
        if self.frame == "camera":
            t = np.linalg.inv(self.camera_to_world) @ t
        return t[:3, :3].T @ self.normal, float(self.normal @ t[:3, 3] + self.offset)

    def height_image(self, frame: RgbdFrame) -> np.ndarray:
        """(H, W) float32 height above the plane of every pixel of ``frame``; NaN where depth is invalid.

        Computed without building the point cloud: for pixel (u, v) with depth z,
        x_c = z (x', y', 1) with x' = (u - c_x)/f_x, y' = (v - c_y)/f_y, so
        height = z (n_c . (x', y', 1)) + d_c.
        """
        depth = _checked_depth(frame)
        n_c, d_c = self.camera_plane(frame.camera_to_world)
        k = frame.intrinsics
        h, w = depth.shape
        xr = ((np.arange(w) - k.cx) / k.fx * n_c[0]).astype(np.float32)  # (W,)
        yr = ((np.arange(h) - k.cy) / k.fy * n_c[1] + n_c[2]).astype(np.float32)  # (H,)
        with np.errstate(invalid="ignore"):
            out = depth.astype(np.float32, copy=False) * (yr[:, None] + xr[None, :]) + np.float32(d_c)
            out[~(depth > 0)] = np.nan
        return out

    def height_at_pixels(self, frame: RgbdFrame, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Heights above the plane of integer pixels (u, v) (same shapes) of ``frame``; NaN where depth is invalid."""
        depth = _checked_depth(frame)
        n_c, d_c = self.camera_plane(frame.camera_to_world)
        k = frame.intrinsics
        z = depth[v, u].astype(np.float64)
        with np.errstate(invalid="ignore"):
            out = z * ((u - k.cx) / k.fx * n_c[0] + (v - k.cy) / k.fy * n_c[1] + n_c[2]) + d_c
            out[~(z > 0)] = np.nan
        return out


def _checked_depth(frame: RgbdFrame) -> np.ndarray:
    if frame.depth is None:
        raise ValueError("the frame has no depth image; the table plane needs depth")
    depth = np.asarray(frame.depth)
    if depth.ndim != 2 or depth.size == 0:
        raise ValueError(f"depth must be a non-empty (H, W) image, got shape {depth.shape}")
    if frame.rgb is not None and np.asarray(frame.rgb).shape[:2] != depth.shape:
        raise ValueError(f"depth {depth.shape} does not match rgb {np.asarray(frame.rgb).shape[:2]}")
    h, w = depth.shape
    if (frame.intrinsics.width, frame.intrinsics.height) != (w, h):
        raise ValueError(
            f"depth is {w}x{h} but intrinsics are for {frame.intrinsics.width}x{frame.intrinsics.height}"
        )
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth must be float metres (NaN invalid), got {depth.dtype}; use sanitize_depth")
    return depth


def _plane_from_points(p: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Total-least-squares plane of points (N, 3): normal = smallest right singular vector of the centred points."""
    c = p.mean(axis=0)
    _, s, vt = np.linalg.svd(p - c, full_matrices=False)
    n = vt[-1]
    return n, float(-n @ c), float(s[-1] / np.sqrt(len(p)))


def fit_table_plane(
    frame: RgbdFrame, config: Optional[TablePlaneConfig] = None, rng: Optional[np.random.Generator] = None
) -> TablePlane:
    """Fit the dominant (table) plane of ``frame``'s depth.

    1. Valid pixels (finite depth > 0) are back-projected (camera frame) and, for
       ``frame='world'``, moved to the world with ``camera_to_world``.
    2. RANSAC on a random subsample of ``max_points``: ``iterations`` 3-point
       hypotheses, vectorised; a hypothesis whose normal is farther than
       ``max_normal_angle_deg`` from ``expected_normal`` is rejected; score =
       number of points with ``|n . p + d| < inlier_threshold``.
    3. Least-squares refit (SVD) on the inliers among all valid pixels (every
       ``stride``-th pixel), repeated ``refit_iterations`` times.
    4. Orientation: the camera centre gets a positive height.

    Raises ``ValueError`` on missing depth, size mismatch, too few valid pixels or
    no plane with ``min_inlier_fraction`` support. Deterministic given ``rng``
    (default ``np.random.default_rng(0)``).
    """
    config = config or TablePlaneConfig()
    rng = rng if rng is not None else np.random.default_rng(0)
    depth = _checked_depth(frame)
    valid = np.isfinite(depth) & (depth > 0)
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise ValueError("depth has no valid pixels (all NaN/non-positive); cannot fit the table plane")
    if n_valid < 3:
        raise ValueError(f"depth has only {n_valid} valid pixels; cannot fit the table plane")

    t_wc = np.asarray(frame.camera_to_world, dtype=np.float64)
    if t_wc.shape != (4, 4):
        raise ValueError("camera_to_world must be a 4x4 matrix")
    t_pc = t_wc if config.frame == "world" else np.eye(4)  # camera -> plane frame
    origin = t_pc[:3, 3]
    k = frame.intrinsics

    def points_of(vv: np.ndarray, uu: np.ndarray) -> np.ndarray:
        uv = np.stack([uu, vv], axis=1).astype(np.float64)
        return transform_points(t_pc, backproject_pixels(uv, depth[vv, uu], k))

    flat = np.flatnonzero(valid)
    sub = flat[rng.integers(0, n_valid, size=min(config.max_points, n_valid))]  # with replacement: O(M)
    p = points_of(*np.unravel_index(sub, depth.shape))  # (M, 3)

    # Vectorised RANSAC hypotheses: (K, 3) normals from random triplets.
    tri = rng.integers(0, len(p), size=(config.iterations, 3))
    a, b, c = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
    n = np.cross(b - a, c - a)
    norm = np.linalg.norm(n, axis=1)
    ok = norm > 1e-12
    n = n / np.where(ok, norm, 1.0)[:, None]
    if config.expected_normal is not None:
        e = np.asarray(config.expected_normal, dtype=np.float64)
        e = e / np.linalg.norm(e)
        if config.frame == "camera":
            e = t_wc[:3, :3].T @ e  # world direction -> camera optical frame
        ok &= np.abs(n @ e) >= np.cos(np.radians(config.max_normal_angle_deg))
    if not ok.any():
        raise ValueError("no plane hypothesis satisfies the normal prior; check camera_to_world / expected_normal")
    d = -(n * a).sum(axis=1)
    dist = np.abs(p @ n.T + d)  # (M, K)
    score = np.where(ok, (dist < config.inlier_threshold).sum(axis=0), -1)
    best = int(np.argmax(score))
    normal, offset = n[best], float(d[best])

    # Least-squares refits on the valid pixels of a strided grid.
    s = config.stride
    gv, gu = np.nonzero(valid[::s, ::s])
    grid = points_of(gv * s, gu * s)
    rms = 0.0
    for _ in range(config.refit_iterations):
        inl = np.abs(grid @ normal + offset) < config.inlier_threshold
        if inl.sum() < 3:
            break
        normal, offset, rms = _plane_from_points(grid[inl])

    if normal @ origin + offset < 0:  # camera above the table
        normal, offset = -normal, -offset
    plane = TablePlane(normal=normal, offset=offset, inlier_mask=np.zeros(depth.shape, bool),
                       frame=config.frame, camera_to_world=t_wc.copy(), rms_error=rms)
    height = plane.height_image(frame)
    with np.errstate(invalid="ignore"):
        inlier_mask = valid & (np.abs(height) < config.inlier_threshold)
    plane.inlier_mask = inlier_mask
    frac = inlier_mask.sum() / n_valid
    if frac < config.min_inlier_fraction:
        raise ValueError(
            f"table plane has only {100 * frac:.1f}% inliers (< {100 * config.min_inlier_fraction:.0f}%); "
            "is the table in view?"
        )
    return plane
