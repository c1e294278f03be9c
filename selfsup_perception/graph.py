"""The node graph, defined once for the launch files (launch_ros) and the local launcher.

camera/depth capture -> interaction -> labeler -> registration -> trainer -> inference.
Each entry names the node's module (``python -m``), its executable (``ros2 run``), and
its parameter file in ``config/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "selfsup_perception"


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


def learning_graph(with_simulator: bool = True) -> list[NodeSpec]:
    """The whole self-supervised loop: interaction, labels, online training, inference."""
    return interaction_graph(with_simulator) + [TRAINER, INFERENCE]


def pretraining_graph(with_simulator: bool = True) -> list[NodeSpec]:
    """Views registered by depth and pose, region-consistency pre-training, semantic inference.

    Run the trainer with ``task: semantic_segmentation`` (and the registration node with
    ``drive_sim_camera: true`` in simulation).
    """
    return ([SIM_WORLD] if with_simulator else []) + [CAMERA_CAPTURE, REGISTRATION, TRAINER, INFERENCE]


def pretraining_overrides(with_simulator: bool = True, data_dir: str | Path = "data") -> dict[str, dict]:
    """Parameter overrides that turn the shared configs into the pre-training graph."""
    out = {"trainer": {"task": "semantic_segmentation", "dataset_dir": data_overrides(data_dir)["registration"][
        "dataset_dir"], "min_samples": 1, "batch_size": 4, "torch_threads": 1}}
    if with_simulator:
        # one static scene: two arcs of views, then the trainer works on their pairs
        out["registration"] = {"drive_sim_camera": True, "collect_period_s": 5.0, "max_timer_collections": 2}
    return out


def data_overrides(data_dir: str | Path) -> dict[str, dict]:
    """Where the nodes hand data to each other, set from one root (the one place that knows the layout).

    ``<data_dir>/interactions`` (interaction -> labeler -> trainer), ``<data_dir>/registration``
    (registration -> pre-training), ``<data_dir>/checkpoints`` (trainer -> inference),
    ``<data_dir>/bags`` (recorded interactions). A trainer with ``task: semantic_segmentation``
    reads the registration store instead (:func:`pretraining_overrides` sets it).
    """
    root = Path(data_dir)
    interactions, checkpoints = str(root / "interactions"), str(root / "checkpoints")
    return {
        "interaction": {"dataset_dir": interactions, "bag_dir": str(root / "bags")},
        "labeler": {"dataset_dir": interactions},
        "registration": {"dataset_dir": str(root / "registration")},
        "trainer": {"dataset_dir": interactions, "checkpoint_dir": checkpoints},
        "inference": {"checkpoint_dir": checkpoints},
    }


def merge_overrides(*layers: dict[str, dict]) -> dict[str, dict]:
    """Per-node parameter overrides, later layers winning."""
    out: dict[str, dict] = {}
    for layer in layers:
        for node, params in layer.items():
            out.setdefault(node, {}).update(params)
    return out


def config_dir() -> Path:
    """config/ of the source tree, else the installed share directory."""
    src = Path(__file__).resolve().parents[1] / "config"
    if src.is_dir():
        return src
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(PACKAGE)) / "config"
