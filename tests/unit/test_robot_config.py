"""RobotConfig / ArmConfig YAML loading, arm choice, and the ArmBackend interface types."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from selfsup_perception.core.types import quaternion_to_matrix
from selfsup_perception.robot import (
    ERROR_CODES,
    ArmBackend,
    InvalidGoalError,
    MotionResult,
    RobotConfig,
    Workspace,
    check_points,
    validate_point,
)
from selfsup_perception.robot.robot_config import TOOL_DOWN_X_AXIS, TOOL_DOWN_Z_AXIS, ArmConfig, MotionPlannerConfig

ROBOTS = Path(__file__).resolve().parents[2] / "config" / "robots"


def _arm(**kw) -> ArmConfig:
    base = dict(name="a", planning_group="g", end_effector_link="tool", shoulder_xyz=(0.0, 0.0, 0.3),
                reach_radius=0.8, out_of_view_configuration="home")
    base.update(kw)
    return ArmConfig(**base)


# ------------------------------------------------------------------- YAML files
def test_panda_yaml_loads_with_expected_values():
    cfg = RobotConfig.from_yaml(ROBOTS / "panda.yaml")
    assert cfg.name == "panda" and cfg.base_frame == "panda_link0"
    (arm,) = cfg.arms
    assert arm.planning_group == "panda_arm" and arm.end_effector_link == "panda_hand"
    assert arm.out_of_view_configuration == "ready"
    assert arm.tcp_offset == pytest.approx(0.1034)
    assert arm.gripper_group == "hand" and arm.gripper_closed_configuration == "close"
    assert (cfg.linear_planner.pipeline, cfg.linear_planner.planner_id) == ("pilz_industrial_motion_planner", "LIN")
    assert cfg.linear_planner.parameter_namespace == "pilz_lin"
    assert cfg.free_planner.pipeline == "ompl"
    assert cfg.workspace == Workspace(x=(0.35, 0.75), y=(-0.25, 0.25), z=(-0.05, 0.5))
    assert (cfg.contact_height, cfg.approach_height, cfg.table_height) == (0.02, 0.15, 0.0)


def test_pr2_yaml_has_two_arms_with_tuck_joints():
    cfg = RobotConfig.from_yaml(ROBOTS / "pr2.yaml")
    assert cfg.base_frame == "base_link"
    assert [a.planning_group for a in cfg.arms] == ["right_arm", "left_arm"]
    right, left = cfg.arm("right"), cfg.arm("left")
    assert right.end_effector_link == "r_wrist_roll_link" and left.end_effector_link == "l_wrist_roll_link"
    assert right.shoulder_xyz[1] < 0 < left.shoulder_xyz[1]
    assert len(right.out_of_view_joints) == 7 and all(j.startswith("r_") for j in right.out_of_view_joints)
    assert right.out_of_view_joints["r_elbow_flex_joint"] == pytest.approx(-2.124408)
    assert right.out_of_view_configuration == "" and right.gripper_group == ""


def test_moveit_py_example_config_selects_pilz_lin():
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((ROBOTS / "moveit_py_panda.yaml").read_text())
    assert "pilz_industrial_motion_planner" in data["planning_pipelines"]["pipeline_names"]
    lin = data["pilz_lin"]["plan_request_params"]
    assert (lin["planning_pipeline"], lin["planner_id"]) == ("pilz_industrial_motion_planner", "LIN")
    assert data["ompl_rrtc"]["plan_request_params"]["planner_id"] == "RRTConnectkConfigDefault"


def test_from_dict_rejects_unknown_keys_and_names_them(tmp_path):
    with pytest.raises(ValueError, match=r"unknown keys \['arm'\]"):
        RobotConfig.from_dict({"name": "r", "base_frame": "b", "arm": []})
    bad = tmp_path / "r.yaml"
    bad.write_text("name: r\nbase_frame: b\narms:\n  - name: a\n    planning_group: g\n    end_effector_link: t\n"
                   "    shoulder_xyz: [0, 0, 0]\n    reach_radius: 1.0\n    out_of_view_configuration: home\n"
                   "    reach: 2\n")
    with pytest.raises(ValueError, match=r"r.yaml: arms\[0\]: unknown keys \['reach'\]"):
        RobotConfig.from_yaml(bad)
    with pytest.raises(FileNotFoundError):
        RobotConfig.from_yaml(tmp_path / "missing.yaml")


def test_from_dict_round_trip_matches_direct_construction():
    direct = RobotConfig("r", "base", (_arm(),), workspace=Workspace((0.0, 1.0), (-1.0, 1.0), (0.0, 1.0)),
                         linear_planner=MotionPlannerConfig("pilz_industrial_motion_planner", "LIN", 0.1, 0.1, 1.0, 1, "lin"))
    loaded = RobotConfig.from_dict({
        "name": "r", "base_frame": "base",
        "arms": [{"name": "a", "planning_group": "g", "end_effector_link": "tool", "shoulder_xyz": [0, 0, 0.3],
                  "reach_radius": 0.8, "out_of_view_configuration": "home"}],
        "workspace": {"x": [0.0, 1.0], "y": [-1.0, 1.0], "z": [0.0, 1.0]},
        "linear_planner": {"pipeline": "pilz_industrial_motion_planner", "planner_id": "LIN",
                           "max_velocity_scaling_factor": 0.1, "max_acceleration_scaling_factor": 0.1,
                           "planning_time": 1.0, "planning_attempts": 1, "parameter_namespace": "lin"},
    })
    assert loaded == direct


# ------------------------------------------------------------------ validation
def test_arm_config_validation_messages():
    with pytest.raises(ValueError, match="exactly one of out_of_view_configuration"):
        _arm(out_of_view_configuration="")
    with pytest.raises(ValueError, match="exactly one of out_of_view_configuration"):
        _arm(out_of_view_joints={"j1": 0.0})
    with pytest.raises(ValueError, match="reach_radius must be positive"):
        _arm(reach_radius=0.0)
    with pytest.raises(ValueError, match="shoulder_xyz must be 3 finite numbers"):
        _arm(shoulder_xyz=(0.0, float("nan"), 0.0))
    with pytest.raises(ValueError, match="zero quaternion"):
        _arm(tool_orientation=(0.0, 0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="max_velocity_scaling_factor must be in"):
        MotionPlannerConfig("ompl", "RRT", max_velocity_scaling_factor=1.5)
    with pytest.raises(ValueError, match="duplicate arm names"):
        RobotConfig("r", "b", (_arm(), _arm()))
    with pytest.raises(ValueError, match="at least one arm"):
        RobotConfig("r", "b", ())


def test_tool_orientation_and_axis_are_normalised():
    arm = _arm(tool_orientation=(2.0, 0.0, 0.0, 0.0), tool_axis=(0.0, 0.0, 5.0))
    assert arm.tool_orientation == (1.0, 0.0, 0.0, 0.0) and arm.tool_axis == (0.0, 0.0, 1.0)


@pytest.mark.parametrize("q, axis", [(TOOL_DOWN_Z_AXIS, (0, 0, 1)), (TOOL_DOWN_X_AXIS, (1, 0, 0))])
def test_tool_down_quaternions_point_the_tool_axis_down(q, axis):
    r = quaternion_to_matrix(np.array(q))
    np.testing.assert_allclose(r @ np.array(axis, float), [0.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


# ------------------------------------------------------------------ arm choice
def test_pr2_choose_arm_picks_nearest_shoulder_that_reaches():
    cfg = RobotConfig.from_yaml(ROBOTS / "pr2.yaml")
    assert cfg.choose_arm((0.6, -0.3, 0.72)).name == "right"
    assert cfg.choose_arm((0.6, 0.3, 0.72)).name == "left"
    # Equidistant: YAML order (right first) breaks the tie.
    assert cfg.choose_arm((0.6, 0.0, 0.72)).name == "right"
    # Both arms ranked, best first.
    assert [a.name for a in cfg.arms_for((0.6, 0.1, 0.72))] == ["left", "right"]
    # Reachable by the left arm only: distance from right shoulder > 0.85.
    p = (0.55, 0.55, 0.72)
    assert cfg.arm("right").shoulder_distance(p) > 0.85 > cfg.arm("left").shoulder_distance(p)
    assert cfg.choose_arm(p).name == "left"
    assert cfg.choose_arm((2.0, 0.0, 0.72)) is None
    assert cfg.choose_arm((float("nan"), 0.0, 0.7)) is None


def test_choose_arm_requires_all_points_reachable_by_one_arm():
    left = _arm(name="left", shoulder_xyz=(0.0, 0.5, 0.0), reach_radius=0.6)
    right = _arm(name="right", shoulder_xyz=(0.0, -0.5, 0.0), reach_radius=0.6)
    cfg = RobotConfig("r", "b", (right, left))
    assert cfg.choose_arm((0.3, 0.4, 0.0)).name == "left"
    assert cfg.choose_arm((0.3, -0.4, 0.0)).name == "right"
    # A push across the midline that neither arm spans.
    assert cfg.choose_arm((0.3, 0.4, 0.0), (0.3, -0.4, 0.0)) is None
    # Sphere boundary is inclusive: |p - shoulder| = 0.6 exactly.
    assert left.reaches((0.6, 0.5, 0.0)) and not left.reaches((0.6001, 0.5, 0.0))


# ------------------------------------------------------------ interface types
def test_validate_point_rejects_nan_wrong_size_and_outside_workspace():
    ws = Workspace()
    np.testing.assert_array_equal(validate_point([0.5, 0.0, 0.0], ws), [0.5, 0.0, 0.0])
    assert validate_point((0.35, -0.25, 0.5), ws).dtype == np.float64  # bounds inclusive
    with pytest.raises(InvalidGoalError, match="NaN or infinite"):
        validate_point((0.5, float("nan"), 0.0), ws)
    with pytest.raises(InvalidGoalError, match="3 components"):
        validate_point((0.5, 0.0), ws)
    with pytest.raises(InvalidGoalError, match="outside the workspace"):
        validate_point((0.8, 0.0, 0.0), ws)
    with pytest.raises(InvalidGoalError, match="not a sequence of 3 numbers"):
        validate_point("abc", ws)
    assert InvalidGoalError.error_code == "INVALID_GOAL" and issubclass(InvalidGoalError, ValueError)
    bad = check_points(ws, start=(0.5, 0.0, 0.0), end=(0.5, float("inf"), 0.0))
    assert bad is not None and bad.error_code == "INVALID_GOAL" and "end" in bad.message
    assert check_points(ws, start=(0.5, 0.0, 0.0)) is None


def test_motion_result_consistency_and_status_mapping():
    assert ERROR_CODES == {"", "UNREACHABLE", "PLANNING_FAILED", "EXECUTION_FAILED", "TIMEOUT", "INVALID_GOAL"}
    with pytest.raises(ValueError, match="contradicts"):
        MotionResult(True, "x", "TIMEOUT")
    with pytest.raises(ValueError, match="contradicts"):
        MotionResult(False, "x", "")
    with pytest.raises(ValueError, match="unknown error_code"):
        MotionResult(False, "x", "BROKEN")
    with pytest.raises(ValueError, match="duration_s"):
        MotionResult(True, "x", "", -1.0)
    # The simulator's (ok, message) pairs.
    assert MotionResult.from_status(True, "push executed", 0.5) == MotionResult(True, "push executed", "", 0.5)
    unreachable = MotionResult.from_status(False, "push start point [0.9, 0.0, 0.02] is unreachable")
    assert unreachable.error_code == "UNREACHABLE"
    assert MotionResult.from_status(False, "the simulation has no arm").error_code == "EXECUTION_FAILED"
    assert MotionResult.from_status(False, "service call timed out").error_code == "TIMEOUT"


def test_workspace_rejects_empty_bounds():
    with pytest.raises(ValueError, match="workspace y bounds"):
        Workspace(y=(0.2, -0.2))


def test_arm_backend_protocol_is_satisfied_by_a_sim_style_adapter():
    class SimLike:
        name = "sim"

        def execute_push(self, start_xyz, end_xyz, *, approach_height=None, contact_height=None, timeout_s=None):
            return MotionResult.from_status(True, "push executed")

        def execute_grasp(self, pick_xyz, place_xyz, *, grasp_height=None, approach_height=None, timeout_s=None):
            return MotionResult.from_status(True, "grasped")

        def move_out_of_view(self, *, timeout_s=None):
            return MotionResult.ok()

        def is_reachable(self, xyz):
            return True

    assert isinstance(SimLike(), ArmBackend)
    assert not isinstance(object(), ArmBackend)
    assert math.isfinite(SimLike().execute_push((0, 0, 0), (1, 0, 0)).duration_s)
