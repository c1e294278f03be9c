"""Shared, ROS-free data types at the bottom of the data flow.

Conventions used everywhere in the stack:

* Images are numpy arrays in row-major (H, W[, C]) order; RGB is ``uint8`` (H, W, 3).
* Depth is ``float32`` (H, W) in metres with ``NaN`` for invalid pixels (REP 118
  32FC1 convention). 16UC1 millimetre depth is converted on entry
  (see :mod:`selfsup_perception.core.image_conversion`).
* Cameras use the optical frame: x right, y down, z forward.
* ``camera_to_world`` is the 4x4 homogeneous transform T_wc mapping points in
  the camera optical frame to the world (robot base) frame.
* Pixels are (u, v) = (column, row), with the centre of the top-left pixel at (0, 0).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics (no distortion) of an image of ``width`` x ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K."""
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    @classmethod
    def from_matrix(cls, k: np.ndarray, width: int, height: int) -> "CameraIntrinsics":
        k = np.asarray(k, dtype=np.float64).reshape(3, 3)
        return cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), int(width), int(height))

    @classmethod
    def from_fov(cls, width: int, height: int, vertical_fov_deg: float) -> "CameraIntrinsics":
        """Square pixels, principal point at the image centre."""
        f = 0.5 * height / math.tan(math.radians(vertical_fov_deg) / 2.0)
        return cls(f, f, (width - 1) / 2.0, (height - 1) / 2.0, int(width), int(height))

    def scaled(self, width: int, height: int) -> "CameraIntrinsics":
        """Intrinsics of the same camera resized to ``width`` x ``height``."""
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, width, height
        )


def quaternion_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """Rotation matrix of a (x, y, z, w) quaternion (normalised here)."""
    x, y, z, w = np.asarray(q_xyzw, dtype=np.float64) / np.linalg.norm(q_xyzw)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(r: np.ndarray) -> np.ndarray:
    """(x, y, z, w) quaternion of a rotation matrix, w >= 0."""
    r = np.asarray(r, dtype=np.float64)
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    if trace > 0:
        s = math.sqrt(trace + 1.0) * 2
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) * 2
        q = [0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif r[1, 1] > r[2, 2]:
        s = math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2]) * 2
        q = [(r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        s = math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1]) * 2
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s, (r[1, 0] - r[0, 1]) / s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


@dataclass(frozen=True)
class Pose:
    """A rigid transform: ``position`` (3,) in metres and ``orientation`` (x, y, z, w)."""

    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    orientation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)

    def as_matrix(self) -> np.ndarray:
        t = np.eye(4)
        t[:3, :3] = quaternion_to_matrix(np.array(self.orientation))
        t[:3, 3] = self.position
        return t

    @classmethod
    def from_matrix(cls, t: np.ndarray) -> "Pose":
        t = np.asarray(t, dtype=np.float64)
        q = matrix_to_quaternion(t[:3, :3])
        return cls(tuple(float(v) for v in t[:3, 3]), tuple(float(v) for v in q))


@dataclass
class RgbdFrame:
    """One synchronized RGB-D view with its camera model and pose."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres, NaN invalid
    intrinsics: CameraIntrinsics
    camera_to_world: np.ndarray = field(default_factory=lambda: np.eye(4))  # (4, 4) T_wc
    stamp: float = 0.0  # seconds
    frame_id: str = "camera_optical_frame"

    def validate(self) -> "RgbdFrame":
        """Raise ``ValueError`` with a clear message if the frame is inconsistent."""
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be (H, W, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        if self.rgb.shape[0] == 0 or self.rgb.shape[1] == 0:
            raise ValueError("rgb image is empty")
        if self.depth.shape != self.rgb.shape[:2]:
            raise ValueError(f"depth {self.depth.shape} does not match rgb {self.rgb.shape[:2]}")
        if self.depth.dtype != np.float32:
            raise ValueError(f"depth must be float32 metres, got {self.depth.dtype}")
        h, w = self.rgb.shape[:2]
        if (self.intrinsics.width, self.intrinsics.height) != (w, h):
            raise ValueError(
                f"intrinsics are for {self.intrinsics.width}x{self.intrinsics.height}, image is {w}x{h}"
            )
        if np.asarray(self.camera_to_world).shape != (4, 4):
            raise ValueError("camera_to_world must be a 4x4 matrix")
        return self

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb.shape[0], self.rgb.shape[1]


class InteractionKind(enum.IntEnum):
    PUSH = 0
    GRASP = 1


class InteractionOutcome(enum.IntEnum):
    UNKNOWN = 0
    EXECUTED = 1  # the arm executed the motion
    FAILED = 2  # planning or execution failed; the scene may be unchanged


@dataclass
class InteractionSample:
    """Before/after views of one interaction and what the robot did."""

    sample_id: str
    kind: InteractionKind
    before: RgbdFrame
    after: RgbdFrame
    action_pixel: tuple[float, float]  # (u, v) of the interaction start in the *before* image
    start_point: tuple[float, float, float]  # world frame, metres
    end_point: tuple[float, float, float]  # world frame, metres
    outcome: InteractionOutcome = InteractionOutcome.UNKNOWN
    message: str = ""
    # Evaluation only (simulation): never shown to the learner.
    ground_truth: Optional[dict] = None
    model_version: str = ""  # the model version whose hypothesis chose the action ("" = geometric candidate)
    scene_id: str = ""  # the scene/episode the interaction belongs to ("" = unknown)


@dataclass
class MaskLabel:
    """A self-supervised mask label made from one interaction.

    ``mask`` is (H, W) bool in the *before* image; ``is_negative`` means nothing
    moved and the action pixel is background (mask all False).
    """

    mask: np.ndarray
    is_negative: bool
    kept: bool  # False when a filter discarded the interaction
    reason: str = ""  # why it was kept/discarded
    labeler: str = ""
    stats: dict = field(default_factory=dict)
    # where the label came from (core/dataset/provenance.py): labeler name/version/config hash,
    # sample/scene id, the model version that chose the action, when it was made
    provenance: dict = field(default_factory=dict)
