"""ros2 launch selfsup_perception pretraining.launch.py [use_sim:=true|false] [data_dir:=DIR]

Registered views -> region-consistency pre-training of semantic segmentation -> inference.
Starts capture, registration, trainer (task semantic_segmentation on the registration
store) and inference, plus the simulated world (which the registration node then drives
around the static scene) when use_sim is true.
The same graph without ros2 launch: python -m selfsup_perception.launcher --pretraining.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node

from selfsup_perception.graph import (
    CAMERA_CAPTURE,
    INFERENCE,
    REGISTRATION,
    SIM_WORLD,
    TRAINER,
    config_dir,
    data_folders,
    pretraining_overrides,
)


def _node(spec, overrides, **kwargs):
    overrides = {k: v for k, v in overrides.items() if k != "dataset_dir"}  # from data_dir below
    return Node(package="selfsup_perception", executable=spec.executable, name=spec.name, output="screen",
                respawn=True, respawn_delay=2.0,  # the graph outlives a node (see launcher.py)
                parameters=[str(config_dir() / spec.params_file), {**spec.overrides, **overrides},
                            _data_parameters(spec, LaunchConfiguration("data_dir"))], **kwargs)


def _data_parameters(spec, data_dir) -> dict:
    """The node's data folders under the ``data_dir`` launch argument (graph.DATA_LAYOUT: one layout)."""
    return {k: PathJoinSubstitution([data_dir, sub]) for k, sub in data_folders(spec.name, pretraining=True).items()}


def generate_launch_description() -> LaunchDescription:
    use_sim = LaunchConfiguration("use_sim")
    o = pretraining_overrides(with_simulator=True)
    return LaunchDescription([
        DeclareLaunchArgument("use_sim", default_value="true", description="start the simulated tabletop"),
        DeclareLaunchArgument("data_dir", default_value="data", description="root of the folders the nodes hand "
                              "data through (registration/, checkpoints/)"),
        _node(SIM_WORLD, {}, condition=IfCondition(use_sim)),
        _node(CAMERA_CAPTURE, {}),
        _node(REGISTRATION, o.get("registration", {})),
        _node(TRAINER, o["trainer"]),
        _node(INFERENCE, {}),
    ])
