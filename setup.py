"""pip-installable Python part of selfsup_perception (nodes as console scripts).

colcon builds this package with ament_cmake (CMakeLists.txt: interfaces + Python package +
node executables under lib/selfsup_perception). This file serves plain pip installs of the
Python code, e.g. into a training machine's environment; the interfaces then come from a
ROS 2 install or `make setup`.
"""

from setuptools import setup

NODES = ["sim_world_node", "camera_capture_node", "interaction_node", "labeler_node",
         "trainer_node", "inference_node", "registration_node"]

setup(
    entry_points={
        "console_scripts": [f"{n} = selfsup_perception.nodes.{n}:main" for n in NODES]
        + ["selfsup_launch = selfsup_perception.launcher:main"],
    },
)
