"""ros2 launch selfsup_perception interaction.launch.py [use_sim:=true|false] [learn:=true|false] [data_dir:=DIR]

Starts the capture, interaction and labeler nodes (and, with learn, the trainer and inference nodes), plus the simulated world when use_sim is true.
On a robot: use_sim:=false, start your camera driver and MoveIt 2 first, and pass
interaction backend/robot_config through config/interaction.yaml.
The same graph without ros2 launch: python -m selfsup_perception.launcher [--no-sim].
"""

from pathlib import PurePosixPath

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
    SIM_WORLD,
    TRAINER,
    config_dir,
    data_overrides,
)


def _node(spec, **kwargs):
    return Node(package="selfsup_perception", executable=spec.executable, name=spec.name, output="screen",
                respawn=True, respawn_delay=2.0,  # the graph outlives a node (see launcher.py)
                parameters=[str(config_dir() / spec.params_file), spec.overrides,
                            _data_parameters(spec, LaunchConfiguration("data_dir"))], **kwargs)


def _data_parameters(spec, data_dir, pretraining: bool = False) -> dict:
    """The node's data folders under the ``data_dir`` launch argument (graph.data_overrides: one layout)."""
    layout = data_overrides("DATA")
    if pretraining:  # the pre-training trainer reads the registration store
        layout["trainer"]["dataset_dir"] = layout["registration"]["dataset_dir"]
    return {k: PathJoinSubstitution([data_dir, PurePosixPath(v).name]) for k, v in layout.get(spec.name, {}).items()}



def generate_launch_description() -> LaunchDescription:
    use_sim = LaunchConfiguration("use_sim")
    learn = LaunchConfiguration("learn")
    return LaunchDescription([
        DeclareLaunchArgument("use_sim", default_value="true", description="start the simulated tabletop"),
        DeclareLaunchArgument("learn", default_value="true", description="start the trainer and inference nodes"),
        DeclareLaunchArgument("data_dir", default_value="data", description="root of the folders the nodes hand "
                              "data through (interactions/, checkpoints/, bags/)"),
        _node(SIM_WORLD, condition=IfCondition(use_sim)),
        _node(CAMERA_CAPTURE),
        _node(INTERACTION),
        _node(LABELER),
        _node(TRAINER, condition=IfCondition(learn)),
        _node(INFERENCE, condition=IfCondition(learn)),
    ])
