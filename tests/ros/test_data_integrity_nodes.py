"""Labeler over DDS: a sample id is stored once, a duplicate never rewrites it, a failed sample is not retried."""

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import wait_for
from sample_factory import make_sample

from selfsup_perception.core.dataset.sample_store import SampleStore
from selfsup_perception.msg import InteractionSample as InteractionSampleMsg
from selfsup_perception.nodes.labeler_node import LabelerNode, make_labeler
from selfsup_perception.ros.conversions import sample_to_msg

pytestmark = pytest.mark.ros
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class BrokenLabeler:
    """A labeler that raises (what a bug or an unexpected image does to the real ones)."""

    name = "flow"

    def label(self, sample):
        raise RuntimeError("optical flow failed")


def test_duplicate_ids_are_refused_and_failed_samples_are_not_retried(spinner, tmp_path):
    labeler = spinner.add(LabelerNode(parameter_overrides=[Parameter("dataset_dir", value=str(tmp_path))]))
    node = spinner.add(rclpy.create_node("integrity_test"))
    pub = node.create_publisher(InteractionSampleMsg, "interaction/samples", RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 10)
    store = SampleStore(tmp_path)
    first = make_sample("dup", h=48, w=64, seed=1)
    pub.publish(sample_to_msg(first))
    assert wait_for(lambda: store.labeled_ids("flow") == ["dup"], 30)
    label_before = store.read_label("dup", "flow")
    # a different sample under the same id (other size, other content): refused, nothing rewritten
    pub.publish(sample_to_msg(make_sample("dup", h=24, w=32, seed=2)))
    assert wait_for(lambda: labeler.counts["refused"] == 1, 10)
    pub.publish(sample_to_msg(first))  # the same sample again: ignored
    assert wait_for(lambda: labeler.counts["duplicate"] == 1, 10)
    stored = store.read_sample("dup")
    assert stored.before.rgb.shape == (48, 64, 3) and np.array_equal(stored.before.rgb, first.before.rgb)
    label_after = store.read_label("dup", "flow")
    assert label_after.mask.shape == (48, 64) and np.array_equal(label_after.mask, label_before.mask)
    assert label_after.reason == label_before.reason
    # a sample the labeler cannot label is stored with a failed label (and the reason)
    labeler.labeler = BrokenLabeler()
    pub.publish(sample_to_msg(make_sample("broken", h=48, w=64, seed=3)))
    assert wait_for(lambda: "broken" in store.labeled_ids("flow"), 20)
    failed = store.read_label("broken", "flow")
    assert not failed.kept and "optical flow failed" in failed.reason
    assert store.unlabeled_ids("flow") == []  # a restarted labeler will not retry it
    # still labeling new samples
    labeler.labeler = make_labeler(labeler.params)
    pub.publish(sample_to_msg(make_sample("next", h=48, w=64, seed=4)))
    assert wait_for(lambda: "next" in store.labeled_ids("flow"), 30)


def test_trainer_retention_keeps_the_newest_and_the_served_versions(spinner, tmp_path):
    from test_trainer_inference_nodes import labeled_store, trainer_params

    from selfsup_perception.core.learning.serving import checkpoints as ckpt
    from selfsup_perception.nodes.trainer_node import TrainerNode

    labeled_store(tmp_path / "ds")
    (tmp_path / "ck" / "instance_segmentation").mkdir(parents=True)
    trainer = spinner.add(TrainerNode(parameter_overrides=trainer_params(tmp_path, rounds=5)
                                      + [Parameter("keep_versions", value=2)]))
    first = tmp_path / "ck" / "instance_segmentation" / "v00001"
    assert wait_for(first.exists, 120)
    ckpt.pin_version(first, "served")  # what the inference node does for the version it serves
    assert wait_for(lambda: trainer.rounds == 5, 180)
    assert [v.version for v in ckpt.list_versions(tmp_path / "ck", "instance_segmentation")] == [1, 4, 5]


class BlockedLabeler:
    """A labeler that has not got round to labelling yet (what a kill -9 interrupts)."""

    name = "flow"

    def __init__(self):
        import threading

        self.release = threading.Event()

    def label(self, sample):
        self.release.wait(30)
        raise RuntimeError("released")


def test_samples_are_stored_before_they_wait_for_the_labeler(spinner, tmp_path):
    labeler = spinner.add(LabelerNode(parameter_overrides=[Parameter("dataset_dir", value=str(tmp_path))]))
    blocked = BlockedLabeler()
    labeler.labeler = blocked
    node = spinner.add(rclpy.create_node("persist_test"))
    pub = node.create_publisher(InteractionSampleMsg, "interaction/samples", RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 10)
    store = SampleStore(tmp_path)
    for i in range(4):
        pub.publish(sample_to_msg(make_sample(f"q{i}", h=48, w=64, seed=10 + i)))
    # every sample is on disk while the labeler is still busy with the first: a kill -9 now loses none of them,
    # and a restarted labeler labels them (unlabeled_ids is what it resumes from)
    assert wait_for(lambda: len(store.sample_ids()) == 4, 20)
    assert store.labeled_ids("flow") == [] and sorted(store.unlabeled_ids("flow")) == ["q0", "q1", "q2", "q3"]
    blocked.release.set()
    assert wait_for(lambda: len(store.labeled_ids("flow")) == 4, 30)
