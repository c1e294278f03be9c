"""The MoveIt configuration reaches MoveItPy(config_dict=...): URDF, SRDF, kinematics, pipelines, limits.

Checked on the recording double (moveit_py is not installable here) with a fixture shaped
like a MoveIt Setup Assistant package (tests/data/moveit/mini_panda_moveit_config: a
two-joint arm, its .setup_assistant, kinematics, joint limits, Pilz Cartesian limits, OMPL
and Pilz pipelines), found on the ament index as a robot finds moveit_resources_panda_moveit_config.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from selfsup_perception.nodes.interaction_node import InteractionParams, make_arm_backend, moveit_source
from selfsup_perception.robot.moveit_backend import MoveItArmBackend
from selfsup_perception.robot.moveit_config import (
    MoveItConfigError,
    MoveItConfigSource,
    build_moveit_config,
    validate_moveit_config,
)
from doubles.recording_moveit import RecordingMoveItPy, recording_moveit_api

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "data" / "moveit" / "mini_panda_moveit_config"
CONFIG = FIXTURE / "config"
PANDA = ROOT / "config" / "robots" / "panda.yaml"
PIPELINES = ["ompl", "pilz_industrial_motion_planner"]
NODE = SimpleNamespace(get_logger=lambda: logging.getLogger("test_moveit_config"))


@pytest.fixture
def ament_prefix(tmp_path, monkeypatch):
    """An install prefix holding the fixture package, on AMENT_PREFIX_PATH (as `source setup.bash` does)."""
    share = tmp_path / "share"
    shutil.copytree(FIXTURE, share / "mini_panda_moveit_config")
    index = share / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "mini_panda_moveit_config").touch()
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{tmp_path}{os.pathsep}{os.environ.get('AMENT_PREFIX_PATH', '')}")
    return tmp_path


def explicit_params(**overrides) -> InteractionParams:
    values = dict(backend="moveit", robot_config=str(PANDA), moveit_urdf=str(CONFIG / "mini_panda.urdf"),
                  moveit_srdf=str(CONFIG / "mini_panda.srdf"), moveit_kinematics=str(CONFIG / "kinematics.yaml"),
                  moveit_joint_limits=str(CONFIG / "joint_limits.yaml"),
                  moveit_pilz_cartesian_limits=str(CONFIG / "pilz_cartesian_limits.yaml"),
                  moveit_planning_pipelines=f"{CONFIG / 'ompl_planning.yaml'},"
                                            f"{CONFIG / 'pilz_industrial_motion_planner_planning.yaml'}")
    values.update(overrides)
    return InteractionParams(**values)


def assert_complete(config: dict) -> None:
    assert '<robot name="mini_panda">' in config["robot_description"]
    assert '<group name="panda_arm">' in config["robot_description_semantic"]
    assert config["robot_description_kinematics"]["panda_arm"]["kinematics_solver"] == \
        "kdl_kinematics_plugin/KDLKinematicsPlugin"
    planning = config["robot_description_planning"]
    assert planning["joint_limits"]["panda_joint1"]["max_velocity"] == 2.175
    assert planning["cartesian_limits"]["max_trans_vel"] == 1.0  # the Pilz planner's Cartesian limits
    assert config["planning_pipelines"]["pipeline_names"] == PIPELINES
    assert config["ompl"]["planning_plugins"] == ["ompl_interface/OMPLPlanner"]
    assert config["pilz_industrial_motion_planner"]["planning_plugins"] == \
        ["pilz_industrial_motion_planner/CommandPlanner"]
    # the moveit_py parameter file (plan request namespaces of robot/<robot>.yaml)
    assert config["pilz_lin"]["plan_request_params"]["planner_id"] == "LIN"
    assert config["ompl_rrtc"]["plan_request_params"]["planning_pipeline"] == "ompl"


def test_explicit_files_reach_moveitpy_through_the_node_backend_factory():
    backend = make_arm_backend(NODE, explicit_params(), None, moveit_api=recording_moveit_api())
    assert isinstance(backend, MoveItArmBackend)
    moveit = backend._moveit
    assert isinstance(moveit, RecordingMoveItPy)
    assert_complete(moveit.config_dict)


def test_a_config_package_on_the_ament_index_reaches_moveitpy(ament_prefix):
    params = InteractionParams(backend="moveit", robot_config=str(PANDA), moveit_config_package="mini_panda_moveit_config")
    moveit = make_arm_backend(NODE, params, None, moveit_api=recording_moveit_api())._moveit
    assert_complete(moveit.config_dict)


def test_explicit_files_override_the_package(ament_prefix, tmp_path):
    faster = tmp_path / "pilz_cartesian_limits.yaml"
    faster.write_text("cartesian_limits:\n  max_trans_vel: 0.25\n  max_trans_acc: 1.0\n  max_trans_dec: -1.0\n"
                      "  max_rot_vel: 0.5\n")
    params = InteractionParams(backend="moveit", robot_config=str(PANDA), moveit_config_package="mini_panda_moveit_config",
                               moveit_pilz_cartesian_limits=str(faster))
    config = make_arm_backend(NODE, params, None, moveit_api=recording_moveit_api())._moveit.config_dict
    assert config["robot_description_planning"]["cartesian_limits"]["max_trans_vel"] == 0.25
    assert config["robot_description_planning"]["joint_limits"]["panda_joint2"]["max_acceleration"] == 1.875


@pytest.mark.parametrize("missing, named", [
    ("moveit_srdf", "robot_description_semantic"),
    ("moveit_kinematics", "robot_description_kinematics"),
    ("moveit_pilz_cartesian_limits", "cartesian_limits"),
    ("moveit_joint_limits", "joint_limits"),
])
def test_a_missing_piece_is_a_clear_error_naming_it(missing, named):
    with pytest.raises(MoveItConfigError, match=named):
        make_arm_backend(NODE, explicit_params(**{missing: ""}), None, moveit_api=recording_moveit_api())


def test_a_missing_pipeline_is_named():
    params = explicit_params(moveit_planning_pipelines=str(CONFIG / "ompl_planning.yaml"))
    config = build_moveit_config(moveit_source(params))
    assert config["planning_pipelines"]["pipeline_names"] == PIPELINES  # listed by the moveit_cpp file
    with pytest.raises(MoveItConfigError, match="no planning pipeline 'pilz_industrial_motion_planner'"):
        validate_moveit_config(config, PIPELINES)
    with pytest.raises(MoveItConfigError, match="pilz_industrial_motion_planner"):
        make_arm_backend(NODE, params, None, moveit_api=recording_moveit_api())


def test_no_configuration_and_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(MoveItConfigError, match="needs a MoveIt configuration"):
        make_arm_backend(NODE, InteractionParams(backend="moveit", robot_config=str(PANDA)), None,
                         moveit_api=recording_moveit_api())
    with pytest.raises(MoveItConfigError, match="does not exist"):
        make_arm_backend(NODE, explicit_params(moveit_urdf=str(tmp_path / "nope.urdf")), None,
                         moveit_api=recording_moveit_api())
    (tmp_path / "bad.yaml").write_text("panda_arm: [unclosed\n")
    with pytest.raises(MoveItConfigError, match="not valid YAML"):
        make_arm_backend(NODE, explicit_params(moveit_kinematics=str(tmp_path / "bad.yaml")), None,
                         moveit_api=recording_moveit_api())
    with pytest.raises(MoveItConfigError, match="not found on the ament index"):
        build_moveit_config(MoveItConfigSource(package="no_such_moveit_config"))


def test_the_interaction_node_refuses_to_start_without_the_srdf(tmp_path):
    """Start-up error of the real node process: one line naming the missing piece, exit status 2."""
    p = explicit_params()
    args = ["-p", "backend:=moveit", "-p", f"robot_config:={p.robot_config}", "-p", f"moveit_urdf:={p.moveit_urdf}",
            "-p", f"moveit_kinematics:={p.moveit_kinematics}", "-p", f"moveit_joint_limits:={p.moveit_joint_limits}",
            "-p", f"dataset_dir:={tmp_path / 'ds'}", "-p", "record_bag:=false"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "selfsup_perception.nodes.interaction_node", "--ros-args", *args],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "robot_description_semantic" in done.stderr and "moveit_srdf" in done.stderr, done.stderr[-2000:]


def test_the_launcher_hands_a_config_package_to_the_interaction_node(ament_prefix, tmp_path):
    """graph.moveit_overrides -> the launcher's node command -> the node accepts the configuration and
    gets as far as constructing MoveItPy (not installable here: a one-line error naming moveit_py)."""
    from selfsup_perception.graph import INTERACTION, moveit_overrides
    from selfsup_perception.launcher import node_command

    overrides = moveit_overrides(str(PANDA), moveit_config_package="mini_panda_moveit_config")["interaction"]
    overrides.update(dataset_dir=str(tmp_path / "ds"), record_bag=False)
    cmd = node_command(INTERACTION, overrides)
    assert "backend:=moveit" in cmd and "moveit_config_package:=mini_panda_moveit_config" in cmd
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot start" in done.stderr and "needs moveit_py" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    with pytest.raises(ValueError, match="unknown MoveIt parameters"):
        moveit_overrides(str(PANDA), moveit_srdf_file="x.srdf")


def test_launch_arguments_match_the_node_parameters():
    """interaction.launch.py declares one argument per MOVEIT_PARAMETERS entry; each must be a node parameter."""
    from selfsup_perception.graph import MOVEIT_PARAMETERS

    node_params = {f.name for f in dataclasses.fields(InteractionParams) if f.name.startswith("moveit_")}
    assert set(MOVEIT_PARAMETERS) == node_params
    launch = (ROOT / "launch" / "interaction.launch.py").read_text()
    assert "MOVEIT_PARAMETERS" in launch and '"backend", "robot_config"' in launch
