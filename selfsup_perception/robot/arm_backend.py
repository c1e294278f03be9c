"""The one interface through which the stack moves an arm: push, grasp, get out of view.

Two backends implement it:

* the simulated arm (``sim_backend.py``), which forwards to the pybullet tabletop
  simulator's ``execute_push(start, end) -> (ok, message)`` /
  ``execute_grasp(pick, place) -> (ok, message)``;
* a real arm through MoveIt 2's Python API (``moveit_backend.py``).

Conventions (shared with :mod:`selfsup_perception.core.types`):

* All points are ``(x, y, z)`` in metres in the *world* frame, which is the robot's
  planning/base frame (``RobotConfig.base_frame``); z points up.
* A push or grasp runs at a fixed height above the table plane:
  ``z = table_height + contact_height`` (and ``+ approach_height`` for the hover
  pose). The z of the requested points is checked (finite, inside the workspace)
  but does not set the contact height: depth back-projection gives the top of an
  object, not the height a finger should slide at. This matches the simulator,
  whose ``execute_push`` ignores z and pushes at ``contact_height`` above the table.
* Backends never let an exception escape a motion call: every failure comes back
  as a :class:`MotionResult` with one of :data:`ERROR_CODES`.

This module is ROS-free and imports nothing heavier than numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np

# ------------------------------------------------------------------ error codes
OK = ""
UNREACHABLE = "UNREACHABLE"
PLANNING_FAILED = "PLANNING_FAILED"
EXECUTION_FAILED = "EXECUTION_FAILED"
TIMEOUT = "TIMEOUT"
INVALID_GOAL = "INVALID_GOAL"
ERROR_CODES: frozenset[str] = frozenset({OK, UNREACHABLE, PLANNING_FAILED, EXECUTION_FAILED, TIMEOUT, INVALID_GOAL})


@dataclass(frozen=True)
class MotionResult:
    """Outcome of one arm motion.

    ``success`` is True exactly when ``error_code`` is ``''``. ``message`` is a
    human-readable sentence for logs and service responses; ``duration_s`` is the
    wall time the call took (planning + execution).
    """

    success: bool
    message: str
    error_code: str = OK
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.error_code not in ERROR_CODES:
            raise ValueError(f"unknown error_code {self.error_code!r}; expected one of {sorted(ERROR_CODES)}")
        if self.success != (self.error_code == OK):
            raise ValueError(
                f"success={self.success} contradicts error_code={self.error_code!r} "
                "(success must be True exactly when error_code is '')"
            )
        if not (math.isfinite(self.duration_s) and self.duration_s >= 0.0):
            raise ValueError(f"duration_s must be a finite non-negative number, got {self.duration_s}")

    @classmethod
    def ok(cls, message: str = "ok", duration_s: float = 0.0) -> "MotionResult":
        return cls(True, message, OK, float(duration_s))

    @classmethod
    def failure(cls, error_code: str, message: str, duration_s: float = 0.0) -> "MotionResult":
        if error_code == OK:
            raise ValueError("a failure needs a non-empty error_code")
        return cls(False, message, error_code, float(duration_s))

    @classmethod
    def from_status(cls, ok: bool, message: str, duration_s: float = 0.0) -> "MotionResult":
        """Wrap an ``(ok, message)`` pair such as the simulator's ``execute_push`` returns.

        A failed call whose message says "unreachable" maps to ``UNREACHABLE``;
        "timeout"/"timed out" to ``TIMEOUT``; any other failure to ``EXECUTION_FAILED``.
        """
        if ok:
            return cls.ok(message, duration_s)
        low = message.lower()
        if "unreachable" in low:
            code = UNREACHABLE
        elif "timeout" in low or "timed out" in low:
            code = TIMEOUT
        else:
            code = EXECUTION_FAILED
        return cls.failure(code, message, duration_s)


# ------------------------------------------------------------------- workspace
@dataclass(frozen=True)
class Workspace:
    """Axis-aligned box (metres, world/base frame) that every motion goal must lie in.

    Defaults are the simulated tabletop's workspace (x in [0.35, 0.75],
    y in [-0.25, 0.25], table top at z = 0) with a z band for points on or above
    the table.
    """

    x: tuple[float, float] = (0.35, 0.75)
    y: tuple[float, float] = (-0.25, 0.25)
    z: tuple[float, float] = (-0.05, 0.5)

    def __post_init__(self) -> None:
        for axis, (lo, hi) in (("x", self.x), ("y", self.y), ("z", self.z)):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"workspace {axis} bounds must be finite with lo < hi, got ({lo}, {hi})")

    def contains(self, xyz: Sequence[float]) -> bool:
        p = np.asarray(xyz, dtype=np.float64)
        return bool(
            self.x[0] <= p[0] <= self.x[1] and self.y[0] <= p[1] <= self.y[1] and self.z[0] <= p[2] <= self.z[1]
        )


class InvalidGoalError(ValueError):
    """A motion goal that no backend should try: not 3 finite numbers, or outside the workspace."""

    error_code = INVALID_GOAL


def validate_point(xyz: Sequence[float], workspace: Optional[Workspace] = None, name: str = "goal") -> np.ndarray:
    """Return ``xyz`` as a (3,) float64 array, or raise :class:`InvalidGoalError`.

    Rejects anything that is not exactly 3 numbers, any NaN/inf component, and,
    when ``workspace`` is given, points outside it (bounds inclusive).
    """
    try:
        p = np.asarray(xyz, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidGoalError(f"{name} {xyz!r} is not a sequence of 3 numbers") from exc
    if p.shape != (3,):
        raise InvalidGoalError(f"{name} must have 3 components (x, y, z), got {p.size}")
    if not np.all(np.isfinite(p)):
        raise InvalidGoalError(f"{name} {p.tolist()} has a NaN or infinite component")
    if workspace is not None and not workspace.contains(p):
        raise InvalidGoalError(
            f"{name} {np.round(p, 3).tolist()} is outside the workspace "
            f"x={workspace.x} y={workspace.y} z={workspace.z}"
        )
    return p


def check_points(workspace: Optional[Workspace], **points: Sequence[float]) -> Optional[MotionResult]:
    """Validate named points; return an ``INVALID_GOAL`` result for the first bad one, else ``None``.

    Convenience for backends: ``if (bad := check_points(ws, start=s, end=e)): return bad``.
    """
    for name, xyz in points.items():
        try:
            validate_point(xyz, workspace, name=name)
        except InvalidGoalError as exc:
            return MotionResult.failure(INVALID_GOAL, str(exc))
    return None


# ------------------------------------------------------------------- interface
@runtime_checkable
class ArmBackend(Protocol):
    """What the interaction node needs from an arm, simulated or real.

    Height arguments left as ``None`` take the backend's configured values
    (``RobotConfig.contact_height`` etc.); ``timeout_s=None`` takes the backend's
    default motion timeout. Implementations return a :class:`MotionResult` for every
    outcome, including bad input (``INVALID_GOAL``), and never raise from these calls.
    """

    name: str

    def execute_push(
        self,
        start_xyz: Sequence[float],
        end_xyz: Sequence[float],
        *,
        approach_height: Optional[float] = None,
        contact_height: Optional[float] = None,
        timeout_s: Optional[float] = None,
    ) -> MotionResult:
        """Push in a straight line from ``start_xyz`` to ``end_xyz`` at ``contact_height`` above the table.

        Hover ``approach_height`` above the start, descend, push, lift, and leave the
        arm out of the camera's view.
        """
        ...

    def execute_grasp(
        self,
        pick_xyz: Sequence[float],
        place_xyz: Sequence[float],
        *,
        grasp_height: Optional[float] = None,
        approach_height: Optional[float] = None,
        timeout_s: Optional[float] = None,
    ) -> MotionResult:
        """Top-down grasp at ``pick_xyz``, carry and release above ``place_xyz``, then move out of view."""
        ...

    def move_out_of_view(self, *, timeout_s: Optional[float] = None) -> MotionResult:
        """Move the arm(s) to a configuration where they do not occlude the camera."""
        ...

    def is_reachable(self, xyz: Sequence[float]) -> bool:
        """Cheap check that some arm can reach ``xyz`` (False for invalid points, never raises)."""
        ...
