"""The simulated robot's frame tree, as a real robot publishes it on ``/tf`` and ``/tf_static``.

::

    world ── panda_link0 ── camera_link ── camera_color_frame ── camera_color_optical_frame
           (static: the     (dynamic: the   (static: the colour   (static: REP 103 body axes
            arm's base)      camera body     sensor's offset in    -> optical axes, z forward,
                             on its mount)   the body)             x right, y down)

The names follow the Panda (``panda_link0``) and a RealSense driver (``camera_link``,
``camera_color_frame``, ``camera_color_optical_frame``); every name is a parameter of the
simulator node. The simulator knows the optical frame's pose in the world (it renders
from it); :meth:`CameraRig.dynamic_transforms` turns that pose into the one moving link
(``base -> camera_link``) such that chaining the tree gives it back exactly.

Also :func:`orbit_camera_pose`, a camera path as a function of time (the simulator's
``camera_motion: orbit``), so a test can compute the ground-truth pose at any image stamp.
ROS-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from selfsup_perception.sim.tabletop import ARM_BASE_XYZ, look_at

#: Rotation of the optical frame in the camera body frame (REP 103): optical z = body x,
#: optical x = -body y, optical y = -body z.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _transform(rotation=None, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    t = np.eye(4)
    if rotation is not None:
        t[:3, :3] = rotation
    t[:3, 3] = translation
    return t


@dataclass(frozen=True)
class CameraRig:
    """Frame names and fixed transforms of the simulated robot and camera."""

    world_frame: str = "world"
    base_frame: str = "panda_link0"
    camera_link_frame: str = "camera_link"
    color_frame: str = "camera_color_frame"
    optical_frame: str = "camera_color_optical_frame"
    base_in_world: tuple = ARM_BASE_XYZ
    #: the colour sensor sits 15 mm to the left of the body origin (as on a RealSense D435)
    color_in_link: tuple = field(default=(0.0, 0.015, 0.0))

    def __post_init__(self) -> None:
        names = [self.world_frame, self.base_frame, self.camera_link_frame, self.color_frame, self.optical_frame]
        if any(not n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"frame names must be non-empty and distinct, got {names}")

    @property
    def T_world_base(self) -> np.ndarray:
        return _transform(translation=self.base_in_world)

    @property
    def T_link_optical(self) -> np.ndarray:
        return _transform(translation=self.color_in_link) @ _transform(R_BODY_OPTICAL)

    def static_transforms(self) -> list[tuple[str, str, np.ndarray]]:
        """(parent, child, T_parent_child) of the fixed links, for ``/tf_static``."""
        return [
            (self.world_frame, self.base_frame, self.T_world_base),
            (self.camera_link_frame, self.color_frame, _transform(translation=self.color_in_link)),
            (self.color_frame, self.optical_frame, _transform(R_BODY_OPTICAL)),
        ]

    def dynamic_transforms(self, T_world_optical: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
        """(parent, child, T_parent_child) of the moving link for a camera whose optical frame is at ``T_world_optical``."""
        T_world_optical = np.asarray(T_world_optical, dtype=np.float64)
        if T_world_optical.shape != (4, 4):
            raise ValueError(f"T_world_optical must be 4x4, got {T_world_optical.shape}")
        T_base_link = np.linalg.inv(self.T_world_base) @ T_world_optical @ np.linalg.inv(self.T_link_optical)
        return [(self.base_frame, self.camera_link_frame, T_base_link)]


def orbit_camera_pose(t_s: float, *, center=(0.55, 0.0, 0.0), radius: float = 0.45, height: float = 0.55,
                      period_s: float = 20.0) -> np.ndarray:
    """T_world_optical of a camera circling ``center`` at ``radius`` and ``height``, looking at it, at time ``t_s``.

    One turn every ``period_s`` seconds; the angle is ``2 pi t / period`` of the absolute time,
    so anyone with the stamp computes the same pose.
    """
    if not period_s > 0 or not radius > 0:
        raise ValueError("period_s and radius must be positive")
    angle = 2.0 * math.pi * math.fmod(t_s, period_s) / period_s
    c = np.asarray(center, dtype=np.float64)
    eye = c + np.array([radius * math.cos(angle), radius * math.sin(angle), height])
    return look_at(eye, c)
