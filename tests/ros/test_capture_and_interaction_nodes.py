"""Simulator, camera capture and interaction nodes over real DDS (small images for speed)."""

import numpy as np
import pytest
import rclpy
from rclpy.action import ActionClient
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import wait_for, wait_future
from sensor_msgs.msg import CameraInfo, Image

from selfsup_perception.action import ExecuteInteraction
from selfsup_perception.core.dataset.sample_store import SampleStore
from selfsup_perception.core.geometry.camera import depth_to_world_points
from selfsup_perception.msg import InteractionSample
from selfsup_perception.nodes.camera_capture_node import CameraCaptureNode
from selfsup_perception.nodes.interaction_node import InteractionNode
from selfsup_perception.nodes.sim_world_node import SimWorldNode
from selfsup_perception.ros.conversions import ground_truth_from_sim, point_to_msg, view_msg_to_frame
from selfsup_perception.srv import CaptureView, SimGroundTruth

pytestmark = [pytest.mark.ros, pytest.mark.sim]
SMALL = [Parameter("width", value=160), Parameter("height", value=120), Parameter("publish_rate_hz", value=10.0)]


@pytest.fixture
def world(spinner, tmp_path):
    sim = spinner.add(SimWorldNode(parameter_overrides=SMALL))
    cap = spinner.add(CameraCaptureNode())
    inter = spinner.add(InteractionNode(parameter_overrides=[
        Parameter("dataset_dir", value=str(tmp_path / "ds")),
        Parameter("record_bag", value=True), Parameter("bag_dir", value=str(tmp_path / "bags"))]))
    client = spinner.add(rclpy.create_node("test_client"))
    return sim, cap, inter, client


def test_capture_returns_a_synchronised_view_whose_depth_lands_on_the_table(world):
    sim, _, _, client = world
    capture = client.create_client(CaptureView, "capture_view")
    assert capture.wait_for_service(timeout_sec=10)
    res = wait_future(capture.call_async(CaptureView.Request(timeout_s=5.0)), 15)
    assert res.success, res.message
    frame = view_msg_to_frame(res.view)
    assert frame.shape == (120, 160)
    np.testing.assert_allclose(frame.camera_to_world, sim.sim.camera_to_world, atol=1e-6)
    gt = wait_future(client.create_client(SimGroundTruth, "/sim/ground_truth").call_async(SimGroundTruth.Request()), 10)
    from selfsup_perception.core.image_conversion import image_to_array

    semantic = image_to_array(gt.semantic_mask)
    world_pts = depth_to_world_points(frame.depth, frame.intrinsics, frame.camera_to_world)
    table = semantic == gt.class_names.index("table")
    assert np.nanmedian(np.abs(world_pts[table][:, 2])) < 0.003


def test_capture_times_out_with_a_clear_error(spinner):
    cap = spinner.add(CameraCaptureNode(parameter_overrides=[Parameter("rgb_topic", value="nowhere/rgb")]))
    client = spinner.add(rclpy.create_node("timeout_client"))
    capture = client.create_client(CaptureView, "capture_view")
    assert capture.wait_for_service(timeout_sec=10)
    res = wait_future(capture.call_async(CaptureView.Request(timeout_s=0.5)), 10)
    assert not res.success
    assert "no synchronised rgb/depth/camera_info within 0.5 s" in res.message and "nowhere/rgb" in res.message
    assert cap.context.ok()


def test_bad_encoding_is_dropped_and_the_node_keeps_serving(spinner):
    cap = spinner.add(CameraCaptureNode(parameter_overrides=[
        Parameter("rgb_topic", value="fake/rgb"), Parameter("depth_topic", value="fake/depth"),
        Parameter("camera_info_topic", value="fake/info"), Parameter("pose_topic", value="fake/pose")]))
    node = spinner.add(rclpy.create_node("fake_camera"))
    qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
    pubs = [node.create_publisher(t, n, qos) for t, n in ((Image, "fake/rgb"), (Image, "fake/depth"),
                                                            (CameraInfo, "fake/info"))]
    capture = node.create_client(CaptureView, "capture_view")
    assert capture.wait_for_service(timeout_sec=10)
    assert wait_for(lambda: all(p.get_subscription_count() for p in pubs), 10)
    future = capture.call_async(CaptureView.Request(timeout_s=1.5))

    def publish_bad():
        stamp = node.get_clock().now().to_msg()
        rgb = Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8))
        depth = Image(height=2, width=2, encoding="32FC1", step=8, data=bytes(16))
        info = CameraInfo(width=2, height=2, k=[1.0, 0, 1, 0, 1.0, 1, 0, 0, 1])
        for m in (rgb, depth, info):
            m.header.stamp = stamp
        for p, m in zip(pubs, (rgb, depth, info)):
            p.publish(m)

    for _ in range(5):
        publish_bad()
        if wait_for(lambda: cap.dropped_messages > 0, 0.2):
            break
    res = wait_future(future, 10)
    assert not res.success
    assert cap.dropped_messages >= 1
    assert "yuv422" in res.message or "no valid camera set" in res.message or "no synchronised" in res.message
    # still serving: the next request is answered
    assert not wait_future(capture.call_async(CaptureView.Request(timeout_s=0.2)), 10).success


def _run_goal(client, goal, timeout=120):
    # One action client per test node, kept on it: a fresh client per goal can see the server
    # (wait_for_server) before the server has matched the new client's goal-request endpoint, and its first
    # request is then lost (seen once in CI: a second goal's send_goal future never completed).
    action = getattr(client, "_execute_interaction_client", None)
    if action is None:
        action = ActionClient(client, ExecuteInteraction, "execute_interaction")
        client._execute_interaction_client = action
    assert action.wait_for_server(timeout_sec=10)
    handle = wait_future(action.send_goal_async(goal), 10)
    assert handle.accepted
    return wait_future(handle.get_result_async(), timeout).result


def test_push_records_a_sample_that_moved_the_object(world, tmp_path):
    _, _, inter, client = world
    received = []
    client.create_subscription(InteractionSample, "interaction/samples", received.append, 10)
    inter.set_parameters([Parameter("scene_id", value="train-7")])  # as the demo does when it resets the scene
    gt_client = client.create_client(SimGroundTruth, "/sim/ground_truth")
    before = wait_future(gt_client.call_async(SimGroundTruth.Request()), 10)  # evaluation harness, not the node
    result = _run_goal(client, ExecuteInteraction.Goal(kind=0, auto_select=True, record=True))
    assert result.success, result.message
    after = wait_future(gt_client.call_async(SimGroundTruth.Request()), 10)
    gt = ground_truth_from_sim(before, after)
    store = SampleStore(tmp_path / "ds")
    sample = store.read_sample(result.sample.sample_id)
    moved = gt["moved_instance"]
    assert moved > 0  # the chosen push moved an object
    u, v = sample.action_pixel  # the contact pixel lies on the object that moved
    assert gt["instance_mask_before"][int(round(v)), int(round(u))] == moved
    assert wait_for(lambda: received, 10) and received[0].sample_id == sample.sample_id
    # provenance: the scene, and no model chose this push (geometric candidate: no model is served)
    assert sample.scene_id == received[0].scene_id == "train-7" and sample.model_version == ""


def test_bad_goals_fail_cleanly_and_the_node_keeps_serving(world):
    _, _, inter, client = world
    outside = ExecuteInteraction.Goal(kind=0, auto_select=False, start_point=point_to_msg((3.0, 0, 0.02)),
                                      end_point=point_to_msg((3.1, 0, 0.02)), record=True)
    result = _run_goal(client, outside)
    assert not result.success and result.error_code == "INVALID_GOAL" and "outside the workspace" in result.message
    nan_goal = ExecuteInteraction.Goal(kind=0, auto_select=False, start_point=point_to_msg((float("nan"), 0, 0)),
                                       end_point=point_to_msg((0.5, 0, 0.02)), record=True)
    result = _run_goal(client, nan_goal)
    assert not result.success and result.error_code == "INVALID_GOAL"
    result = _run_goal(client, ExecuteInteraction.Goal(kind=0, auto_select=True, record=False))
    assert result.success, result.message


def test_realistic_world_node_publishes_the_shaken_camera_pose_and_its_classes(spinner):
    from geometry_msgs.msg import PoseStamped

    from selfsup_perception.ros.conversions import pose_msg_to_matrix
    from selfsup_perception.sim.realistic import REALISTIC_SEMANTIC_CLASSES
    from selfsup_perception.srv import ExecuteArmMotion

    sim = spinner.add(SimWorldNode(parameter_overrides=[
        Parameter("world", value="realistic"), Parameter("width", value=96), Parameter("height", value=72),
        Parameter("publish_rate_hz", value=10.0), Parameter("shake_rotation_deg", value=0.5)]))
    assert sim.sim.world == "realistic" and sim.sim.config.shake_config.rotation_deg == 0.5
    client = spinner.add(rclpy.create_node("realistic_client"))
    poses, depths = [], []
    qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
    client.create_subscription(PoseStamped, "camera/pose", poses.append, qos)
    client.create_subscription(Image, "camera/depth/image_raw", depths.append, qos)
    assert wait_for(lambda: poses and depths, 20)
    before = pose_msg_to_matrix(poses[-1].pose)
    depth = np.frombuffer(bytes(depths[-1].data), np.float32).reshape(72, 96)
    assert 0.0 < np.isnan(depth).mean() < 0.5  # the stereo model leaves holes
    motion = client.create_client(ExecuteArmMotion, "/sim/execute_arm_motion")
    assert motion.wait_for_service(timeout_sec=10)
    res = wait_future(motion.call_async(ExecuteArmMotion.Request(motion=ExecuteArmMotion.Request.MOTION_OUT_OF_VIEW)),
                      20)
    assert res.success, res.message
    poses.clear()
    assert wait_for(lambda: len(poses) >= 2, 20)
    after = pose_msg_to_matrix(poses[-1].pose)
    np.testing.assert_allclose(after, sim.sim.camera_to_world, atol=1e-6)
    rel = np.linalg.inv(before) @ after
    angle = np.degrees(np.arccos(np.clip((np.trace(rel[:3, :3]) - 1) / 2, -1, 1)))
    assert 0.4 * 0.5 - 1e-6 <= angle <= 0.5 + 1e-6  # one shake of 0.4..1 x 0.5 deg, seen through the topic
    # a capture node reads the pose from TF at the image stamp: the shaken pose too
    spinner.add(CameraCaptureNode())
    capture = client.create_client(CaptureView, "capture_view")
    assert capture.wait_for_service(timeout_sec=10)
    res = wait_future(capture.call_async(CaptureView.Request(timeout_s=5.0)), 15)
    assert res.success, res.message
    np.testing.assert_allclose(view_msg_to_frame(res.view).camera_to_world, sim.sim.camera_to_world, atol=1e-5)
    gt = wait_future(client.create_client(SimGroundTruth, "/sim/ground_truth").call_async(SimGroundTruth.Request()), 10)
    assert gt.success and list(gt.class_names) == list(REALISTIC_SEMANTIC_CLASSES)
