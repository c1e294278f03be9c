"""Labeler node over DDS: labels published samples, resumes stored ones, survives bad input."""

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import wait_for
from sensor_msgs.msg import Image

from selfsup_perception.core.dataset.sample_store import SampleStore
from selfsup_perception.core.interaction import PlannerConfig, find_object_candidates, fit_table_plane, plan_push
from selfsup_perception.core.types import InteractionKind, InteractionOutcome, InteractionSample
from selfsup_perception.msg import InteractionSample as InteractionSampleMsg
from selfsup_perception.msg import LabeledSample
from selfsup_perception.nodes.labeler_node import LabelerNode
from selfsup_perception.ros.conversions import sample_to_msg
from selfsup_perception.sim.tabletop import CameraConfig, SimConfig, TabletopSim

pytestmark = [pytest.mark.ros, pytest.mark.sim]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def pushes():
    """Two real simulated pushes at 320x240 with the moved object's ground-truth mask."""
    out = []
    with TabletopSim(SimConfig(camera=CameraConfig(width=320, height=240))) as sim:
        for seed in (1, 2):
            sim.reset_scene(seed)
            before, gt = sim.render_with_ground_truth()
            plane = fit_table_plane(before, rng=np.random.default_rng(0))
            push = plan_push(before, find_object_candidates(before, plane), np.random.default_rng(seed),
                             PlannerConfig())
            p0 = sim.object_poses()
            assert sim.execute_push(push.start_point, push.end_point)[0]
            p1 = sim.object_poses()
            moved = max(p0, key=lambda i: np.linalg.norm(p1[i][0] - p0[i][0]))
            out.append((InteractionSample(f"push{seed}", InteractionKind.PUSH, before, sim.render(),
                                          push.action_pixel, push.start_point, push.end_point,
                                          InteractionOutcome.EXECUTED), gt["instance_mask"] == moved))
    return out


def test_labels_published_samples_and_stores_them(spinner, tmp_path, pushes):
    spinner.add(LabelerNode(parameter_overrides=[Parameter("dataset_dir", value=str(tmp_path))]))
    node = spinner.add(rclpy.create_node("labeler_test"))
    labels, overlays = [], []
    node.create_subscription(LabeledSample, "labeler/labeled_samples", labels.append, RELIABLE)
    node.create_subscription(Image, "labeler/overlay", overlays.append, 2)
    pub = node.create_publisher(InteractionSampleMsg, "interaction/samples", RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 10)
    sample, gt = pushes[0]
    msg = sample_to_msg(sample)
    msg.model_version, msg.scene_id = "instance_segmentation/v3", "train-1"  # the model chose this push
    pub.publish(msg)
    assert wait_for(lambda: labels, 30), "no labeled sample published"
    store = SampleStore(tmp_path)
    label = store.read_label("push1", "flow")
    assert labels[0].sample.sample_id == "push1" and labels[0].labeler == "flow"
    assert label.kept and not label.is_negative
    iou = (label.mask & gt).sum() / (label.mask | gt).sum()
    assert iou > 0.6, f"flow label IoU with the pushed object only {iou:.2f}"
    assert store.read_sample("push1").action_pixel == pytest.approx(sample.action_pixel)
    prov = label.provenance  # where the label came from, stored with it
    assert (prov["labeler"], prov["sample_id"], prov["scene_id"]) == ("flow", "push1", "train-1")
    assert prov["model_version"] == "instance_segmentation/v3" and len(prov["config_hash"]) == 16
    assert wait_for(lambda: overlays, 10) and overlays[0].encoding == "rgb8"


def test_resumes_stored_samples_and_survives_a_bad_one(spinner, tmp_path, pushes):
    store = SampleStore(tmp_path)
    for sample, _ in pushes:
        store.write_sample(sample)
    labeler = spinner.add(LabelerNode(parameter_overrides=[Parameter("dataset_dir", value=str(tmp_path))]))
    assert wait_for(lambda: not store.unlabeled_ids("flow"), 60), "stored samples were not labeled on start"
    node = spinner.add(rclpy.create_node("bad_sample_test"))
    pub = node.create_publisher(InteractionSampleMsg, "interaction/samples", RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 10)
    bad = sample_to_msg(pushes[0][0])
    bad.sample_id = "bad"
    bad.after.rgb.encoding = "yuv422"
    pub.publish(bad)
    assert wait_for(lambda: labeler.counts["failed"] == 1, 20)
    good = sample_to_msg(pushes[1][0])
    good.sample_id = "after_bad"
    pub.publish(good)
    assert wait_for(lambda: "after_bad" in store.labeled_ids("flow"), 30)
    assert "bad" not in store.sample_ids()


def test_a_sample_stored_without_a_message_is_found_by_the_rescan(spinner, tmp_path, pushes):
    """The interaction node stores a sample whose message the labeler never gets (published before the
    subscription matched): the idle labeler's rescan of the store labels it anyway."""
    store = SampleStore(tmp_path)
    labeler = spinner.add(LabelerNode(parameter_overrides=[Parameter("dataset_dir", value=str(tmp_path)),
                                                           Parameter("rescan_interval_s", value=0.5)]))
    assert wait_for(lambda: labeler.idle(), 10)
    store.write_sample(pushes[0][0])  # stored, never published
    assert wait_for(lambda: not store.unlabeled_ids("flow"), 30), "a stored sample without a message stayed unlabeled"
    assert store.read_label(pushes[0][0].sample_id, "flow").provenance


def test_grasps_go_to_the_grasp_outcome_labeler_and_pushes_stay_with_flow(spinner, tmp_path, pushes):
    """A real simulated pick-and-place over DDS: labelled by the grasp outcome, stored in the configured label set
    with its own provenance; a push beside it keeps the flow labeler."""
    from selfsup_perception.core.interaction import plan_grasp

    with TabletopSim(SimConfig(camera=CameraConfig(width=320, height=240))) as sim:
        sim.reset_scene(1)
        before, gt = sim.render_with_ground_truth()
        plane = fit_table_plane(before, rng=np.random.default_rng(0))
        g = plan_grasp(before, find_object_candidates(before, plane), np.random.default_rng(1), PlannerConfig())
        ok, message = sim.execute_grasp(g.pick_point, g.place_point)
        assert ok and "grasped and moved object" in message, message
        grasp = InteractionSample("grasp1", InteractionKind.GRASP, before, sim.render(), g.action_pixel,
                                  g.pick_point, g.place_point, InteractionOutcome.EXECUTED, message)
        lifted = gt["instance_mask"] == int(message.rsplit(" ", 1)[1])
    spinner.add(LabelerNode(parameter_overrides=[Parameter("dataset_dir", value=str(tmp_path))]))
    node = spinner.add(rclpy.create_node("grasp_labeler_test"))
    labels = []
    node.create_subscription(LabeledSample, "labeler/labeled_samples", labels.append, RELIABLE)
    pub = node.create_publisher(InteractionSampleMsg, "interaction/samples", RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 10)
    pub.publish(sample_to_msg(grasp))
    pub.publish(sample_to_msg(pushes[0][0]))
    assert wait_for(lambda: len(labels) == 2, 30), f"{len(labels)} labeled samples published"
    assert {m.sample.sample_id: m.labeler for m in labels} == {"grasp1": "grasp_outcome", "push1": "flow"}
    store = SampleStore(tmp_path)
    label = store.read_label("grasp1", "flow")  # the trainer's label set holds it
    assert label.labeler == "grasp_outcome" and label.kept and not label.is_negative, label.reason
    assert (label.mask & lifted).sum() / (label.mask | lifted).sum() >= 0.8
    prov = label.provenance
    assert prov["labeler"] == "grasp_outcome" and prov["sample_id"] == "grasp1" and len(prov["config_hash"]) == 16
    assert "min_vacated_fraction" in prov["config"]
    assert store.read_label("push1", "flow").provenance["labeler"] == "flow"
