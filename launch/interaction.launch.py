"""ros2 launch selfsup_perception interaction.launch.py [use_sim:=true|false] [learn:=true|false] [data_dir:=DIR] [MoveIt arguments]

Starts the capture, interaction and labeler nodes (and, with learn, the trainer and inference nodes), plus the simulated world when use_sim is true.
On a robot: use_sim:=false, start your camera driver, robot state publisher and controllers
first, and drive the arm through MoveIt 2 with a MoveIt configuration (docs/real_robot.md):

    ros2 launch selfsup_perception interaction.launch.py use_sim:=false backend:=moveit \\
        robot_config:=$(ros2 pkg prefix selfsup_perception)/share/selfsup_perception/config/robots/panda.yaml \\
        moveit_config_package:=moveit_resources_panda_moveit_config

or name the files (moveit_urdf, moveit_srdf, moveit_kinematics, moveit_joint_limits,
moveit_pilz_cartesian_limits, moveit_planning_pipelines, moveit_cpp_config); they override the
package's. The interaction node merges them into the dictionary MoveItPy(config_dict=...) gets
(selfsup_perception/robot/moveit_config.py) and refuses to start, naming the piece, when one is missing.
The same graph without ros2 launch: python -m selfsup_perception.launcher [--no-sim] [--robot-config ...
--moveit-config-package ...].
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node

from selfsup_perception.graph import (
    CAMERA_CAPTURE,
    INFERENCE,
    INTERACTION,
    LABELER,
    MOVEIT_PARAMETERS,
    SIM_WORLD,
    TRAINER,
    config_dir,
    data_folders,
)


def _node(spec, extra=None, **kwargs):
    return Node(package="selfsup_perception", executable=spec.executable, name=spec.name, output="screen",
                respawn=True, respawn_delay=2.0,  # the graph outlives a node (see launcher.py)
                parameters=[str(config_dir() / spec.params_file), spec.overrides,
                            _data_parameters(spec, LaunchConfiguration("data_dir")), extra or {}], **kwargs)


def _data_parameters(spec, data_dir) -> dict:
    """The node's data folders under the ``data_dir`` launch argument (graph.DATA_LAYOUT: one layout)."""
    return {k: PathJoinSubstitution([data_dir, sub]) for k, sub in data_folders(spec.name).items()}


def generate_launch_description() -> LaunchDescription:
    use_sim = LaunchConfiguration("use_sim")
    learn = LaunchConfiguration("learn")
    arm = {name: LaunchConfiguration(name) for name in ("backend", "robot_config") + MOVEIT_PARAMETERS}
    return LaunchDescription([
        DeclareLaunchArgument("use_sim", default_value="true", description="start the simulated tabletop"),
        DeclareLaunchArgument("learn", default_value="true", description="start the trainer and inference nodes"),
        DeclareLaunchArgument("data_dir", default_value="data", description="root of the folders the nodes hand "
                              "data through (interactions/, checkpoints/, bags/)"),
        DeclareLaunchArgument("backend", default_value="sim", description="arm backend: sim | moveit"),
        DeclareLaunchArgument("robot_config", default_value="", description="moveit: robot YAML (config/robots/)"),
        *[DeclareLaunchArgument(name, default_value="", description=f"moveit: interaction parameter {name}")
          for name in MOVEIT_PARAMETERS],
        _node(SIM_WORLD, condition=IfCondition(use_sim)),
        _node(CAMERA_CAPTURE),
        _node(INTERACTION, arm),
        _node(LABELER),
        _node(TRAINER, condition=IfCondition(learn)),
        _node(INFERENCE, condition=IfCondition(learn)),
    ])
