"""Pinhole camera geometry on numpy arrays (ROS-free).

Conventions as in :mod:`selfsup_perception.core.types`: optical frame, depth in
metres with NaN for invalid pixels, ``camera_to_world`` = T_wc (4x4).
"""

from __future__ import annotations

import numpy as np

from selfsup_perception.core.types import CameraIntrinsics


def sanitize_depth(depth: np.ndarray) -> np.ndarray:
    """float32 metres with NaN for invalid pixels, from metres (float) or millimetres (uint16, 0 invalid).

    Non-finite and non-positive values become NaN.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be a 2-D image, got shape {depth.shape}")
    if depth.dtype == np.uint16:
        out = depth.astype(np.float32) / 1000.0
        out[depth == 0] = np.nan
        return out
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth must be uint16 millimetres or float metres, got {depth.dtype}")
    out = depth.astype(np.float32, copy=True)
    out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out


def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) pixel coordinate images, each (H, W) float64."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return u, v


def backproject(depth: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Points in the camera frame, (H, W, 3) float64; NaN where depth is invalid."""
    h, w = depth.shape
    if (w, h) != (intrinsics.width, intrinsics.height):
        raise ValueError(f"depth is {w}x{h} but intrinsics are for {intrinsics.width}x{intrinsics.height}")
    u, v = pixel_grid(h, w)
    z = depth.astype(np.float64)
    x = (u - intrinsics.cx) / intrinsics.fx * z
    y = (v - intrinsics.cy) / intrinsics.fy * z
    return np.stack([x, y, z], axis=-1)


def backproject_pixels(uv: np.ndarray, depth_values: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Camera-frame points (N, 3) of pixels ``uv`` (N, 2) at depths (N,)."""
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    z = np.asarray(depth_values, dtype=np.float64).reshape(-1)
    x = (uv[:, 0] - intrinsics.cx) / intrinsics.fx * z
    y = (uv[:, 1] - intrinsics.cy) / intrinsics.fy * z
    return np.stack([x, y, z], axis=-1)


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to points (..., 3)."""
    t = np.asarray(transform, dtype=np.float64)
    return points @ t[:3, :3].T + t[:3, 3]


def project(points_camera: np.ndarray, intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (..., 2) and depth z (...) of camera-frame points (..., 3).

    Points at or behind the camera (z <= 0) get NaN pixel coordinates.
    """
    z = points_camera[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        safe_z = np.where(z > 0, z, np.nan)
        u = intrinsics.fx * points_camera[..., 0] / safe_z + intrinsics.cx
        v = intrinsics.fy * points_camera[..., 1] / safe_z + intrinsics.cy
    return np.stack([u, v], axis=-1), z


def depth_to_world_points(depth: np.ndarray, intrinsics: CameraIntrinsics, camera_to_world: np.ndarray) -> np.ndarray:
    """World-frame points (H, W, 3) of every pixel; NaN where depth is invalid."""
    return transform_points(camera_to_world, backproject(sanitize_depth(depth), intrinsics))


# Real sensors and SLAM trajectories give rotations that are orthonormal only to ~1e-4 (float32 storage,
# quaternion rounding, drift correction); a public RGB-D sequence deviates by 1.6e-4 (det 0.9998).
ROTATION_TOLERANCE = 1e-2  # max |R^T R - I| (element-wise) that is re-orthonormalised instead of rejected
MAX_PLAUSIBLE_DEPTH_M = 20.0  # a valid median beyond this is not a tabletop in metres


def rotation_deviation(r: np.ndarray) -> float:
    """max |R^T R - I| element-wise: 0 for a rotation, ~ the size of the error otherwise."""
    r = np.asarray(r, dtype=np.float64)
    return float(np.abs(r.T @ r - np.eye(3)).max())


def as_rigid_transform(t: np.ndarray, name: str = "pose", tolerance: float = ROTATION_TOLERANCE) -> np.ndarray:
    """A checked copy of a 4x4 rigid transform whose rotation is re-orthonormalised.

    Rotations with ``rotation_deviation`` <= ``tolerance`` are replaced by the nearest rotation
    (SVD: R = U V^T, the orthogonal Procrustes solution, with det +1). Beyond the tolerance, or with a
    reflection (det < 0), non-finite entries or a last row other than [0, 0, 0, 1], ``ValueError``
    says which and by how much.
    """
    t = np.array(t, dtype=np.float64)
    if t.shape != (4, 4):
        raise ValueError(f"{name} must be a 4x4 homogeneous transform, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"{name} contains non-finite values")
    if not np.allclose(t[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"{name} last row must be [0, 0, 0, 1], got {t[3]}")
    r = t[:3, :3]
    dev = rotation_deviation(r)
    det = float(np.linalg.det(r))
    if det <= 0:
        raise ValueError(f"{name} rotation part has determinant {det:.4f} <= 0 (a reflection, not a rotation)")
    if dev > tolerance:
        raise ValueError(f"{name} rotation part is not orthonormal: max |R^T R - I| = {dev:.2e} > tolerance "
                         f"{tolerance:.0e} (determinant {det:.4f})")
    u, _, vt = np.linalg.svd(r)
    t[:3, :3] = u @ vt
    return t


def depth_units_problem(depth: np.ndarray) -> "str | None":
    """Why float depth does not look like metres (None if it does): a valid median beyond
    ``MAX_PLAUSIBLE_DEPTH_M`` is almost surely millimetres stored as float."""
    depth = np.asarray(depth)
    if not np.issubdtype(depth.dtype, np.floating):
        return None
    step = max(int(np.sqrt(depth.size / 20000)), 1) if depth.ndim == 2 else 1
    sub = depth[::step, ::step] if depth.ndim == 2 else depth
    with np.errstate(invalid="ignore"):
        valid = sub[np.isfinite(sub) & (sub > 0)]
    if valid.size == 0:
        return None
    med = float(np.median(valid))
    if med > MAX_PLAUSIBLE_DEPTH_M:
        return (f"depth looks like millimetres: the valid median is {med:.1f} m (> {MAX_PLAUSIBLE_DEPTH_M:.0f} m); "
                "float depth must be metres (divide by 1000)")
    return None
