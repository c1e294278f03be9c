"""Typed description of a robot's arms for the arm backends, loaded from YAML (``config/robots/*.yaml``).

One :class:`RobotConfig` per robot: the planning frame, one :class:`ArmConfig` per
arm (a Panda has one, a PR2 two), the two planners a push uses (a free-space one
for getting above the start, a straight-line one for contact moves), the
workspace, and the push/grasp heights.

Arm choice (:meth:`RobotConfig.choose_arm`) uses a sphere model of each arm's reach:
an arm can reach a point when ``|p - shoulder| <= reach_radius``, and among the
arms that reach all requested points the one whose shoulder is nearest (largest
distance over the points, smallest wins; ties keep YAML order) is chosen. This is a
cheap prefilter; MoveIt's IK still decides (the MoveIt backend falls back to the
next candidate arm when planning to the first fails).

ROS-free: needs only PyYAML and numpy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from selfsup_perception.robot.arm_backend import Workspace

#: Top-down orientation (x, y, z, w) for a tool whose approach axis is its link's +z
#: (Panda ``panda_hand``): a rotation of pi about the base x axis maps +z to -z.
TOOL_DOWN_Z_AXIS = (1.0, 0.0, 0.0, 0.0)
#: Top-down orientation for a tool whose approach axis is its link's +x (PR2
#: ``*_wrist_roll_link`` / ``*_gripper_tool_frame``): a rotation of +pi/2 about y maps +x to -z.
TOOL_DOWN_X_AXIS = (0.0, math.sqrt(0.5), 0.0, math.sqrt(0.5))


def _floats(values: Sequence[float], n: int, what: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{what} must be {n} finite numbers, got {list(values)!r}")
    return out


@dataclass(frozen=True)
class MotionPlannerConfig:
    """One MoveIt planning setup, turned into ``moveit.planning.PlanRequestParameters``.

    ``pipeline``/``planner_id`` follow the names in the moveit_py config
    (``config/robots/moveit_py_panda.yaml``): e.g. ``ompl``/``RRTConnectkConfigDefault``
    or ``pilz_industrial_motion_planner``/``PTP`` for free moves and
    ``pilz_industrial_motion_planner``/``LIN`` for straight lines (moveit_py has no
    Cartesian-path call, so LIN is how a straight push is planned).

    ``parameter_namespace`` is the moveit_py node-parameter namespace the backend
    passes to ``PlanRequestParameters(moveit, namespace)`` (e.g. ``pilz_lin`` reads
    ``pilz_lin.plan_request_params.*``; ``""`` reads ``plan_request_params.*``); the
    fields above then overwrite what was loaded, so the YAML here is the source of truth.
    """

    pipeline: str
    planner_id: str
    max_velocity_scaling_factor: float = 0.1
    max_acceleration_scaling_factor: float = 0.1
    planning_time: float = 1.0
    planning_attempts: int = 1
    parameter_namespace: str = ""

    def __post_init__(self) -> None:
        if not self.pipeline or not self.planner_id:
            raise ValueError("planner pipeline and planner_id must be non-empty")
        for name in ("max_velocity_scaling_factor", "max_acceleration_scaling_factor"):
            v = getattr(self, name)
            if not (0.0 < v <= 1.0):
                raise ValueError(f"{name} must be in (0, 1], got {v}")
        if not (self.planning_time > 0.0):
            raise ValueError(f"planning_time must be positive, got {self.planning_time}")
        if self.planning_attempts < 1:
            raise ValueError(f"planning_attempts must be >= 1, got {self.planning_attempts}")


@dataclass(frozen=True)
class ArmConfig:
    """One arm: its MoveIt planning group, tool link, reach model and out-of-view pose.

    The contact point (finger tips) sits ``tcp_offset`` metres along ``tool_axis``
    (a unit vector in ``end_effector_link``'s frame) from the link origin, so the
    pose goal for a contact point ``c`` with tool orientation ``R`` is
    ``origin = c - R @ (tcp_offset * tool_axis)``.

    Exactly one of ``out_of_view_configuration`` (a named SRDF state, e.g. Panda's
    ``ready``) and ``out_of_view_joints`` (joint name -> radians) must be set.
    """

    name: str
    planning_group: str
    end_effector_link: str
    shoulder_xyz: tuple[float, float, float]
    reach_radius: float
    tool_orientation: tuple[float, float, float, float] = TOOL_DOWN_Z_AXIS
    tool_axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    tcp_offset: float = 0.0
    out_of_view_configuration: str = ""
    out_of_view_joints: dict[str, float] = field(default_factory=dict)
    gripper_group: str = ""
    gripper_open_configuration: str = "open"
    gripper_closed_configuration: str = "close"
    controllers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.planning_group or not self.end_effector_link:
            raise ValueError("arm name, planning_group and end_effector_link must be non-empty")
        object.__setattr__(self, "shoulder_xyz", _floats(self.shoulder_xyz, 3, f"arm {self.name} shoulder_xyz"))
        q = np.array(_floats(self.tool_orientation, 4, f"arm {self.name} tool_orientation"))
        if np.linalg.norm(q) < 1e-9:
            raise ValueError(f"arm {self.name} tool_orientation is a zero quaternion")
        object.__setattr__(self, "tool_orientation", tuple(float(v) for v in q / np.linalg.norm(q)))
        a = np.array(_floats(self.tool_axis, 3, f"arm {self.name} tool_axis"))
        if np.linalg.norm(a) < 1e-9:
            raise ValueError(f"arm {self.name} tool_axis is a zero vector")
        object.__setattr__(self, "tool_axis", tuple(float(v) for v in a / np.linalg.norm(a)))
        if not (self.reach_radius > 0.0):
            raise ValueError(f"arm {self.name} reach_radius must be positive, got {self.reach_radius}")
        if not (math.isfinite(self.tcp_offset) and self.tcp_offset >= 0.0):
            raise ValueError(f"arm {self.name} tcp_offset must be >= 0, got {self.tcp_offset}")
        if bool(self.out_of_view_configuration) == bool(self.out_of_view_joints):
            raise ValueError(
                f"arm {self.name}: set exactly one of out_of_view_configuration (named state) "
                "and out_of_view_joints (joint name -> radians)"
            )
        object.__setattr__(self, "out_of_view_joints", {str(k): float(v) for k, v in self.out_of_view_joints.items()})
        object.__setattr__(self, "controllers", tuple(str(c) for c in self.controllers))

    def shoulder_distance(self, xyz: Sequence[float]) -> float:
        return float(np.linalg.norm(np.asarray(xyz, dtype=np.float64) - np.asarray(self.shoulder_xyz)))

    def reaches(self, xyz: Sequence[float]) -> bool:
        """Sphere reach model: ``|xyz - shoulder_xyz| <= reach_radius``."""
        return self.shoulder_distance(xyz) <= self.reach_radius


@dataclass(frozen=True)
class RobotConfig:
    """Everything the arm backends need to know about one robot.

    Heights are metres: the push slides at ``table_height + contact_height`` (world z),
    hovers ``approach_height`` above that; a grasp closes at ``table_height +
    grasp_height`` and releases ``place_height`` above the table.
    ``motion_timeout_s`` bounds a whole push or grasp (planning + execution).
    """

    name: str
    base_frame: str
    arms: tuple[ArmConfig, ...]
    free_planner: MotionPlannerConfig = field(
        default_factory=lambda: MotionPlannerConfig("ompl", "RRTConnectkConfigDefault", 0.2, 0.2, 2.0, 1, "ompl_rrtc")
    )
    linear_planner: MotionPlannerConfig = field(
        default_factory=lambda: MotionPlannerConfig("pilz_industrial_motion_planner", "LIN", 0.05, 0.05, 1.0, 1, "pilz_lin")
    )
    workspace: Workspace = field(default_factory=Workspace)
    table_height: float = 0.0
    contact_height: float = 0.02
    approach_height: float = 0.15
    grasp_height: float = 0.02
    place_height: float = 0.07
    motion_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.name or not self.base_frame:
            raise ValueError("robot name and base_frame must be non-empty")
        arms = tuple(self.arms)
        if not arms:
            raise ValueError(f"robot {self.name} needs at least one arm")
        names = [a.name for a in arms]
        if len(set(names)) != len(names):
            raise ValueError(f"robot {self.name} has duplicate arm names {names}")
        object.__setattr__(self, "arms", arms)
        for key in ("table_height", "contact_height", "approach_height", "grasp_height", "place_height"):
            if not math.isfinite(getattr(self, key)):
                raise ValueError(f"{key} must be finite")
        if self.approach_height <= 0.0:
            raise ValueError(f"approach_height must be positive, got {self.approach_height}")
        if not (self.motion_timeout_s > 0.0):
            raise ValueError(f"motion_timeout_s must be positive, got {self.motion_timeout_s}")

    # ------------------------------------------------------------ arm choice
    def arm(self, name: str) -> ArmConfig:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(f"robot {self.name} has no arm {name!r}; arms: {[a.name for a in self.arms]}")

    def arms_for(self, *points: Sequence[float]) -> list[ArmConfig]:
        """Arms whose reach sphere contains every point, best first (nearest shoulder)."""
        if not points:
            raise ValueError("arms_for needs at least one point")
        pts = [np.asarray(p, dtype=np.float64).reshape(3) for p in points]
        if not all(np.all(np.isfinite(p)) for p in pts):
            return []
        ranked = [(max(a.shoulder_distance(p) for p in pts), i, a) for i, a in enumerate(self.arms)]
        return [a for d, _, a in sorted(ranked, key=lambda t: (t[0], t[1])) if d <= a.reach_radius]

    def choose_arm(self, point: Sequence[float], *more_points: Sequence[float]) -> Optional[ArmConfig]:
        """The arm that reaches ``point`` (and ``more_points``) with the nearest shoulder, or ``None``."""
        arms = self.arms_for(point, *more_points)
        return arms[0] if arms else None

    # ------------------------------------------------------------------ YAML
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RobotConfig":
        """Build from a plain mapping (the YAML document); unknown keys are an error, not ignored."""
        if not isinstance(data, Mapping):
            raise ValueError(f"robot config must be a mapping, got {type(data).__name__}")
        d = dict(data)
        _check_keys(d, cls, "robot")
        if "arms" not in d or not isinstance(d["arms"], (list, tuple)):
            raise ValueError("robot config needs a list 'arms'")
        arms = []
        for i, arm in enumerate(d["arms"]):
            if not isinstance(arm, Mapping):
                raise ValueError(f"arms[{i}] must be a mapping")
            _check_keys(arm, ArmConfig, f"arms[{i}]")
            a = dict(arm)
            for key in ("shoulder_xyz", "tool_orientation", "tool_axis", "controllers"):
                if key in a:
                    a[key] = tuple(a[key])
            if "out_of_view_joints" in a:
                a["out_of_view_joints"] = dict(a["out_of_view_joints"] or {})
            arms.append(ArmConfig(**a))
        d["arms"] = tuple(arms)
        for key in ("free_planner", "linear_planner"):
            if key in d:
                _check_keys(d[key], MotionPlannerConfig, key)
                d[key] = MotionPlannerConfig(**d[key])
        if "workspace" in d:
            _check_keys(d["workspace"], Workspace, "workspace")
            d["workspace"] = Workspace(**{k: tuple(v) for k, v in d["workspace"].items()})
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "RobotConfig":
        import yaml  # PyYAML; ships with ROS 2

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"robot config {path} does not exist")
        with path.open("r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc


def _check_keys(d: Mapping[str, Any], klass: type, where: str) -> None:
    if not isinstance(d, Mapping):
        raise ValueError(f"{where} must be a mapping")
    known = {f.name for f in dataclasses.fields(klass)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")
