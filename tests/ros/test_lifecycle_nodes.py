"""Inference and trainer as lifecycle nodes, driven over the standard lifecycle_msgs services.

configure -> activate -> deactivate -> cleanup, with what each state allows (serving,
training) checked over DDS, and failed configures (missing checkpoint folder, a device that
does not exist) that answer FAILURE and leave the node up and unconfigured.
"""

import pytest
import rclpy
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_helpers import wait_for, wait_future
from sample_factory import labeled_store as _labeled_store
from sample_factory import make_sample

from selfsup_perception.msg import ModelVersion
from selfsup_perception.nodes.inference_node import InferenceNode
from selfsup_perception.nodes.trainer_node import TrainerNode
from selfsup_perception.ros.conversions import rgb_to_msg
from selfsup_perception.srv import SegmentImage

pytestmark = pytest.mark.ros
LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
H, W = 48, 64


class Lifecycle:
    """A client of a node's ~/change_state and ~/get_state services."""

    def __init__(self, client_node, name):
        self.change = client_node.create_client(ChangeState, f"{name}/change_state")
        self.get = client_node.create_client(GetState, f"{name}/get_state")
        assert self.change.wait_for_service(timeout_sec=10) and self.get.wait_for_service(timeout_sec=10)

    def state(self) -> str:
        return wait_future(self.get.call_async(GetState.Request()), 10).current_state.label

    def transition(self, transition_id) -> bool:
        request = ChangeState.Request()
        request.transition.id = transition_id
        return wait_future(self.change.call_async(request), 60).success


def labeled_store(root, n=4):
    return _labeled_store(root, n, H, W)


def trained_checkpoints(tmp_path):
    """One instance-segmentation version (no promotion ledger: the newest valid version is served)."""
    from selfsup_perception.core.learning.tasks.instance import InstanceSegmentationTask
    from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig

    trainer = Trainer(InstanceSegmentationTask(), TrainerConfig(input_size=(W, H), log_every=0))
    assert trainer.save_checkpoint(tmp_path / "ck").name == "v00001"
    return tmp_path / "ck"


def test_inference_lifecycle_over_the_standard_services(spinner, tmp_path):
    ck = tmp_path / "ck"
    node = spinner.add(InferenceNode(parameter_overrides=[
        Parameter("checkpoint_dir", value=str(ck)), Parameter("autostart", value=False)]))
    client = spinner.add(rclpy.create_node("inference_lifecycle_client"))
    lc = Lifecycle(client, "inference")
    seg = client.create_client(SegmentImage, "segment_image")
    image = rgb_to_msg(make_sample("q", h=H, w=W).before.rgb)

    def segment():
        return wait_future(seg.call_async(SegmentImage.Request(image=image)), 30)

    assert lc.state() == "unconfigured"
    # configure without the checkpoint folder: FAILURE, the node stays up and unconfigured
    assert not lc.transition(Transition.TRANSITION_CONFIGURE)
    assert lc.state() == "unconfigured" and node.registry is None
    res = segment()
    assert not res.success and "not active" in res.message
    trained_checkpoints(tmp_path)
    assert lc.transition(Transition.TRANSITION_CONFIGURE)
    assert lc.state() == "inactive" and node.registry is not None
    assert node.registry.active_names() == {"instance_segmentation": "instance_segmentation/v1"}  # loaded in configure
    assert not segment().success  # inactive: not serving yet
    assert lc.transition(Transition.TRANSITION_ACTIVATE) and lc.state() == "active"
    res = segment()
    assert res.success and res.segmentation.model_version == "instance_segmentation/v1", res.message
    assert lc.transition(Transition.TRANSITION_DEACTIVATE) and lc.state() == "inactive"
    res = segment()
    assert not res.success and "not active" in res.message
    assert lc.transition(Transition.TRANSITION_CLEANUP) and lc.state() == "unconfigured"
    assert node.registry is None  # models released
    assert not lc.transition(Transition.TRANSITION_ACTIVATE)  # not a transition of 'unconfigured'
    assert lc.transition(Transition.TRANSITION_CONFIGURE) and lc.transition(Transition.TRANSITION_ACTIVATE)
    assert segment().success


def test_inference_autostart_waits_for_the_checkpoint_folder(spinner, tmp_path):
    spinner.add(InferenceNode(parameter_overrides=[Parameter("checkpoint_dir", value=str(tmp_path / "ck"))]))
    client = spinner.add(rclpy.create_node("autostart_client"))
    lc = Lifecycle(client, "inference")
    assert lc.state() == "unconfigured"
    (tmp_path / "ck").mkdir()  # the trainer creates it
    assert wait_for(lambda: lc.state() == "active", 10)


def test_an_unavailable_device_fails_configure_of_both_nodes(spinner, tmp_path):
    (tmp_path / "ck").mkdir()
    spinner.add(InferenceNode(parameter_overrides=[Parameter("checkpoint_dir", value=str(tmp_path / "ck")),
                                                   Parameter("autostart", value=False),
                                                   Parameter("device", value="cuda:99")]))
    spinner.add(TrainerNode(parameter_overrides=[Parameter("checkpoint_dir", value=str(tmp_path / "ck")),
                                                 Parameter("dataset_dir", value=str(tmp_path / "ds")),
                                                 Parameter("autostart", value=False), Parameter("device", value="cuda:99")]))
    client = spinner.add(rclpy.create_node("device_client"))
    for name in ("inference", "trainer"):
        lc = Lifecycle(client, name)
        assert not lc.transition(Transition.TRANSITION_CONFIGURE), name
        assert lc.state() == "unconfigured", name


def test_trainer_lifecycle_trains_only_while_active(spinner, tmp_path):
    labeled_store(tmp_path / "ds")
    ck = tmp_path / "ck"
    node = spinner.add(TrainerNode(parameter_overrides=[
        Parameter("dataset_dir", value=str(tmp_path / "ds")), Parameter("checkpoint_dir", value=str(ck)),
        Parameter("input_width", value=W), Parameter("input_height", value=H), Parameter("steps_per_round", value=1),
        Parameter("batch_size", value=2), Parameter("min_samples", value=2), Parameter("update_interval_s", value=0.2),
        Parameter("mask_loss", value="bce"), Parameter("autostart", value=False)]))
    client = spinner.add(rclpy.create_node("trainer_lifecycle_client"))
    versions = []
    client.create_subscription(ModelVersion, "trainer/model_versions", versions.append, LATCHED)
    lc = Lifecycle(client, "trainer")
    assert lc.state() == "unconfigured" and node.online is None and not ck.exists()
    assert lc.transition(Transition.TRANSITION_CONFIGURE)
    assert lc.state() == "inactive" and node.online is not None and ck.is_dir()  # model built, folder created
    assert not wait_for(lambda: versions, 1.0), "an inactive trainer must not train"
    assert lc.transition(Transition.TRANSITION_ACTIVATE)
    assert wait_for(lambda: len(versions) >= 2, 60), "no versions while active"
    assert lc.transition(Transition.TRANSITION_DEACTIVATE) and lc.state() == "inactive"
    n = len(versions)
    step = node.online.trainer.step
    assert not wait_for(lambda: len(versions) > n, 1.0) and node.online.trainer.step == step
    assert lc.transition(Transition.TRANSITION_CLEANUP) and lc.state() == "unconfigured" and node.online is None
    # configure again: resumes from the newest checkpoint
    assert lc.transition(Transition.TRANSITION_CONFIGURE)
    assert node.online.trainer.step == step and node.online.version == versions[-1].version
    assert State.PRIMARY_STATE_INACTIVE == 2  # lifecycle_msgs constants as used by ros2 lifecycle
