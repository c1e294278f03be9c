"""TEST DOUBLE of the moveit_py API surface that :class:`MoveItArmBackend` calls. It moves nothing.

``RecordingMoveItPy`` stands in for ``moveit.planning.MoveItPy`` on machines without
MoveIt 2 (moveit_py is not pip-installable; it ships with ROS 2 MoveIt binaries). It
records every call the backend makes, in order, and can be told to fail planning or
execution at the k-th call, so tests can check how a planned push is translated into
MoveIt calls and how failures come back.

The mimicked names, argument names and return shapes were read from the moveit_py
bindings in ``moveit/moveit2`` (``moveit_py/src/moveit/moveit_ros/moveit_cpp/moveit_cpp.cpp``,
``.../planning_component.cpp``, ``moveit_py/src/moveit/moveit_core/planning_interface/
planning_response.cpp``, ``.../controller_manager/controller_manager.cpp``) and the
``moveit2_tutorials`` example ``doc/examples/motion_planning_python_api/scripts/
motion_planning_python_api_tutorial.py``:

* ``MoveItPy(node_name="moveit_py", config_dict=None, ...)``;
  ``get_planning_component(planning_component_name)``; ``get_robot_model()``;
  ``execute(robot_trajectory, controllers)`` returning an ``ExecutionStatus``
  (``bool(status)``, ``status.status`` string). Older releases (Humble/Iron) bind
  ``execute(robot_trajectory, blocking=True, controllers)``; a call with
  ``controllers=`` as keyword works on both, and this double accepts both forms.
* ``PlanningComponent.set_start_state_to_current_state()``,
  ``set_start_state(configuration_name=None, robot_state=None)``,
  ``set_goal_state(configuration_name=None, robot_state=None, pose_stamped_msg=None,
  pose_link=None, motion_plan_constraints=None)`` -> bool, with the binding's argument
  checks (``std::invalid_argument``, which pybind11 raises as ``ValueError``),
  ``plan(single_plan_parameters=None, multi_plan_parameters=None, planning_scene=None,
  solution_selection_function=None, stopping_criterion_callback=None)`` ->
  ``MotionPlanResponse`` (``.trajectory``, ``.planning_time``, ``.error_code.val``,
  ``bool(response)`` is ``error_code.val == SUCCESS``), ``named_target_states``,
  ``planning_group_name``.
* ``PlanRequestParameters(moveit_py, namespace)`` (two positional arguments) with
  read/write ``planner_id``, ``planning_pipeline``, ``planning_attempts``,
  ``planning_time``, ``max_velocity_scaling_factor``, ``max_acceleration_scaling_factor``
  (defaults as ``PlanRequestParameters::load``: "", "", 5, 1.0, 1.0, 1.0).
* ``RobotState(robot_model)`` with a ``joint_positions`` dict property and ``update()``.
* ``geometry_msgs.msg.PoseStamped`` fields ``header.frame_id``, ``pose.position.{x,y,z}``,
  ``pose.orientation.{x,y,z,w}`` (:class:`FakePoseStamped`).

Use :func:`recording_moveit_api` as the ``api=`` argument of ``MoveItArmBackend`` and
:func:`assert_call_sequence` to check what was called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Iterable, Optional, Sequence

# moveit_msgs/msg/MoveItErrorCodes values used here.
SUCCESS = 1
PLANNING_FAILED_CODE = -1
TIMED_OUT_CODE = -6
NO_IK_SOLUTION_CODE = -31


# ------------------------------------------------------------ message look-alikes
@dataclass
class _Vec3:
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0


@dataclass
class _Quat:
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    w: float = 1.0


@dataclass
class _Pose:
    position: _Vec3 = field(default_factory=_Vec3)
    orientation: _Quat = field(default_factory=_Quat)


@dataclass
class _Header:
    frame_id: str = ""


@dataclass
class FakePoseStamped:
    """Field-compatible stand-in for ``geometry_msgs.msg.PoseStamped`` (test double)."""

    header: _Header = field(default_factory=_Header)
    pose: _Pose = field(default_factory=_Pose)


@dataclass
class FakeMoveItErrorCodes:
    """Stand-in for ``moveit_msgs.msg.MoveItErrorCodes``: just ``val``."""

    val: int = SUCCESS


# ------------------------------------------------------------------- recording
@dataclass(frozen=True)
class RecordedCall:
    """One call on the double: ``target`` is ``'moveit'`` or a planning group name."""

    target: str
    method: str
    kwargs: dict


@dataclass
class RecordedTrajectory:
    """What ``MotionPlanResponse.trajectory`` holds in the double: the request it answers."""

    group: str
    goal: dict
    planning_pipeline: str
    planner_id: str
    max_velocity_scaling_factor: float
    index: int


@dataclass
class RecordingMotionPlanResponse:
    trajectory: Optional[RecordedTrajectory]
    planning_time: float
    error_code: FakeMoveItErrorCodes

    def __bool__(self) -> bool:
        return self.error_code.val == SUCCESS


@dataclass
class RecordingExecutionStatus:
    """Stand-in for ``moveit.core.controller_manager.ExecutionStatus``."""

    status: str

    def __bool__(self) -> bool:
        return self.status == "SUCCEEDED"


class RecordingPlanRequestParameters:
    """Stand-in for ``moveit.planning.PlanRequestParameters(moveit_py, namespace)``."""

    def __init__(self, moveit_py: "RecordingMoveItPy", namespace: str, /) -> None:
        if not isinstance(moveit_py, RecordingMoveItPy):
            raise TypeError("PlanRequestParameters needs the MoveItPy instance as first argument")
        self.namespace = namespace
        self.planner_id = ""
        self.planning_pipeline = ""
        self.planning_attempts = 5
        self.planning_time = 1.0
        self.max_velocity_scaling_factor = 1.0
        self.max_acceleration_scaling_factor = 1.0

    def as_dict(self) -> dict:
        return {
            "namespace": self.namespace,
            "planning_pipeline": self.planning_pipeline,
            "planner_id": self.planner_id,
            "planning_attempts": self.planning_attempts,
            "planning_time": self.planning_time,
            "max_velocity_scaling_factor": self.max_velocity_scaling_factor,
            "max_acceleration_scaling_factor": self.max_acceleration_scaling_factor,
        }


class RecordingRobotModel:
    def __init__(self, name: str = "recording_robot") -> None:
        self.name = name


class RecordingRobotState:
    """Stand-in for ``moveit.core.robot_state.RobotState(robot_model)``."""

    def __init__(self, robot_model: RecordingRobotModel) -> None:
        self.robot_model = robot_model
        self.joint_positions: dict[str, float] = {}
        self.updated = False

    def update(self, force: bool = False) -> None:
        self.updated = True


class RecordingPlanningComponent:
    """Stand-in for ``moveit.planning.PlanningComponent`` bound to one planning group."""

    def __init__(self, group: str, owner: "RecordingMoveItPy") -> None:
        self._group = group
        self._owner = owner
        self._goal: Optional[dict] = None

    @property
    def planning_group_name(self) -> str:
        return self._group

    @property
    def named_target_states(self) -> list[str]:
        return list(self._owner.named_states.get(self._group, ()))

    def set_start_state_to_current_state(self) -> None:
        self._owner._record(self._group, "set_start_state_to_current_state")

    def set_start_state(self, configuration_name: Optional[str] = None, robot_state: Any = None) -> bool:
        if configuration_name is not None and robot_state is not None:
            raise ValueError("Cannot specify both configuration name and robot state")
        if configuration_name is None and robot_state is None:
            raise ValueError("Must specify at least one argument")
        self._owner._record(self._group, "set_start_state", configuration_name=configuration_name,
                            robot_state=robot_state)
        return True

    def set_goal_state(
        self,
        configuration_name: Optional[str] = None,
        robot_state: Any = None,
        pose_stamped_msg: Any = None,
        pose_link: Optional[str] = None,
        motion_plan_constraints: Any = None,
    ) -> bool:
        given = [n for n, v in (("configuration_name", configuration_name), ("robot_state", robot_state),
                                ("pose_stamped_msg", pose_stamped_msg),
                                ("motion_plan_constraints", motion_plan_constraints)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"Cannot specify both {given[0]} and {given[1]}")
        if (pose_stamped_msg is None) != (pose_link is None):
            raise ValueError("Must specify both message and corresponding link")
        if not given:
            raise ValueError("Must specify at least one argument")
        kwargs: dict[str, Any] = {}
        if configuration_name is not None:
            kwargs["configuration_name"] = configuration_name
        if robot_state is not None:
            kwargs["robot_state"] = dict(robot_state.joint_positions)
        if pose_stamped_msg is not None:
            p, q = pose_stamped_msg.pose.position, pose_stamped_msg.pose.orientation
            kwargs["pose_stamped_msg"] = {
                "frame_id": pose_stamped_msg.header.frame_id,
                "position": (p.x, p.y, p.z),
                "orientation": (q.x, q.y, q.z, q.w),
            }
            kwargs["pose_link"] = pose_link
        if motion_plan_constraints is not None:
            kwargs["motion_plan_constraints"] = list(motion_plan_constraints)
        self._owner._record(self._group, "set_goal_state", **kwargs)
        if configuration_name is not None and self._group in self._owner.named_states \
                and configuration_name not in self._owner.named_states[self._group]:
            self._goal = None
            return False  # PlanningComponent::setGoal returns false for an unknown named state
        self._goal = kwargs
        return True

    def plan(
        self,
        single_plan_parameters: Optional[RecordingPlanRequestParameters] = None,
        multi_plan_parameters: Any = None,
        planning_scene: Any = None,
        solution_selection_function: Any = None,
        stopping_criterion_callback: Any = None,
    ) -> RecordingMotionPlanResponse:
        if single_plan_parameters is not None and multi_plan_parameters is not None:
            raise ValueError("Cannot specify both single and multi plan parameters")
        params = single_plan_parameters.as_dict() if single_plan_parameters is not None else {}
        self._owner._record(self._group, "plan", single_plan_parameters=params)
        return self._owner._answer_plan(self._group, self._goal, params)


class RecordingMoveItPy:
    """TEST DOUBLE for ``moveit.planning.MoveItPy``: records calls, plans and executes nothing.

    Args:
        node_name, config_dict: accepted and stored like the real constructor's.
        named_states: group -> named SRDF states; ``set_goal_state(configuration_name=...)``
            returns False for other names (groups not listed accept any name).
        fail_plan_at: 1-based index of the ``plan()`` call that fails (``None``: never),
            with MoveIt error code ``plan_error_code`` (default PLANNING_FAILED, -1).
        fail_execute_at: 1-based index of the ``execute()`` call that returns ``ABORTED``.
        no_ik_groups: planning groups for which every pose-goal plan fails with
            NO_IK_SOLUTION (-31), e.g. to make the PR2 fall back to its other arm.
        seconds_per_plan, seconds_per_execute: how far each call advances :meth:`clock`,
            so timeouts can be tested without sleeping.
    """

    def __init__(
        self,
        node_name: str = "moveit_py",
        config_dict: Optional[dict] = None,
        *,
        named_states: Optional[dict[str, Sequence[str]]] = None,
        fail_plan_at: Optional[int] = None,
        plan_error_code: int = PLANNING_FAILED_CODE,
        fail_execute_at: Optional[int] = None,
        no_ik_groups: Iterable[str] = (),
        seconds_per_plan: float = 0.0,
        seconds_per_execute: float = 0.0,
    ) -> None:
        self.node_name = node_name
        self.config_dict = config_dict
        self.named_states = {k: list(v) for k, v in (named_states or {}).items()}
        self.fail_plan_at = fail_plan_at
        self.plan_error_code = plan_error_code
        self.fail_execute_at = fail_execute_at
        self.no_ik_groups = set(no_ik_groups)
        self.seconds_per_plan = seconds_per_plan
        self.seconds_per_execute = seconds_per_execute
        self.calls: list[RecordedCall] = []
        self.executed: list[RecordedTrajectory] = []
        self.components: dict[str, RecordingPlanningComponent] = {}
        self._now = 0.0
        self._n_plan = 0
        self._n_execute = 0
        self._model = RecordingRobotModel()

    # ---------------------------------------------------------- real API surface
    def get_planning_component(self, planning_component_name: str) -> RecordingPlanningComponent:
        self._record("moveit", "get_planning_component", planning_component_name=planning_component_name)
        if planning_component_name not in self.components:
            self.components[planning_component_name] = RecordingPlanningComponent(planning_component_name, self)
        return self.components[planning_component_name]

    def get_robot_model(self) -> RecordingRobotModel:
        return self._model

    def execute(self, robot_trajectory: RecordedTrajectory, blocking: bool = True,
                controllers: Optional[list[str]] = None) -> RecordingExecutionStatus:
        if controllers is None:
            raise TypeError("execute() missing required argument: 'controllers'")
        self._record("moveit", "execute", robot_trajectory=robot_trajectory, controllers=list(controllers))
        self._n_execute += 1
        self._now += self.seconds_per_execute
        if self.fail_execute_at is not None and self._n_execute == self.fail_execute_at:
            return RecordingExecutionStatus("ABORTED")
        self.executed.append(robot_trajectory)
        return RecordingExecutionStatus("SUCCEEDED")

    def shutdown(self) -> None:
        self._record("moveit", "shutdown")

    # ------------------------------------------------------------ test helpers
    def clock(self) -> float:
        """Simulated seconds spent in ``plan``/``execute`` so far (pass as the backend's clock)."""
        return self._now

    def method_sequence(self) -> list[tuple[str, str]]:
        return [(c.target, c.method) for c in self.calls]

    def pose_goals(self) -> list[dict]:
        """The ``pose_stamped_msg`` goals set so far, in order (with ``pose_link`` and ``group``)."""
        return [dict(c.kwargs["pose_stamped_msg"], pose_link=c.kwargs["pose_link"], group=c.target)
                for c in self.calls if c.method == "set_goal_state" and "pose_stamped_msg" in c.kwargs]

    def plan_parameters(self) -> list[dict]:
        return [c.kwargs["single_plan_parameters"] for c in self.calls if c.method == "plan"]

    # -------------------------------------------------------------- internals
    def _record(self, target: str, method: str, **kwargs: Any) -> None:
        self.calls.append(RecordedCall(target, method, kwargs))

    def _answer_plan(self, group: str, goal: Optional[dict], params: dict) -> RecordingMotionPlanResponse:
        self._n_plan += 1
        self._now += self.seconds_per_plan
        code = SUCCESS
        if goal is None:
            code = -16  # INVALID_GOAL_CONSTRAINTS: no (valid) goal set
        elif self.fail_plan_at is not None and self._n_plan == self.fail_plan_at:
            code = self.plan_error_code
        elif group in self.no_ik_groups and "pose_stamped_msg" in goal:
            code = NO_IK_SOLUTION_CODE
        if code != SUCCESS:
            return RecordingMotionPlanResponse(None, self.seconds_per_plan, FakeMoveItErrorCodes(code))
        traj = RecordedTrajectory(group, dict(goal), params.get("planning_pipeline", ""), params.get("planner_id", ""),
                                  params.get("max_velocity_scaling_factor", 1.0), self._n_plan)
        return RecordingMotionPlanResponse(traj, self.seconds_per_plan, FakeMoveItErrorCodes(SUCCESS))


def recording_moveit_api() -> SimpleNamespace:
    """The classes the backend constructs, as test doubles (pass as ``MoveItArmBackend(api=...)``)."""
    return SimpleNamespace(
        MoveItPy=RecordingMoveItPy,
        PlanRequestParameters=RecordingPlanRequestParameters,
        RobotState=RecordingRobotState,
        PoseStamped=FakePoseStamped,
    )


def assert_call_sequence(moveit: RecordingMoveItPy, expected: Sequence[tuple], *, skip: Iterable[str] = ()) -> None:
    """Assert that the recorded calls are exactly ``expected``, in order.

    Each expected item is ``(target, method)`` or ``(target, method, {kwarg: value})``;
    with a dict, each listed keyword must equal the recorded one (floats compared to
    1e-9, tuples element-wise), unlisted keywords are not checked. Methods named in
    ``skip`` (e.g. ``"get_planning_component"``) are dropped from the record first.
    Raises ``AssertionError`` with both sequences side by side on mismatch.
    """
    skip = set(skip)
    calls = [c for c in moveit.calls if c.method not in skip]
    lines = [f"{i:2d}: {c.target}.{c.method}" for i, c in enumerate(calls)]
    if len(calls) != len(expected):
        want = [f"{i:2d}: {e[0]}.{e[1]}" for i, e in enumerate(expected)]
        raise AssertionError(
            f"expected {len(expected)} calls, recorded {len(calls)}\nrecorded:\n" + "\n".join(lines)
            + "\nexpected:\n" + "\n".join(want)
        )
    for i, (call, exp) in enumerate(zip(calls, expected)):
        target, method = exp[0], exp[1]
        if (call.target, call.method) != (target, method):
            raise AssertionError(f"call {i}: expected {target}.{method}, recorded {call.target}.{call.method}\n"
                                 + "\n".join(lines))
        if len(exp) > 2:
            for key, want in exp[2].items():
                if key not in call.kwargs:
                    raise AssertionError(f"call {i} {method}: no keyword {key!r}; recorded {call.kwargs}")
                if not _close(call.kwargs[key], want):
                    raise AssertionError(f"call {i} {method}: {key}={call.kwargs[key]!r}, expected {want!r}")


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) >= set(b) and all(_close(a[k], v) for k, v in b.items())
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-9
        except (TypeError, ValueError):
            return False
    return a == b
