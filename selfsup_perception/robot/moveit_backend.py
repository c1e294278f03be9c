"""Real-arm backend: pushes and grasps planned and executed with MoveIt 2 through ``moveit_py``.

A push from ``s`` to ``e`` (world = ``RobotConfig.base_frame``) with contact height
``h_c`` (above ``table_height``) and approach height ``h_a`` becomes, for the chosen arm:

1. ``approach``  free-space plan (``free_planner``, e.g. OMPL RRTConnect) to the hover pose above ``s``;
2. ``descend``   Pilz LIN straight down to the contact pose at ``s``;
3. ``push``      Pilz LIN along the push line to the contact pose at ``e``;
4. ``retreat``   Pilz LIN straight up to the hover pose above ``e``;
5. ``out_of_view`` free-space plan to the arm's out-of-view configuration (named SRDF state
   or joint values).

Each step is the moveit_py idiom of the ``motion_planning_python_api`` tutorial
(moveit2_tutorials ``doc/examples/motion_planning_python_api/scripts/
motion_planning_python_api_tutorial.py``)::

    component = moveit.get_planning_component(group)          # once per group, cached
    component.set_start_state_to_current_state()
    component.set_goal_state(pose_stamped_msg=pose, pose_link=end_effector_link)
    #   or set_goal_state(configuration_name="ready") / set_goal_state(robot_state=state)
    params = PlanRequestParameters(moveit, namespace)         # then fields overwritten
    result = component.plan(single_plan_parameters=params)    # bool(result) is error_code == SUCCESS
    status = moveit.execute(result.trajectory, controllers=[])  # bool(status) is SUCCEEDED

Straight lines use the Pilz industrial motion planner's ``LIN`` through the plan request
parameters (``planning_pipeline="pilz_industrial_motion_planner"``, ``planner_id="LIN"``):
moveit_py has no Cartesian-path call (REFERENCES.md, "Library facts").
``moveit.execute`` is called with ``controllers=`` as a keyword: the bindings are
``execute(robot_trajectory, blocking=True, controllers)`` in older releases and
``execute(robot_trajectory, controllers)`` in newer ones (moveit/moveit2
``moveit_py/src/moveit/moveit_ros/moveit_cpp/moveit_cpp.cpp``; blocking was removed in
moveit/moveit2#1984), so this call works on both.

Pose goals: the tool orientation (pointing down) and the tool-centre offset come from
:class:`ArmConfig`; the pose of ``end_effector_link`` for a contact point ``c`` is
``origin = c - R(q_tool) @ (tcp_offset * tool_axis)``.

Failure mapping (no exception escapes a motion call):

* bad input (NaN, outside ``RobotConfig.workspace``, non-positive heights) -> ``INVALID_GOAL``;
* no arm's reach sphere holds the points, or MoveIt answers ``NO_IK_SOLUTION`` (-31)
  -> ``UNREACHABLE`` (on a two-arm robot the next arm is tried while nothing has moved);
* a goal MoveIt rejects or any other planning error -> ``PLANNING_FAILED``;
* ``execute`` returning a false status, or raising -> ``EXECUTION_FAILED``;
* the whole motion running past ``timeout_s`` (checked before every plan and before every
  execution; each plan's ``planning_time`` is capped by the time left) -> ``TIMEOUT``.
  A trajectory that is already executing is not interrupted: MoveIt's trajectory
  execution manager bounds each execution (its duration monitoring).

After a failure once the arm has moved, the backend tries to recover: if the last
executed goal was a contact pose it lifts straight up by the approach height (LIN), then
moves out of view; the result's message says whether that worked.

``moveit_py`` (and ``geometry_msgs``) are imported only when no ``api`` is injected; tests
inject ``tests/doubles/recording_moveit.py`` doubles instead.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Optional, Sequence

import numpy as np

from selfsup_perception.core.types import quaternion_to_matrix
from selfsup_perception.robot.arm_backend import (
    EXECUTION_FAILED,
    INVALID_GOAL,
    PLANNING_FAILED,
    TIMEOUT,
    UNREACHABLE,
    InvalidGoalError,
    MotionResult,
    validate_point,
)
from selfsup_perception.robot.robot_config import ArmConfig, MotionPlannerConfig, RobotConfig

MOVEIT_INSTALL_HINT = (
    "MoveItArmBackend needs moveit_py (MoveIt 2's Python bindings), which is not on PyPI "
    "(the PyPI package called 'moveit' is unrelated). On the robot computer install MoveIt 2 for your "
    "ROS 2 distribution, e.g. `sudo apt install ros-$ROS_DISTRO-moveit ros-$ROS_DISTRO-moveit-py` "
    "(or build moveit2 from source: https://moveit.ros.org/install-moveit2/source/), then "
    "`source /opt/ros/$ROS_DISTRO/setup.bash` before starting Python. Without a robot, use the simulated "
    "backend, or inject tests/doubles/recording_moveit.py RecordingMoveItPy for tests."
)

# moveit_msgs/msg/MoveItErrorCodes values this backend tells apart.
_MOVEIT_SUCCESS = 1
_MOVEIT_NO_IK_SOLUTION = -31
_MOVEIT_CODE_NAMES = {
    1: "SUCCESS", 0: "UNDEFINED", 99999: "FAILURE", -1: "PLANNING_FAILED", -2: "INVALID_MOTION_PLAN",
    -4: "CONTROL_FAILED", -6: "TIMED_OUT", -7: "PREEMPTED", -10: "START_STATE_IN_COLLISION",
    -12: "GOAL_IN_COLLISION", -14: "GOAL_CONSTRAINTS_VIOLATED", -15: "INVALID_GROUP_NAME",
    -16: "INVALID_GOAL_CONSTRAINTS", -17: "INVALID_ROBOT_STATE", -18: "INVALID_LINK_NAME",
    -21: "FRAME_TRANSFORM_FAILURE", -31: "NO_IK_SOLUTION",
}

#: Step labels after which the tool is at a contact pose (recovery lifts first).
_CONTACT_STEPS = frozenset({"descend", "push", "grasp_descend", "place_descend", "gripper_close", "gripper_release"})


def load_moveit_api() -> SimpleNamespace:
    """Import the moveit_py classes the backend constructs; :data:`MOVEIT_INSTALL_HINT` on failure."""
    try:
        from geometry_msgs.msg import PoseStamped
        from moveit.core.robot_state import RobotState
        from moveit.planning import MoveItPy, PlanRequestParameters
    except ImportError as exc:
        raise ImportError(f"{MOVEIT_INSTALL_HINT} (import error: {exc})") from exc
    return SimpleNamespace(
        MoveItPy=MoveItPy, PlanRequestParameters=PlanRequestParameters, RobotState=RobotState, PoseStamped=PoseStamped
    )


@dataclass(frozen=True)
class _Step:
    """One plan-and-execute: ``goal`` is ``("pose", xyz)`` (a contact/hover point of the tool
    centre), ``("named", name)`` or ``("joints", {joint: rad})``."""

    label: str
    group: str
    goal: tuple
    planner: MotionPlannerConfig


class _StepFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MoveItArmBackend:
    """:class:`~selfsup_perception.robot.arm_backend.ArmBackend` for real arms through moveit_py.

    Args:
        robot_config: the robot (``RobotConfig.from_yaml("config/robots/panda.yaml")``).
        moveit: a ``moveit.planning.MoveItPy`` instance; built here as
            ``MoveItPy(node_name=node_name, config_dict=config_dict)`` when ``None``.
        api: namespace with ``MoveItPy``, ``PlanRequestParameters``, ``RobotState`` and
            ``PoseStamped`` classes; imported lazily from moveit_py / geometry_msgs when
            ``None`` (raising ImportError with install instructions if MoveIt is missing).
        node_name, config_dict: forwarded to ``MoveItPy`` when this class builds it
            (``config_dict=None`` makes moveit_py read the parameters of the launch file).
        clock: monotonic seconds, for the timeouts (injectable for tests).
        recovery_timeout_s: time allowed for the lift/out-of-view recovery after a failure.
        logger: anything with ``info``/``error`` (a Python logger or an rclpy node logger).
    """

    name = "moveit"

    def __init__(
        self,
        robot_config: RobotConfig,
        moveit: Any = None,
        *,
        api: Optional[SimpleNamespace] = None,
        node_name: str = "selfsup_moveit_py",
        config_dict: Optional[dict] = None,
        clock: Callable[[], float] = time.monotonic,
        recovery_timeout_s: float = 30.0,
        logger: Any = None,
    ) -> None:
        if not isinstance(robot_config, RobotConfig):
            raise TypeError(f"robot_config must be a RobotConfig, got {type(robot_config).__name__}")
        if not (recovery_timeout_s > 0.0):
            raise ValueError(f"recovery_timeout_s must be positive, got {recovery_timeout_s}")
        self.config = robot_config
        self._api = api if api is not None else load_moveit_api()
        if moveit is None:
            moveit = self._api.MoveItPy(node_name=node_name, config_dict=config_dict)
        self._moveit = moveit
        self._clock = clock
        self._recovery_timeout_s = float(recovery_timeout_s)
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._components: dict[str, Any] = {}
        self._last_executed: Optional[_Step] = None

    # ------------------------------------------------------------ ArmBackend
    def execute_push(
        self,
        start_xyz: Sequence[float],
        end_xyz: Sequence[float],
        *,
        approach_height: Optional[float] = None,
        contact_height: Optional[float] = None,
        timeout_s: Optional[float] = None,
    ) -> MotionResult:
        t0 = self._clock()
        cfg = self.config
        try:
            s = validate_point(start_xyz, cfg.workspace, "push start")
            e = validate_point(end_xyz, cfg.workspace, "push end")
            h_a = _positive(approach_height, cfg.approach_height, "approach_height")
            h_c = _finite(contact_height, cfg.contact_height, "contact_height")
            timeout = _positive(timeout_s, cfg.motion_timeout_s, "timeout_s")
        except InvalidGoalError as exc:
            return MotionResult.failure(INVALID_GOAL, str(exc))
        z = cfg.table_height + h_c
        s_c, e_c = np.array([s[0], s[1], z]), np.array([e[0], e[1], z])
        s_h, e_h = s_c + [0.0, 0.0, h_a], e_c + [0.0, 0.0, h_a]

        def steps(arm: ArmConfig) -> list[_Step]:
            return [
                _Step("approach", arm.planning_group, ("pose", s_h), cfg.free_planner),
                _Step("descend", arm.planning_group, ("pose", s_c), cfg.linear_planner),
                _Step("push", arm.planning_group, ("pose", e_c), cfg.linear_planner),
                _Step("retreat", arm.planning_group, ("pose", e_h), cfg.linear_planner),
                self._out_of_view_step(arm),
            ]

        what = f"push {np.round(s_c, 3).tolist()} -> {np.round(e_c, 3).tolist()}"
        return self._run_with_arm_choice(what, (s_c, e_c, s_h, e_h), steps, t0, t0 + timeout)

    def execute_grasp(
        self,
        pick_xyz: Sequence[float],
        place_xyz: Sequence[float],
        *,
        grasp_height: Optional[float] = None,
        approach_height: Optional[float] = None,
        timeout_s: Optional[float] = None,
    ) -> MotionResult:
        t0 = self._clock()
        cfg = self.config
        try:
            a = validate_point(pick_xyz, cfg.workspace, "grasp pick")
            b = validate_point(place_xyz, cfg.workspace, "grasp place")
            h_a = _positive(approach_height, cfg.approach_height, "approach_height")
            h_g = _finite(grasp_height, cfg.grasp_height, "grasp_height")
            timeout = _positive(timeout_s, cfg.motion_timeout_s, "timeout_s")
        except InvalidGoalError as exc:
            return MotionResult.failure(INVALID_GOAL, str(exc))
        a_c = np.array([a[0], a[1], cfg.table_height + h_g])
        b_c = np.array([b[0], b[1], cfg.table_height + cfg.place_height])
        a_h, b_h = a_c + [0.0, 0.0, h_a], b_c + [0.0, 0.0, h_a]

        def steps(arm: ArmConfig) -> list[_Step]:
            if not arm.gripper_group:
                raise _StepFailed(PLANNING_FAILED, f"arm {arm.name} has no gripper_group configured; cannot grasp")
            g, fp, lp = arm.gripper_group, cfg.free_planner, cfg.linear_planner
            return [
                _Step("gripper_open", g, ("named", arm.gripper_open_configuration), fp),
                _Step("approach", arm.planning_group, ("pose", a_h), fp),
                _Step("grasp_descend", arm.planning_group, ("pose", a_c), lp),
                _Step("gripper_close", g, ("named", arm.gripper_closed_configuration), fp),
                _Step("lift", arm.planning_group, ("pose", a_h), lp),
                _Step("transfer", arm.planning_group, ("pose", b_h), fp),
                _Step("place_descend", arm.planning_group, ("pose", b_c), lp),
                _Step("gripper_release", g, ("named", arm.gripper_open_configuration), fp),
                _Step("place_retreat", arm.planning_group, ("pose", b_h), lp),
                self._out_of_view_step(arm),
            ]

        what = f"grasp {np.round(a_c, 3).tolist()} -> place {np.round(b_c, 3).tolist()}"
        return self._run_with_arm_choice(what, (a_c, b_c, a_h, b_h), steps, t0, t0 + timeout)

    def move_out_of_view(self, *, timeout_s: Optional[float] = None) -> MotionResult:
        t0 = self._clock()
        try:
            timeout = _positive(timeout_s, self.config.motion_timeout_s, "timeout_s")
        except InvalidGoalError as exc:
            return MotionResult.failure(INVALID_GOAL, str(exc))
        deadline = t0 + timeout
        for arm in self.config.arms:
            try:
                self._run_step(self._out_of_view_step(arm), arm, deadline)
            except _StepFailed as exc:
                return MotionResult.failure(exc.code, f"move out of view: arm {arm.name}: {exc.message}",
                                            self._elapsed(t0))
        return MotionResult.ok(f"{len(self.config.arms)} arm(s) out of view", self._elapsed(t0))

    def is_reachable(self, xyz: Sequence[float]) -> bool:
        """Workspace check plus the sphere reach model (no IK: MoveIt decides when planning)."""
        try:
            p = validate_point(xyz, self.config.workspace)
        except InvalidGoalError:
            return False
        return bool(self.config.arms_for(p))

    # -------------------------------------------------------------- internals
    def _run_with_arm_choice(self, what: str, points: Sequence[np.ndarray],
                             make_steps: Callable[[ArmConfig], list[_Step]], t0: float,
                             deadline: float) -> MotionResult:
        arms = self.config.arms_for(*points)
        if not arms:
            dists = ", ".join(f"{a.name}: {max(a.shoulder_distance(p) for p in points):.3f} m "
                              f"(reach {a.reach_radius:.3f} m)" for a in self.config.arms)
            return MotionResult.failure(UNREACHABLE, f"{what}: outside the reach of every arm ({dists})")
        failure: Optional[MotionResult] = None
        for k, arm in enumerate(arms):
            self._last_executed = None
            try:
                steps = make_steps(arm)
                for step in steps:
                    self._run_step(step, arm, deadline)
            except _StepFailed as exc:
                moved = self._last_executed is not None
                msg = f"{what} with arm {arm.name}: {exc.message}"
                if exc.code == UNREACHABLE and not moved and k + 1 < len(arms):
                    self._log.info(f"{msg}; trying arm {arms[k + 1].name}")
                    failure = MotionResult.failure(exc.code, msg, self._elapsed(t0))
                    continue
                if moved:
                    msg += "; " + self._recover(arm)
                self._log.error(msg)
                return MotionResult.failure(exc.code, msg, self._elapsed(t0))
            overrun = self._clock() - deadline
            note = f" ({overrun:.1f} s over the timeout while executing)" if overrun > 0 else ""
            return MotionResult.ok(f"{what} done with arm {arm.name}{note}", self._elapsed(t0))
        assert failure is not None
        return failure

    def _run_step(self, step: _Step, arm: ArmConfig, deadline: float) -> None:
        """Plan and execute one step; raise :class:`_StepFailed` with an error code on any failure."""
        remaining = deadline - self._clock()
        if remaining <= 0.0:
            raise _StepFailed(TIMEOUT, f"timed out before step '{step.label}'")
        try:
            component = self._component(step.group)
            component.set_start_state_to_current_state()
            accepted = self._set_goal(component, step, arm)
        except Exception as exc:  # moveit_py raises RuntimeError/ValueError from C++; keep them inside
            raise _StepFailed(PLANNING_FAILED, f"step '{step.label}': setting the goal raised {exc!r}") from exc
        if accepted is False:
            raise _StepFailed(PLANNING_FAILED, f"step '{step.label}': MoveIt rejected the goal {_goal_text(step)}")
        try:
            params = self._plan_parameters(step.planner, remaining)
            result = component.plan(single_plan_parameters=params)
        except Exception as exc:
            raise _StepFailed(PLANNING_FAILED, f"step '{step.label}': planning raised {exc!r}") from exc
        if not result:
            val = _error_val(result)
            name = _MOVEIT_CODE_NAMES.get(val, str(val))
            code = UNREACHABLE if val == _MOVEIT_NO_IK_SOLUTION else PLANNING_FAILED
            if self._clock() >= deadline and code == PLANNING_FAILED:
                code = TIMEOUT
            raise _StepFailed(code, f"step '{step.label}': planning to {_goal_text(step)} with "
                                    f"{step.planner.pipeline}/{step.planner.planner_id} failed ({name})")
        if self._clock() > deadline:
            raise _StepFailed(TIMEOUT, f"timed out after planning step '{step.label}' (not executed)")
        try:
            status = self._moveit.execute(result.trajectory, controllers=list(arm.controllers))
        except Exception as exc:
            raise _StepFailed(EXECUTION_FAILED, f"step '{step.label}': execution raised {exc!r}") from exc
        # Releases whose execute returns nothing give no status to check; a returned status must be true.
        if status is not None and not status:
            raise _StepFailed(EXECUTION_FAILED,
                              f"step '{step.label}': execution failed ({getattr(status, 'status', status)})")
        self._last_executed = step

    def _recover(self, arm: ArmConfig) -> str:
        """Best effort after a failure: lift out of contact, then move out of view."""
        last = self._last_executed
        deadline = self._clock() + self._recovery_timeout_s
        try:
            if last is not None and last.label in _CONTACT_STEPS and last.goal[0] == "pose":
                up = np.asarray(last.goal[1], float) + [0.0, 0.0, self.config.approach_height]
                self._run_step(_Step("recover_lift", arm.planning_group, ("pose", up), self.config.linear_planner),
                               arm, deadline)
            self._run_step(self._out_of_view_step(arm), arm, deadline)
        except _StepFailed as exc:
            return f"recovery failed ({exc.code}: {exc.message}); CHECK THE ARM"
        return "recovered: arm moved out of view"

    def _component(self, group: str) -> Any:
        if group not in self._components:
            self._components[group] = self._moveit.get_planning_component(group)
        return self._components[group]

    def _set_goal(self, component: Any, step: _Step, arm: ArmConfig) -> Any:
        kind, value = step.goal
        if kind == "pose":
            return component.set_goal_state(pose_stamped_msg=self._pose_msg(arm, value),
                                            pose_link=arm.end_effector_link)
        if kind == "named":
            return component.set_goal_state(configuration_name=value)
        state = self._api.RobotState(self._moveit.get_robot_model())
        state.joint_positions = dict(value)
        state.update()
        return component.set_goal_state(robot_state=state)

    def _plan_parameters(self, planner: MotionPlannerConfig, remaining_s: float) -> Any:
        params = self._api.PlanRequestParameters(self._moveit, planner.parameter_namespace)
        params.planning_pipeline = planner.pipeline
        params.planner_id = planner.planner_id
        params.planning_attempts = int(planner.planning_attempts)
        params.planning_time = float(min(planner.planning_time, remaining_s))
        params.max_velocity_scaling_factor = float(planner.max_velocity_scaling_factor)
        params.max_acceleration_scaling_factor = float(planner.max_acceleration_scaling_factor)
        return params

    def _pose_msg(self, arm: ArmConfig, contact_xyz: Sequence[float]) -> Any:
        """PoseStamped of ``arm.end_effector_link`` putting the tool centre at ``contact_xyz``."""
        return _fill_pose(self._api.PoseStamped(), self.config.base_frame,
                          tool_link_position(arm, contact_xyz), arm.tool_orientation)

    def _out_of_view_step(self, arm: ArmConfig) -> _Step:
        goal = ("named", arm.out_of_view_configuration) if arm.out_of_view_configuration \
            else ("joints", dict(arm.out_of_view_joints))
        return _Step("out_of_view", arm.planning_group, goal, self.config.free_planner)

    def _elapsed(self, t0: float) -> float:
        return max(0.0, float(self._clock() - t0))


def tool_link_position(arm: ArmConfig, contact_xyz: Sequence[float]) -> np.ndarray:
    """Origin of ``arm.end_effector_link`` whose tool centre is at ``contact_xyz``:
    ``c - R(q_tool) @ (tcp_offset * tool_axis)``."""
    r = quaternion_to_matrix(np.asarray(arm.tool_orientation, dtype=np.float64))
    return np.asarray(contact_xyz, dtype=np.float64) - r @ (arm.tcp_offset * np.asarray(arm.tool_axis))


def _fill_pose(msg: Any, frame_id: str, xyz: np.ndarray, q_xyzw: Sequence[float]) -> Any:
    msg.header.frame_id = frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in xyz)
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in q_xyzw)
    return msg


def _error_val(result: Any) -> Optional[int]:
    code = getattr(result, "error_code", None)
    val = getattr(code, "val", code)
    try:
        return int(val) if val is not None else None
    except (TypeError, ValueError):
        return None


def _goal_text(step: _Step) -> str:
    kind, value = step.goal
    if kind == "pose":
        return f"tool at {np.round(np.asarray(value, float), 3).tolist()}"
    if kind == "named":
        return f"named state '{value}'"
    return f"joint values {value}"


def _finite(value: Optional[float], default: float, name: str) -> float:
    v = default if value is None else value
    try:
        v = float(v)
    except (TypeError, ValueError) as exc:
        raise InvalidGoalError(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(v):
        raise InvalidGoalError(f"{name} must be finite, got {v}")
    return v


def _positive(value: Optional[float], default: float, name: str) -> float:
    v = _finite(value, default, name)
    if v <= 0.0:
        raise InvalidGoalError(f"{name} must be positive, got {v}")
    return v
