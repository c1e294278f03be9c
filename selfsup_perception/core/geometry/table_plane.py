"""Table plane from one depth image: RANSAC on a subsample, least-squares refit on the inliers.

:func:`find_table_plane` works from any viewpoint (gravity from the camera pose when there is one,
otherwise the dominant supporting plane facing the camera) and returns a :class:`TablePlaneResult`
with a confidence, or the reason there is no plane; :func:`fit_table_plane` raises that reason.

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

from selfsup_perception.core.geometry.camera import backproject_pixels, depth_units_problem, transform_points
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
    # Gravity: 'pose' = the prior above (world +z through camera_to_world); 'none' = no pose is known,
    # search the dominant supporting plane from any viewpoint (see find_table_plane); 'auto' = 'none' when
    # camera_to_world is the identity (how frames without a pose arrive), else 'pose'.
    gravity: str = "auto"
    # Real depth noise grows with range (~1 cm at 1 m for structured light / stereo): the inlier threshold
    # is inlier_threshold + relative_inlier_threshold * depth. 0 keeps a fixed threshold.
    relative_inlier_threshold: float = 0.01
    min_valid_fraction: float = 0.02  # of the image; less valid depth -> no plane ("not enough depth")
    # 'Below most of the scene' (gravity 'none'): points between below_band_m[0] and below_band_m[1] under
    # a supporting plane are rare (its rim, a shadow of noise); a plane through object tops or a wall
    # behind has much of the scene there. More than max_below_fraction of the valid points -> rejected.
    below_band_m: tuple[float, float] = (0.03, 0.25)
    max_below_fraction: float = 0.1
    iterations_no_gravity: int = 200  # RANSAC hypotheses without a normal prior
    # A plane parallel to the dominant one, at least this much higher and with min_inlier_fraction of
    # the points, is a table standing on the floor: it is taken instead (None: keep the dominant plane).
    min_table_lift_m: Optional[float] = 0.25

    def __post_init__(self) -> None:
        if self.frame not in ("world", "camera"):
            raise ValueError(f"frame must be 'world' or 'camera', got {self.frame!r}")
        if self.max_points < 3 or self.iterations < 1:
            raise ValueError("max_points must be >= 3 and iterations >= 1")
        if not self.inlier_threshold > 0:
            raise ValueError(f"inlier_threshold must be positive, got {self.inlier_threshold}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.gravity not in ("auto", "pose", "none"):
            raise ValueError(f"gravity must be 'auto', 'pose' or 'none', got {self.gravity!r}")
        if self.relative_inlier_threshold < 0 or not 0 <= self.min_valid_fraction < 1:
            raise ValueError("relative_inlier_threshold must be >= 0 and min_valid_fraction in [0, 1)")


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


@dataclass
class TablePlaneResult:
    """Outcome of :func:`find_table_plane`: a plane, or None and the reason (a data condition, not an error).

    ``confidence`` in [0, 1]: the inlier fraction of the valid pixels (saturating at 0.5) times
    (1 - below fraction / max_below_fraction); 0 without a plane.
    """

    plane: Optional[TablePlane]
    reason: str
    confidence: float = 0.0
    gravity_from_pose: bool = False
    inlier_fraction: float = 0.0
    below_fraction: float = 0.0

    @property
    def found(self) -> bool:
        return self.plane is not None


def _plane_from_points(p: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Total-least-squares plane of points (N, 3): normal = smallest right singular vector of the centred points,
    i.e. the eigenvector of the smallest eigenvalue of their 3x3 scatter matrix (computed with elementwise sums:
    an SVD of the (N, 3) matrix starts OpenBLAS worker threads, which then spin and double the CPU time)."""
    c = p.mean(axis=0)
    q = p - c
    scatter = np.array([[float((q[:, i] * q[:, j]).sum()) for j in range(3)] for i in range(3)])
    evals, evecs = np.linalg.eigh(scatter)  # ascending
    n = evecs[:, 0]
    return n, float(-(n[0] * c[0] + n[1] * c[1] + n[2] * c[2])), float(np.sqrt(max(evals[0], 0.0) / len(p)))


def _uses_pose(frame: RgbdFrame, config: TablePlaneConfig) -> bool:
    if config.expected_normal is None or config.gravity == "none":
        return False
    if config.gravity == "pose":
        return True
    return not np.allclose(np.asarray(frame.camera_to_world, dtype=np.float64), np.eye(4))


def find_table_plane(
    frame: RgbdFrame, config: Optional[TablePlaneConfig] = None, rng: Optional[np.random.Generator] = None
) -> TablePlaneResult:
    """Fit the table plane of ``frame``'s depth, or say why there is none.

    1. Valid pixels (finite depth > 0) are back-projected (camera frame) and, for
       ``frame='world'``, moved to the world with ``camera_to_world``.
    2. RANSAC on a random subsample of ``max_points`` 3-point hypotheses, vectorised; an inlier is
       within ``inlier_threshold + relative_inlier_threshold * depth`` of the plane.

       * Gravity from the pose (``gravity`` 'pose', or 'auto' with a non-identity pose): a hypothesis
         whose normal is farther than ``max_normal_angle_deg`` from ``expected_normal`` is rejected;
         score = number of inliers.
       * No pose ('none', or 'auto' with the identity): any viewpoint. Hypotheses are oriented towards
         the camera and must face it (normal within 85 deg of the reversed optical axis, camera at
         least 5 cm away) and not be seen from below (normal's image-down component <= 0.3,
         i.e. the camera is not upside down); score = inliers - 3 x the points in ``below_band_m`` under
         the plane, so the largest plane *below most of the scene* wins over one through object tops
         or a wall behind the table.
    3. Least-squares refit (SVD) on the inliers among all valid pixels (every ``stride``-th pixel),
       repeated ``refit_iterations`` times.
    4. Orientation: the camera centre gets a positive height.
    5. Table on a floor: when a plane parallel to it (within 10 deg), at least ``min_table_lift_m``
       higher and with ``min_inlier_fraction`` of the points exists, the highest such plane is the table
       (from standing height the floor around a small table can be the largest plane in view).

    Raises ``ValueError`` only for programming errors (depth/rgb/intrinsics sizes, non-float depth);
    missing or too little depth, millimetres as float, no plane with ``min_inlier_fraction`` support,
    or too much of the scene below the plane come back as a result with the reason.
    Deterministic given ``rng`` (default ``np.random.default_rng(0)``).
    """
    config = config or TablePlaneConfig()
    rng = rng if rng is not None else np.random.default_rng(0)
    if frame.depth is None:
        return TablePlaneResult(None, "no depth image: the table plane needs depth")
    depth = _checked_depth(frame)
    problem = depth_units_problem(depth)
    if problem is not None:
        return TablePlaneResult(None, problem)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0)
    n_valid = int(valid.sum())
    if n_valid < max(3, config.min_valid_fraction * depth.size):
        return TablePlaneResult(None, f"not enough depth: {n_valid} valid pixels ({100 * n_valid / depth.size:.1f} % "
                                      f"< {100 * config.min_valid_fraction:.0f} % of the image)")

    t_wc = np.asarray(frame.camera_to_world, dtype=np.float64)
    if t_wc.shape != (4, 4):
        raise ValueError("camera_to_world must be a 4x4 matrix")
    use_pose = _uses_pose(frame, config)
    t_pc = t_wc if config.frame == "world" else np.eye(4)  # camera -> plane frame
    origin = t_pc[:3, 3]
    k = frame.intrinsics

    def points_of(vv: np.ndarray, uu: np.ndarray) -> np.ndarray:
        uv = np.stack([uu, vv], axis=1).astype(np.float64)
        return transform_points(t_pc, backproject_pixels(uv, depth[vv, uu], k))

    flat = np.flatnonzero(valid)
    sub = flat[rng.integers(0, n_valid, size=min(config.max_points, n_valid))]  # with replacement: O(M)
    sv, su = np.unravel_index(sub, depth.shape)
    p = points_of(sv, su)  # (M, 3)
    thr = config.inlier_threshold + config.relative_inlier_threshold * depth[sv, su].astype(np.float64)  # (M,)

    # Vectorised RANSAC hypotheses: (K, 3) normals from random triplets.
    iterations = config.iterations if use_pose else max(config.iterations, config.iterations_no_gravity)
    tri = rng.integers(0, len(p), size=(iterations, 3))
    a, b, c = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
    n = np.cross(b - a, c - a)
    norm = np.linalg.norm(n, axis=1)
    ok = norm > 1e-12
    n = n / np.where(ok, norm, 1.0)[:, None]
    d = -(n * a).sum(axis=1)
    if use_pose:
        e = np.asarray(config.expected_normal, dtype=np.float64)
        e = e / np.linalg.norm(e)
        if config.frame == "camera":
            e = t_wc[:3, :3].T @ e  # world direction -> camera optical frame
        ok &= np.abs(n @ e) >= np.cos(np.radians(config.max_normal_angle_deg))
        if not ok.any():
            return TablePlaneResult(None, "no plane hypothesis satisfies the normal prior; check camera_to_world / "
                                          "expected_normal", gravity_from_pose=True)
    else:
        # Orient every hypothesis towards the camera centre, then express it in the camera frame.
        flip = np.where(n @ origin + d < 0, -1.0, 1.0)
        n, d = n * flip[:, None], d * flip
        n_cam = n @ t_pc[:3, :3]  # rows: R^T n
        d_cam = d + n @ t_pc[:3, 3]  # camera distance to the plane
        ok &= d_cam > 0.05  # the camera is not on the plane
        ok &= -n_cam[:, 2] >= np.cos(np.radians(85.0))  # faces the camera: within 85 deg of the optical axis
        ok &= n_cam[:, 1] <= 0.3  # not seen from below (image down = +y): the camera is not upside down
    # (M, K) signed distances, elementwise: the matmul p @ n.T (a transposed float32 operand) took ~1 ms and
    # started OpenBLAS worker threads, whose spinning afterwards doubled the CPU time of the whole labeler.
    p32, n32 = p.astype(np.float32), n.astype(np.float32)
    dist = p32[:, 0:1] * n32[:, 0] + p32[:, 1:2] * n32[:, 1] + p32[:, 2:3] * n32[:, 2] + d.astype(np.float32)
    inl = np.abs(dist) < thr.astype(np.float32)[:, None]
    score = inl.sum(axis=0).astype(np.float64)
    if not use_pose:
        lo, hi = config.below_band_m
        below = (dist < -lo) & (dist > -hi)
        score -= 3.0 * below.sum(axis=0)
    score = np.where(ok, score, -np.inf)
    best = int(np.argmax(score))
    if not np.isfinite(score[best]):
        return TablePlaneResult(None, "no plane hypothesis faces the camera from above")
    normal, offset = n[best], float(d[best])

    # Least-squares refits on the valid pixels of a strided grid.
    s = config.stride
    gv, gu = np.nonzero(valid[::s, ::s])
    gv, gu = gv * s, gu * s
    grid = points_of(gv, gu)
    gthr = config.inlier_threshold + config.relative_inlier_threshold * depth[gv, gu].astype(np.float64)
    rms = 0.0
    for _ in range(config.refit_iterations):
        g_inl = np.abs(grid @ normal + offset) < gthr
        if g_inl.sum() < 3:
            break
        normal, offset, rms = _plane_from_points(grid[g_inl])

    if normal @ origin + offset < 0:  # camera above the table
        normal, offset = -normal, -offset
    lifted = _higher_parallel_plane(grid, gthr, normal, offset, origin, config)
    floor = None
    if lifted is not None:
        floor = TablePlane(normal=normal, offset=offset, inlier_mask=np.zeros((1, 1), bool), frame=config.frame,
                           camera_to_world=t_wc.copy())
        normal, offset, rms = lifted
    plane = TablePlane(normal=normal, offset=offset, inlier_mask=np.zeros(depth.shape, bool),
                       frame=config.frame, camera_to_world=t_wc.copy(), rms_error=rms)
    height = plane.height_image(frame)
    with np.errstate(invalid="ignore"):
        tol = config.inlier_threshold + config.relative_inlier_threshold * depth
        inlier_mask = valid & (np.abs(height) < tol)
        lo, hi = config.below_band_m
        below = (height < -lo) & (height > -hi)
        if floor is not None:  # the floor the table stands on is below it by construction
            below &= ~(np.abs(floor.height_image(frame)) < tol)
        below_frac = float(below.sum() / n_valid)
    plane.inlier_mask = inlier_mask
    frac = float(inlier_mask.sum() / n_valid)
    confidence = min(1.0, frac / 0.5) * max(0.0, 1.0 - below_frac / max(config.max_below_fraction, 1e-9))
    result = TablePlaneResult(plane, "found", confidence, use_pose, frac, below_frac)
    if frac < config.min_inlier_fraction:
        result.plane, result.confidence = None, 0.0
        result.reason = (f"no table: the best plane has only {100 * frac:.1f}% inliers "
                         f"(< {100 * config.min_inlier_fraction:.0f}%); is the table in view?")
    elif not use_pose and below_frac > config.max_below_fraction:
        result.plane, result.confidence = None, 0.0
        result.reason = (f"no table: {100 * below_frac:.0f}% of the scene lies just below the best plane "
                         f"(> {100 * config.max_below_fraction:.0f}%); not a supporting surface")
    return result


def _higher_parallel_plane(points: np.ndarray, thr: np.ndarray, normal: np.ndarray, offset: float,
                           origin: np.ndarray, config: TablePlaneConfig) -> Optional[tuple[np.ndarray, float, float]]:
    """A table standing on the dominant plane: the highest plane parallel to it, at least
    ``min_table_lift_m`` above it (between it and the camera), holding at least
    ``min_inlier_fraction`` of the points and with at most ``max_below_fraction`` of them just below
    it (other than the floor); None if there is none.

    Seen from standing height, the floor around a small table can be the largest plane in view;
    the table is the supporting surface the objects stand on, so it wins over the floor.
    """
    if config.min_table_lift_m is None:
        return None
    h = points @ normal + offset  # (N,) heights above the dominant plane
    camera_h = float(normal @ origin + offset)
    lo = config.min_table_lift_m
    sel = (h > lo) & (h < camera_h - 0.05)
    if sel.sum() < config.min_inlier_fraction * len(points):
        return None
    bins = np.arange(lo, max(camera_h, lo + 0.02) + 0.02, 0.02)
    counts, edges = np.histogram(h[sel], bins=bins)
    # 3-bin (6 cm) windows, highest first
    window = np.convolve(counts, np.ones(3), mode="same")
    need = config.min_inlier_fraction * len(points)
    for i in np.flatnonzero(window >= need)[::-1]:
        centre = 0.5 * (edges[i] + edges[i + 1])
        near = np.abs(h - centre) < 0.04
        if near.sum() < 3:
            continue
        n2, d2, rms = _plane_from_points(points[near])
        for _ in range(config.refit_iterations):
            inl = np.abs(points @ n2 + d2) < thr
            if inl.sum() < 3:
                break
            n2, d2, rms = _plane_from_points(points[inl])
        h2 = points @ n2 + d2
        inl = np.abs(h2) < thr
        if n2 @ origin + d2 < 0:
            h2 = -h2
        # not a plane through object tops: little of the scene just below it (the floor aside)
        below = (h2 < -config.below_band_m[0]) & (h2 > -config.below_band_m[1]) & ~(np.abs(h) < thr)
        if inl.sum() >= need and abs(float(n2 @ normal)) > np.cos(np.radians(10.0)) \
                and below.mean() <= config.max_below_fraction:
            if n2 @ origin + d2 < 0:
                n2, d2 = -n2, -d2
            return n2, d2, rms
    return None


def fit_table_plane(
    frame: RgbdFrame, config: Optional[TablePlaneConfig] = None, rng: Optional[np.random.Generator] = None
) -> TablePlane:
    """The table plane of ``frame`` (:func:`find_table_plane`); raises ``ValueError`` with the reason when
    there is none. For callers that cannot go on without a table (planners); labelers and baselines use
    :func:`find_table_plane` and skip the sample instead."""
    result = find_table_plane(frame, config, rng)
    if result.plane is None:
        raise ValueError(result.reason)
    return result.plane
