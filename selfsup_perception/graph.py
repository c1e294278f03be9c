"""The node graph, defined once for the launch files (launch_ros) and the local launcher.

camera/depth capture -> interaction -> labeler -> registration -> trainer -> inference.
Each entry names the node's module (``python -m``), its executable (``ros2 run``), and
its parameter file in ``config/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from selfsup_perception.ros.package_paths import PACKAGE, config_dir  # noqa: F401 - config_dir re-exported


@dataclass(frozen=True)
class NodeSpec:
    name: str
    module: str  # python -m target, with a main()
    params_file: str  # file name in config/
    overrides: dict = field(default_factory=dict)

    @property
    def executable(self) -> str:
        return self.module.rsplit(".", 1)[1]


SIM_WORLD = NodeSpec("sim_world", f"{PACKAGE}.nodes.sim_world_node", "sim_world.yaml")
CAMERA_CAPTURE = NodeSpec("camera_capture", f"{PACKAGE}.nodes.camera_capture_node", "camera_capture.yaml")
INTERACTION = NodeSpec("interaction", f"{PACKAGE}.nodes.interaction_node", "interaction.yaml")
LABELER = NodeSpec("labeler", f"{PACKAGE}.nodes.labeler_node", "labeler.yaml")
REGISTRATION = NodeSpec("registration", f"{PACKAGE}.nodes.registration_node", "registration.yaml")
TRAINER = NodeSpec("trainer", f"{PACKAGE}.nodes.trainer_node", "trainer.yaml")
INFERENCE = NodeSpec("inference", f"{PACKAGE}.nodes.inference_node", "inference.yaml")


def interaction_graph(with_simulator: bool = True) -> list[NodeSpec]:
    """Capture, interaction and labeling (plus the simulated world standing in for the robot)."""
    return ([SIM_WORLD] if with_simulator else []) + [CAMERA_CAPTURE, INTERACTION, LABELER]


def learning_graph(with_simulator: bool = True, with_registration: bool = False) -> list[NodeSpec]:
    """The whole self-supervised loop: interaction, labels, online training, inference; ``with_registration``
    adds the registration node, whose view pairs of the camera moves train the backbone too (the trainer's
    ``auxiliary_tasks``)."""
    return interaction_graph(with_simulator) + ([REGISTRATION] if with_registration else []) + [TRAINER, INFERENCE]


def pretraining_graph(with_simulator: bool = True) -> list[NodeSpec]:
    """Views registered by depth and pose, region-consistency pre-training, semantic inference.

    Run the trainer with ``task: semantic_segmentation`` (and the registration node with
    ``drive_sim_camera: true`` in simulation).
    """
    return ([SIM_WORLD] if with_simulator else []) + [CAMERA_CAPTURE, REGISTRATION, TRAINER, INFERENCE]


def pretraining_overrides(with_simulator: bool = True, data_dir: str | Path = "data") -> dict[str, dict]:
    """Parameter overrides that turn the shared configs into the pre-training graph."""
    out = {"trainer": {"task": "semantic_segmentation",
                       "dataset_dir": data_overrides(data_dir, pretraining=True)["trainer"]["dataset_dir"],
                       "min_samples": 1, "batch_size": 4, "torch_threads": 1}}
    if with_simulator:
        # one static scene: two arcs of views, then the trainer works on their pairs
        out["registration"] = {"drive_sim_camera": True, "collect_period_s": 5.0, "max_timer_collections": 2}
    return out


# Where the nodes hand data to each other: {node: {parameter: folder under the data root}}.
# interactions/ (interaction -> labeler -> trainer), registration/ (registration -> pre-training and the
# trainer's auxiliary tasks),
# checkpoints/ (trainer -> inference), bags/ (recorded interactions).
DATA_LAYOUT: dict[str, dict[str, str]] = {
    "interaction": {"dataset_dir": "interactions", "bag_dir": "bags"},
    "labeler": {"dataset_dir": "interactions"},
    "registration": {"dataset_dir": "registration"},
    # auxiliary_dataset_dir: the camera moves' view pairs the shared backbone also trains on (auxiliary_tasks)
    "trainer": {"dataset_dir": "interactions", "checkpoint_dir": "checkpoints", "auxiliary_dataset_dir": "registration"},
    "inference": {"checkpoint_dir": "checkpoints"},
}


def data_folders(node: str, pretraining: bool = False) -> dict[str, str]:
    """{parameter: folder under the data root} of ``node`` (the one place that knows the layout).

    With ``pretraining`` the trainer reads the registration store (task semantic_segmentation).
    """
    folders = dict(DATA_LAYOUT.get(node, {}))
    if pretraining and node == "trainer":
        folders["dataset_dir"] = DATA_LAYOUT["registration"]["dataset_dir"]
    return folders


def data_overrides(data_dir: str | Path, pretraining: bool = False) -> dict[str, dict]:
    """Per-node overrides that put every hand-over folder under ``data_dir`` (:data:`DATA_LAYOUT`)."""
    root = Path(data_dir)
    return {node: {param: str(root / sub) for param, sub in data_folders(node, pretraining).items()}
            for node in DATA_LAYOUT}


def merge_overrides(*layers: dict[str, dict]) -> dict[str, dict]:
    """Per-node parameter overrides, later layers winning."""
    out: dict[str, dict] = {}
    for layer in layers:
        for node, params in layer.items():
            out.setdefault(node, {}).update(params)
    return out


#: Interaction node parameters that name the MoveIt configuration (robot/moveit_config.py), also
#: the launch arguments of interaction.launch.py of the same names.
MOVEIT_PARAMETERS = ("moveit_config_package", "moveit_urdf", "moveit_srdf", "moveit_kinematics",
                     "moveit_joint_limits", "moveit_pilz_cartesian_limits", "moveit_planning_pipelines",
                     "moveit_cpp_config", "moveit_xacro_args")


def moveit_overrides(robot_config: str, **moveit: str) -> dict[str, dict]:
    """Overrides that drive the interaction node's arm through MoveIt 2 with the given configuration.

    ``robot_config``: the stack's robot YAML (config/robots/panda.yaml); ``moveit``: any of
    :data:`MOVEIT_PARAMETERS` (a config package and/or explicit files). Empty values are left out.
    """
    unknown = sorted(set(moveit) - set(MOVEIT_PARAMETERS))
    if unknown:
        raise ValueError(f"unknown MoveIt parameters {unknown}; known: {', '.join(MOVEIT_PARAMETERS)}")
    if not robot_config:
        raise ValueError("the moveit backend needs a robot config (e.g. config/robots/panda.yaml)")
    return {"interaction": {"backend": "moveit", "robot_config": robot_config,
                            **{k: v for k, v in moveit.items() if v}}}
