"""The trainer node with auxiliary tasks on the instance net's backbone, over DDS: the camera moves' view pairs
pre-train it before any label exists, then alternate with the instance task; restarts resume both."""

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_helpers import wait_for, wait_future
from sample_factory import labeled_store, make_sample
from view_factory import add_plane_view

from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.registration.pair_store import PairStore
from selfsup_perception.msg import ModelVersion, TrainerStatus
from selfsup_perception.nodes.inference_node import InferenceNode
from selfsup_perception.nodes.trainer_node import TrainerNode
from selfsup_perception.ros.conversions import rgb_to_msg
from selfsup_perception.srv import ComputeDescriptors

pytestmark = pytest.mark.ros
LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
H, W = 48, 64


def params(tmp_path, **extra):
    values = dict(dataset_dir=str(tmp_path / "ds"), checkpoint_dir=str(tmp_path / "ck"), input_width=W,
                  input_height=H, steps_per_round=2, batch_size=2, min_samples=2, update_interval_s=0.0,
                  mask_loss="bce", auxiliary_tasks="descriptors",
                  auxiliary_dataset_dir=str(tmp_path / "reg"), auxiliary_steps_per_round=1,
                  pretraining_steps_per_round=2, auxiliary_batch_size=2)
    values.update({"max_rounds": 1, **extra})
    return [Parameter(k, value=v) for k, v in values.items()]


def stop(spinner, node):
    spinner.nodes.remove(node)
    spinner.executor.remove_node(node)
    node.destroy_node()


def test_camera_moves_pretrain_the_instance_backbone_then_alternate_and_resume(spinner, tmp_path):
    store = PairStore(tmp_path / "reg")
    for tx in (0.0, 0.1, 0.2):
        add_plane_view(store, tx, with_regions=False)
    listener = spinner.add(rclpy.create_node("shared_backbone_listener"))
    versions, statuses = [], []
    listener.create_subscription(ModelVersion, "trainer/model_versions", versions.append, LATCHED)
    listener.create_subscription(TrainerStatus, "trainer/status", statuses.append, 10)

    # 1. no labels yet: one pre-training round on the view pairs, no instance version
    trainer = spinner.add(TrainerNode(parameter_overrides=params(tmp_path)))
    assert wait_for(lambda: statuses and "max_rounds" in statuses[-1].message, 120), [s.message for s in statuses[-3:]]
    assert statuses[-1].state == "paused" and "pre-training the backbone: descriptors v1 (2 steps" in \
        statuses[-1].message and "3 view pairs" in statuses[-1].message
    assert not versions  # only instance versions are published, after the gate
    meta = ckpt.read_meta(tmp_path / "ck" / "descriptors" / "v00001")
    assert meta["pretraining"] is True and meta["shared_backbone"]["tasks"] == ["instance_segmentation", "descriptors"]
    stop(spinner, trainer)  # a kill between rounds

    # 2. labels arrive; the restarted node resumes the pre-trained backbone and alternates the two tasks
    labeled_store(tmp_path / "ds", 6, H, W, last_negative=True)
    trainer = spinner.add(TrainerNode(parameter_overrides=params(tmp_path)))
    assert trainer.online.auxiliary["descriptors"].trainer.step == 2 and trainer.online.version is None
    assert wait_for(lambda: versions, 120), "no instance version published"
    v = versions[0]
    assert v.task == "instance_segmentation" and v.version == 1 and v.step == 2
    assert v.promotion_reason and v.validation_names  # judged by the gate as without auxiliary tasks
    meta = ckpt.read_meta(v.checkpoint_path)
    assert meta["shared_backbone"]["steps"] == {"instance_segmentation": 2, "descriptors": 3}
    assert meta["ema_decay"] == 0.99
    assert wait_for(lambda: (tmp_path / "ck" / "descriptors" / "v00002").is_dir(), 10)
    assert wait_for(lambda: statuses and "descriptors_loss" in statuses[-1].loss_names, 10)
    stop(spinner, trainer)

    # 3. another restart: both tasks continue from their checkpoints, on one backbone module
    trainer = spinner.add(TrainerNode(parameter_overrides=params(tmp_path)))
    online = trainer.online
    assert online.version == 1 and online.trainer.step == 2 and online.auxiliary["descriptors"].trainer.step == 3
    assert online.auxiliary["descriptors"].trainer.model.backbone is online.trainer.model.backbone
    stop(spinner, trainer)

    # the auxiliary task's checkpoints are ordinary descriptor models: the inference node serves them
    spinner.add(InferenceNode(parameter_overrides=[Parameter("checkpoint_dir", value=str(tmp_path / "ck"))]))
    client_node = spinner.add(rclpy.create_node("shared_descriptor_client"))
    client = client_node.create_client(ComputeDescriptors, "compute_descriptors")
    assert client.wait_for_service(timeout_sec=10)
    rgb = make_sample("q", h=H, w=W).before.rgb
    res = wait_future(client.call_async(ComputeDescriptors.Request(image=rgb_to_msg(rgb))), 30)
    assert res.success, res.message
    assert res.descriptors.model_version == "descriptors/v2"
    desc = np.asarray(res.descriptors.data, dtype=np.float32).reshape(H, W, res.descriptors.dimension)
    assert np.isfinite(desc).all()


def test_auxiliary_tasks_are_refused_beside_another_task(spinner, tmp_path):
    with pytest.raises(ValueError, match="auxiliary_tasks train beside instance_segmentation"):
        TrainerNode(parameter_overrides=params(tmp_path) + [Parameter("task", value="descriptors")])


def test_learning_rate_reaches_every_task_and_auxiliary_tasks_are_read_only(spinner, tmp_path):
    from test_node_parameters import set_param

    node = spinner.add(TrainerNode(parameter_overrides=params(tmp_path, max_rounds=0)))
    client = spinner.add(rclpy.create_node("shared_param_client"))
    ok = set_param(client, "trainer", "learning_rate", 0.02)
    assert ok.successful, ok.reason
    assert wait_for(lambda: node.online.auxiliary["descriptors"].trainer.config.lr == 0.02)
    assert node.online.trainer.config.lr == 0.02
    refused = set_param(client, "trainer", "auxiliary_tasks", "")
    assert not refused.successful and "read-only" in refused.reason


def test_an_empty_string_override_from_the_launcher_reaches_the_node():
    """`-p name:=` with nothing after it makes rcl refuse the whole command line (the trainer died at start)."""
    from selfsup_perception.graph import TRAINER
    from selfsup_perception.launcher import node_command

    cmd = node_command(TRAINER, {"labeler": ""})  # trainer.yaml says flow: the override must win
    assert "labeler:=\"\"" in cmd
    context = rclpy.Context()
    rclpy.init(args=["trainer_node"] + cmd[cmd.index("--ros-args"):], context=context)
    try:
        node = rclpy.create_node("trainer", context=context)
        node.declare_parameter("labeler", "flow")
        assert node.get_parameter("labeler").value == ""
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
