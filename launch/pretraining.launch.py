"""ros2 launch selfsup_perception pretraining.launch.py [use_sim:=true|false]

Registered views -> region-consistency pre-training of semantic segmentation -> inference.
Starts capture, registration, trainer (task semantic_segmentation on the registration
store) and inference, plus the simulated world (which the registration node then drives
around the static scene) when use_sim is true.
The same graph without ros2 launch: python -m selfsup_perception.launcher --pretraining.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from selfsup_perception.graph import (
    CAMERA_CAPTURE,
    INFERENCE,
    REGISTRATION,
    SIM_WORLD,
    TRAINER,
    config_dir,
    pretraining_overrides,
)


def _node(spec, overrides, **kwargs):
    return Node(package="selfsup_perception", executable=spec.executable, name=spec.name, output="screen",
                respawn=True, respawn_delay=2.0,  # the graph outlives a node (see launcher.py)
                parameters=[str(config_dir() / spec.params_file), {**spec.overrides, **overrides}], **kwargs)


def generate_launch_description() -> LaunchDescription:
    use_sim = LaunchConfiguration("use_sim")
    o = pretraining_overrides(with_simulator=True)
    return LaunchDescription([
        DeclareLaunchArgument("use_sim", default_value="true", description="start the simulated tabletop"),
        _node(SIM_WORLD, {}, condition=IfCondition(use_sim)),
        _node(CAMERA_CAPTURE, {}),
        _node(REGISTRATION, o.get("registration", {})),
        _node(TRAINER, o["trainer"]),
        _node(INFERENCE, {}),
    ])
