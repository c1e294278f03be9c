"""Camera poses that look at a point: ``look_at`` and a jittered ring of views around a workspace (ROS-free).

Poses are camera-to-world (T_wc, 4x4) of an optical-frame camera (x right, y down, z forward),
as everywhere in :mod:`selfsup_perception.core`. The registration node moves the camera along
:func:`ring_camera_poses`; the simulator renders the same poses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """camera_to_world (4x4) of an optical-frame camera at ``eye`` looking at ``target``."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:  # looking straight down/up
        x = np.cross(z, np.array([1.0, 0.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    t = np.eye(4)
    t[:3, 0], t[:3, 1], t[:3, 2], t[:3, 3] = x, y, z, eye
    return t


@dataclass(frozen=True)
class MultiViewConfig:
    num_views: int = 16
    target: tuple[float, float, float] = (0.55, 0.0, 0.0)  # workspace centre on the table top
    radius: tuple[float, float] = (0.45, 0.6)  # horizontal distance eye-target, metres
    height: tuple[float, float] = (0.35, 0.55)  # eye height above the table, metres
    azimuth_deg: tuple[float, float] = (-120.0, 120.0)  # arc around the target; 0 = +x (facing the robot)
    azimuth_jitter_deg: float = 3.0
    target_jitter: float = 0.03  # metres, uniform in x and y
    order: str = "sequential"  # 'sequential' (a trajectory along the arc) or 'random'


def ring_camera_poses(config: MultiViewConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """``num_views`` camera-to-world poses (4x4) on a jittered arc, looking at the (jittered) target."""
    if config.num_views < 1:
        raise ValueError("num_views must be >= 1")
    if config.order not in ("sequential", "random"):
        raise ValueError(f"order must be 'sequential' or 'random', got {config.order!r}")
    lo, hi = config.azimuth_deg
    az = np.linspace(lo, hi, config.num_views) if config.num_views > 1 else np.array([0.5 * (lo + hi)])
    az = az + rng.uniform(-config.azimuth_jitter_deg, config.azimuth_jitter_deg, size=az.shape)
    if config.order == "random":
        az = rng.permutation(az)
    target = np.asarray(config.target, dtype=np.float64)
    poses = []
    for a in np.radians(az):
        r = rng.uniform(*config.radius)
        h = rng.uniform(*config.height)
        eye = target + np.array([r * math.cos(a), r * math.sin(a), h])
        tgt = target + np.array([*rng.uniform(-config.target_jitter, config.target_jitter, size=2), 0.0])
        poses.append(look_at(eye, tgt))
    return poses
