"""The shipped node YAML files (config/*.yaml) name only declared parameters, with values the nodes accept.

ROS 2 ignores a parameter a node never declares, so a typo in a YAML file (or a parameter renamed in
the code but not in the file) would be silently dropped on a robot; this test catches it here.
"""

import dataclasses
from pathlib import Path

import pytest
import yaml

from selfsup_perception.nodes.camera_capture_node import CaptureParams
from selfsup_perception.nodes.inference_node import InferenceParams
from selfsup_perception.nodes.interaction_node import InteractionParams
from selfsup_perception.nodes.labeler_node import LabelerParams
from selfsup_perception.nodes.registration_node import RegistrationParams
from selfsup_perception.nodes.sim_world_node import SimWorldParams
from selfsup_perception.nodes.trainer_node import TrainerParams, settings_from_params

CONFIG = Path(__file__).resolve().parents[2] / "config"
PARAMS = {"camera_capture.yaml": CaptureParams, "inference.yaml": InferenceParams,
          "interaction.yaml": InteractionParams, "labeler.yaml": LabelerParams,
          "registration.yaml": RegistrationParams, "sim_world.yaml": SimWorldParams, "trainer.yaml": TrainerParams}


def test_every_node_yaml_is_checked():
    assert {p.name for p in CONFIG.glob("*.yaml")} == set(PARAMS)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_yaml_keys_are_declared_and_values_accepted(name):
    doc = yaml.safe_load((CONFIG / name).read_text())
    assert len(doc) == 1, f"{name}: one node per file"
    values = next(iter(doc.values()))["ros__parameters"]
    fields = {f.name for f in dataclasses.fields(PARAMS[name])}
    unknown = set(values) - fields
    assert not unknown, f"{name}: parameters the node does not declare: {sorted(unknown)}"
    PARAMS[name](**values)  # validated like the node validates them at start


def test_trainer_yaml_reaches_the_online_trainer_settings():
    values = yaml.safe_load((CONFIG / "trainer.yaml").read_text())["trainer"]["ros__parameters"]
    params = dataclasses.replace(TrainerParams(**values), pretrained_backbone="data/checkpoints/semantic_segmentation",
                                 first_version_bar="bottom_up")
    settings = settings_from_params(params)
    assert settings.pretrained_backbone == "data/checkpoints/semantic_segmentation"
    assert settings.promotion_config().first_version_bar == "bottom_up"
    with pytest.raises(ValueError, match="first_version_bar"):
        dataclasses.replace(params, first_version_bar="always")


def test_trainer_yaml_names_every_shared_backbone_parameter():
    values = yaml.safe_load((CONFIG / "trainer.yaml").read_text())["trainer"]["ros__parameters"]
    aux = {f.name for f in dataclasses.fields(TrainerParams)
           if f.name.startswith("auxiliary_") or f.name == "pretraining_steps_per_round"}
    assert aux <= set(values)
    settings = settings_from_params(dataclasses.replace(TrainerParams(**values), auxiliary_tasks="descriptors",
                                                        auxiliary_steps_per_round=7))
    assert settings.auxiliary_config().tasks == ("descriptors",)
    assert settings.auxiliary_config().steps_per_round == 7
    with pytest.raises(ValueError, match="unknown auxiliary tasks"):
        dataclasses.replace(TrainerParams(**values), auxiliary_tasks="descriptor")
