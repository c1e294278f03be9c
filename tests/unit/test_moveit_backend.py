"""MoveItArmBackend: translation of pushes/grasps into moveit_py calls, checked on the recording double.

moveit_py is not installable here; RecordingMoveItPy (tests/doubles/recording_moveit.py)
mimics the API surface the backend calls and records every call.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from selfsup_perception.robot import ArmBackend, RobotConfig
from selfsup_perception.robot.moveit_backend import MOVEIT_INSTALL_HINT, MoveItArmBackend, tool_link_position
from doubles.recording_moveit import (
    NO_IK_SOLUTION_CODE,
    TIMED_OUT_CODE,
    FakePoseStamped,
    RecordingMoveItPy,
    assert_call_sequence,
    recording_moveit_api,
)

ROBOTS = Path(__file__).resolve().parents[2] / "config" / "robots"
PANDA_STATES = {"panda_arm": ["ready", "extended"], "hand": ["open", "close"]}
FREE = {"planning_pipeline": "ompl", "planner_id": "RRTConnectkConfigDefault", "namespace": "ompl_rrtc",
        "max_velocity_scaling_factor": 0.2, "max_acceleration_scaling_factor": 0.2, "planning_attempts": 1}
LIN = {"planning_pipeline": "pilz_industrial_motion_planner", "planner_id": "LIN", "namespace": "pilz_lin",
       "max_velocity_scaling_factor": 0.05, "max_acceleration_scaling_factor": 0.05, "planning_attempts": 1}
DOWN = (1.0, 0.0, 0.0, 0.0)


def _panda(**double_kw):
    cfg = RobotConfig.from_yaml(ROBOTS / "panda.yaml")
    moveit = RecordingMoveItPy(named_states=PANDA_STATES, **double_kw)
    return MoveItArmBackend(cfg, moveit, api=recording_moveit_api(), clock=moveit.clock), moveit


def _pr2(**double_kw):
    cfg = RobotConfig.from_yaml(ROBOTS / "pr2.yaml")
    moveit = RecordingMoveItPy(**double_kw)
    return MoveItArmBackend(cfg, moveit, api=recording_moveit_api(), clock=moveit.clock), moveit


def _step(group, goal, params):
    return [(group, "set_start_state_to_current_state"), (group, "set_goal_state", goal),
            (group, "plan", {"single_plan_parameters": params}), ("moveit", "execute", {"controllers": []})]


def _pose(xyz, link="panda_hand", frame="panda_link0", q=DOWN):
    return {"pose_stamped_msg": {"frame_id": frame, "position": tuple(xyz), "orientation": q}, "pose_link": link}


# ------------------------------------------------------------------ happy paths
def test_panda_push_is_approach_lin_down_lin_push_lin_up_then_ready():
    backend, moveit = _panda()
    res = backend.execute_push((0.5, 0.0, 0.031), (0.6, 0.05, 0.2))  # z of the inputs is not the contact z
    assert res.success and res.error_code == "" and "arm panda" in res.message
    # panda_hand origin = contact + 0.1034 m up (tool pointing down); contact z = table 0 + 0.02.
    z_c, z_h = 0.02 + 0.1034, 0.02 + 0.15 + 0.1034
    expected = ([("moveit", "get_planning_component", {"planning_component_name": "panda_arm"})]
                + _step("panda_arm", _pose((0.5, 0.0, z_h)), FREE)
                + _step("panda_arm", _pose((0.5, 0.0, z_c)), LIN)
                + _step("panda_arm", _pose((0.6, 0.05, z_c)), LIN)
                + _step("panda_arm", _pose((0.6, 0.05, z_h)), LIN)
                + _step("panda_arm", {"configuration_name": "ready"}, FREE))
    assert_call_sequence(moveit, expected)
    # Every executed trajectory is the one planned for that step.
    assert [t.planner_id for t in moveit.executed] == ["RRTConnectkConfigDefault", "LIN", "LIN", "LIN",
                                                       "RRTConnectkConfigDefault"]


def test_push_heights_can_be_overridden_per_call():
    backend, moveit = _panda()
    assert backend.execute_push((0.5, 0.0, 0.0), (0.6, 0.0, 0.0), approach_height=0.1, contact_height=0.05).success
    zs = [g["position"][2] for g in moveit.pose_goals()]
    np.testing.assert_allclose(zs, np.array([0.15, 0.05, 0.05, 0.15]) + 0.1034)


def test_planning_time_is_capped_by_time_left():
    backend, moveit = _panda(seconds_per_plan=0.5, seconds_per_execute=1.0)
    res = backend.execute_push((0.5, 0.0, 0.0), (0.6, 0.0, 0.0), timeout_s=3.2)
    assert res.error_code == "TIMEOUT" and "timed out after planning step 'push' (not executed)" in res.message
    times = [p["planning_time"] for p in moveit.plan_parameters()]
    # Time left before plans 1..3: 3.2, 1.7, 0.2 -> min(2.0 free / 1.0 LIN, left); the 3rd plan ends past
    # the deadline so it is not executed; recovery (LIN lift, free out-of-view) has its own budget.
    assert times == pytest.approx([2.0, 1.0, 0.2, 1.0, 2.0])
    assert [t.planner_id for t in moveit.executed] == ["RRTConnectkConfigDefault", "LIN", "LIN",
                                                       "RRTConnectkConfigDefault"]


def test_panda_grasp_sequence_uses_hand_group_named_states():
    backend, moveit = _panda()
    res = backend.execute_grasp((0.5, 0.0, 0.05), (0.6, 0.1, 0.05))
    assert res.success, res.message
    seq = [(c.target, c.kwargs.get("configuration_name") or c.kwargs.get("pose_stamped_msg", {}).get("position"))
           for c in moveit.calls if c.method == "set_goal_state"]
    z_g, z_p, lift = 0.02 + 0.1034, 0.07 + 0.1034, 0.15
    expected = [("hand", "open"), ("panda_arm", (0.5, 0.0, z_g + lift)), ("panda_arm", (0.5, 0.0, z_g)),
                ("hand", "close"), ("panda_arm", (0.5, 0.0, z_g + lift)), ("panda_arm", (0.6, 0.1, z_p + lift)),
                ("panda_arm", (0.6, 0.1, z_p)), ("hand", "open"), ("panda_arm", (0.6, 0.1, z_p + lift)),
                ("panda_arm", "ready")]
    assert len(seq) == len(expected)
    for (g, v), (eg, ev) in zip(seq, expected):
        assert g == eg
        if isinstance(ev, str):
            assert v == ev
        else:
            np.testing.assert_allclose(v, ev, atol=1e-12)
    planners = [p["planner_id"] for p in moveit.plan_parameters()]
    assert planners == ["RRTConnectkConfigDefault", "RRTConnectkConfigDefault", "LIN", "RRTConnectkConfigDefault",
                        "LIN", "RRTConnectkConfigDefault", "LIN", "RRTConnectkConfigDefault", "LIN",
                        "RRTConnectkConfigDefault"]


# ------------------------------------------------------------------------ PR2
def test_pr2_push_on_the_left_uses_left_arm_wrist_pose_and_tuck_joints():
    backend, moveit = _pr2()
    res = backend.execute_push((0.6, 0.3, 0.72), (0.7, 0.3, 0.72))
    assert res.success and "arm left" in res.message
    goals = moveit.pose_goals()
    assert {g["group"] for g in goals} == {"left_arm"} and {g["pose_link"] for g in goals} == {"l_wrist_roll_link"}
    assert {g["frame_id"] for g in goals} == {"base_link"}
    # Tool (+x of the wrist roll link) points down, tool frame 0.18 m beyond the wrist: wrist 0.18 m above contact.
    np.testing.assert_allclose(goals[1]["position"], (0.6, 0.3, 0.7 + 0.02 + 0.18), atol=1e-12)
    np.testing.assert_allclose(goals[1]["orientation"], (0.0, np.sqrt(0.5), 0.0, np.sqrt(0.5)), atol=1e-12)
    last = [c for c in moveit.calls if c.method == "set_goal_state"][-1]
    assert last.target == "left_arm" and last.kwargs["robot_state"]["l_elbow_flex_joint"] == pytest.approx(-1.683386)


def test_pr2_push_on_the_right_uses_right_arm():
    backend, moveit = _pr2()
    assert backend.execute_push((0.6, -0.3, 0.72), (0.6, -0.2, 0.72)).success
    assert {g["group"] for g in moveit.pose_goals()} == {"right_arm"}


def test_pr2_falls_back_to_other_arm_when_first_has_no_ik_before_moving():
    backend, moveit = _pr2(no_ik_groups={"right_arm"})
    res = backend.execute_push((0.6, 0.0, 0.72), (0.7, 0.0, 0.72))  # tie: right tried first
    assert res.success and "arm left" in res.message
    groups = [g["group"] for g in moveit.pose_goals()]
    assert groups[0] == "right_arm" and set(groups[1:]) == {"left_arm"}
    assert all(t.group == "left_arm" for t in moveit.executed)


def test_pr2_grasp_without_gripper_group_is_a_clean_failure():
    backend, moveit = _pr2()
    res = backend.execute_grasp((0.6, -0.2, 0.72), (0.6, -0.1, 0.72))
    assert (res.success, res.error_code) == (False, "PLANNING_FAILED") and "gripper_group" in res.message
    assert moveit.calls == []


def test_pr2_move_out_of_view_tucks_both_arms():
    backend, moveit = _pr2()
    assert backend.move_out_of_view().success
    goals = [(c.target, c.kwargs["robot_state"]) for c in moveit.calls if c.method == "set_goal_state"]
    assert [g for g, _ in goals] == ["right_arm", "left_arm"]
    assert goals[0][1]["r_shoulder_lift_joint"] == pytest.approx(1.10728)


# ------------------------------------------------------------------- failures
def test_first_plan_failure_is_planning_failed_without_motion_or_recovery():
    backend, moveit = _panda(fail_plan_at=1)
    res = backend.execute_push((0.5, 0.0, 0.0), (0.6, 0.0, 0.0))
    assert (res.success, res.error_code) == (False, "PLANNING_FAILED")
    assert "approach" in res.message and "PLANNING_FAILED" in res.message
    assert not any(c.method == "execute" for c in moveit.calls)
    assert [c.method for c in moveit.calls].count("plan") == 1


def test_push_line_plan_failure_lifts_and_moves_out_of_view():
    backend, moveit = _panda(fail_plan_at=3)  # 3rd plan = LIN along the push line
    res = backend.execute_push((0.5, 0.0, 0.0), (0.6, 0.0, 0.0))
    assert (res.success, res.error_code) == (False, "PLANNING_FAILED")
    assert "step 'push'" in res.message and "recovered" in res.message
    # Recovery: LIN straight up from the contact at the start, then the named out-of-view state.
    goals = [c.kwargs for c in moveit.calls if c.method == "set_goal_state"]
    np.testing.assert_allclose(goals[3]["pose_stamped_msg"]["position"], (0.5, 0.0, 0.02 + 0.15 + 0.1034))
    assert goals[4] == {"configuration_name": "ready"}
    assert [p["planner_id"] for p in moveit.plan_parameters()][3:] == ["LIN", "RRTConnectkConfigDefault"]
    assert len(moveit.executed) == 4  # approach, descend, recover lift, out of view


def test_no_ik_solution_maps_to_unreachable():
    backend, moveit = _panda(fail_plan_at=2, plan_error_code=NO_IK_SOLUTION_CODE)
    res = backend.execute_push((0.5, 0.0, 0.0), (0.6, 0.0, 0.0))
    assert (res.success, res.error_code) == (False, "UNREACHABLE") and "NO_IK_SOLUTION" in res.message


def test_execution_failure_maps_to_execution_failed():
    backend, moveit = _panda(fail_execute_at=2)
    res = backend.execute_push((0.5, 0.0, 0.0), (0.6, 0.0, 0.0))
    assert (res.success, res.error_code) == (False, "EXECUTION_FAILED")
    assert "step 'descend'" in res.message and "ABORTED" in res.message


def test_overall_timeout_is_reported_and_stops_planning():
    backend, moveit = _panda(seconds_per_plan=1.0, seconds_per_execute=5.0)
    res = backend.execute_push((0.5, 0.0, 0.0), (0.6, 0.0, 0.0), timeout_s=10.0)
    # t=6 after step 1, t=12 after step 2 -> no third plan.
    assert (res.success, res.error_code) == (False, "TIMEOUT")
    assert "timed out before step 'push'" in res.message
    assert res.duration_s >= 12.0


def test_planner_timeout_after_deadline_is_timeout():
    backend, moveit = _panda(fail_plan_at=1, plan_error_code=TIMED_OUT_CODE, seconds_per_plan=3.0)
    res = backend.execute_push((0.5, 0.0, 0.0), (0.6, 0.0, 0.0), timeout_s=2.0)
    assert res.error_code == "TIMEOUT" and "TIMED_OUT" in res.message


def test_goal_outside_every_arm_reach_is_unreachable_without_calls():
    cfg = RobotConfig.from_yaml(ROBOTS / "panda.yaml")
    import dataclasses
    short = dataclasses.replace(cfg, arms=(dataclasses.replace(cfg.arms[0], reach_radius=0.4),))
    moveit = RecordingMoveItPy()
    backend = MoveItArmBackend(short, moveit, api=recording_moveit_api(), clock=moveit.clock)
    res = backend.execute_push((0.7, 0.0, 0.0), (0.75, 0.0, 0.0))
    assert (res.success, res.error_code) == (False, "UNREACHABLE") and "outside the reach" in res.message
    assert moveit.calls == []
    assert not backend.is_reachable((0.7, 0.0, 0.0)) and backend.is_reachable((0.36, 0.0, 0.3))


@pytest.mark.parametrize("start, end, kw, match", [
    ((0.5, float("nan"), 0.0), (0.6, 0.0, 0.0), {}, "NaN"),
    ((0.5, 0.0, 0.0), (0.9, 0.0, 0.0), {}, "outside the workspace"),
    ((0.5, 0.0, 0.0), (0.6, 0.0, 0.0), {"approach_height": -0.1}, "approach_height must be positive"),
    ((0.5, 0.0, 0.0), (0.6, 0.0, 0.0), {"timeout_s": 0.0}, "timeout_s must be positive"),
    ((0.5, 0.0, 0.0), (0.6, 0.0, 0.0), {"contact_height": float("inf")}, "contact_height must be finite"),
])
def test_invalid_goals_are_rejected_before_any_moveit_call(start, end, kw, match):
    backend, moveit = _panda()
    res = backend.execute_push(start, end, **kw)
    assert (res.success, res.error_code) == (False, "INVALID_GOAL") and match in res.message
    assert moveit.calls == []
    assert backend.is_reachable((0.5, float("nan"), 0.0)) is False


def test_unknown_named_state_is_planning_failed():
    cfg = RobotConfig.from_yaml(ROBOTS / "panda.yaml")
    moveit = RecordingMoveItPy(named_states={"panda_arm": ["extended"]})  # no "ready" in this SRDF
    backend = MoveItArmBackend(cfg, moveit, api=recording_moveit_api(), clock=moveit.clock)
    res = backend.move_out_of_view()
    assert res.error_code == "PLANNING_FAILED" and "rejected the goal named state 'ready'" in res.message
    assert not any(c.method == "plan" for c in moveit.calls)


def test_exceptions_from_moveit_do_not_escape():
    class Exploding(RecordingMoveItPy):
        def execute(self, robot_trajectory, blocking=True, controllers=None):
            raise RuntimeError("controller manager unavailable")

    cfg = RobotConfig.from_yaml(ROBOTS / "panda.yaml")
    moveit = Exploding()
    backend = MoveItArmBackend(cfg, moveit, api=recording_moveit_api(), clock=moveit.clock)
    res = backend.execute_push((0.5, 0.0, 0.0), (0.6, 0.0, 0.0))
    assert res.error_code == "EXECUTION_FAILED" and "controller manager unavailable" in res.message


# ---------------------------------------------------------- construction & API
def test_missing_moveit_py_raises_import_error_with_install_instructions(monkeypatch):
    monkeypatch.setitem(sys.modules, "moveit", None)  # make `import moveit...` fail even if installed
    cfg = RobotConfig.from_yaml(ROBOTS / "panda.yaml")
    with pytest.raises(ImportError) as info:
        MoveItArmBackend(cfg)
    assert MOVEIT_INSTALL_HINT in str(info.value) and "moveit-py" in str(info.value)


def test_backend_builds_moveit_py_from_api_when_not_injected():
    cfg = RobotConfig.from_yaml(ROBOTS / "panda.yaml")
    backend = MoveItArmBackend(cfg, api=recording_moveit_api(), node_name="robot_moveit", config_dict={"a": 1})
    assert isinstance(backend._moveit, RecordingMoveItPy)
    assert (backend._moveit.node_name, backend._moveit.config_dict) == ("robot_moveit", {"a": 1})
    assert isinstance(backend, ArmBackend)


def test_tool_link_position_formula():
    cfg = RobotConfig.from_yaml(ROBOTS / "pr2.yaml")
    np.testing.assert_allclose(tool_link_position(cfg.arm("right"), (0.6, -0.2, 0.72)), (0.6, -0.2, 0.90), atol=1e-12)


def test_double_enforces_binding_argument_rules_and_helper_reports_mismatch():
    moveit = RecordingMoveItPy()
    pc = moveit.get_planning_component("panda_arm")
    with pytest.raises(ValueError, match="Cannot specify both"):
        pc.set_goal_state(configuration_name="ready", pose_stamped_msg=FakePoseStamped(), pose_link="panda_hand")
    with pytest.raises(ValueError, match="Must specify both message and corresponding link"):
        pc.set_goal_state(pose_stamped_msg=FakePoseStamped())
    with pytest.raises(ValueError, match="at least one"):
        pc.set_goal_state()
    with pytest.raises(TypeError, match="controllers"):
        moveit.execute(None)
    assert not pc.plan()  # no valid goal set -> failed response
    with pytest.raises(AssertionError, match="expected 1 calls, recorded 2"):
        assert_call_sequence(moveit, [("moveit", "get_planning_component")])
    with pytest.raises(AssertionError, match="planning_component_name"):
        assert_call_sequence(moveit, [("moveit", "get_planning_component", {"planning_component_name": "hand"}),
                                      ("panda_arm", "plan")])
