"""TF like a robot: the simulator's frame tree on /tf and /tf_static; capture_view's pose from TF at the image stamp.

Real rclpy over DDS, the real simulator (160x120). The capture node uses its default
configuration: pose from TF, camera frame from the CameraInfo's frame_id, no pose topic.
"""

import math

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import wait_for, wait_future
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

from selfsup_perception.core.types import CameraIntrinsics
from selfsup_perception.nodes.camera_capture_node import CameraCaptureNode
from selfsup_perception.nodes.sim_world_node import SimWorldNode
from selfsup_perception.ros.conversions import (
    depth_to_msg,
    intrinsics_to_camera_info,
    matrix_to_pose_msg,
    pose_msg_to_matrix,
    rgb_to_msg,
)
from selfsup_perception.ros.tf import TF_STATIC_SUB_QOS, TfPublisher, stamp_to_ns
from selfsup_perception.sim.camera_rig import orbit_camera_pose
from selfsup_perception.sim.tabletop import look_at
from selfsup_perception.srv import CaptureView, SimSetCamera

pytestmark = [pytest.mark.ros, pytest.mark.sim]
SMALL = [Parameter("width", value=160), Parameter("height", value=120), Parameter("publish_rate_hz", value=10.0),
         Parameter("publish_pose_topic", value=False)]
TREE = ["world", "panda_link0", "camera_link", "camera_color_frame", "camera_color_optical_frame"]


def pose_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(translation error in m, rotation error in degrees) between two 4x4 poses."""
    r = a[:3, :3].T @ b[:3, :3]
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(r) - 1.0) / 2.0))))
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3])), angle


def capture(client_node, timeout_s=5.0):
    cli = client_node.create_client(CaptureView, "capture_view")
    assert cli.wait_for_service(timeout_sec=10)
    return wait_future(cli.call_async(CaptureView.Request(timeout_s=timeout_s)), timeout_s + 10)


def test_capture_pose_is_the_ground_truth_at_the_image_stamp_of_a_moving_camera(spinner):
    """The camera circles the table (90 deg/s); each view's pose equals the path at its stamp within 1 mm / 0.1 deg."""
    period = 4.0
    spinner.add(SimWorldNode(parameter_overrides=SMALL + [Parameter("camera_motion", value="orbit"),
                                                         Parameter("orbit_period_s", value=period)]))
    cap = spinner.add(CameraCaptureNode())
    client = spinner.add(rclpy.create_node("tf_client"))
    assert not cap.count_subscribers("camera/pose") and cap.tf is not None
    poses, stamps = [], []
    for _ in range(5):
        res = capture(client)
        assert res.success, res.message
        assert res.view.camera_info.header.frame_id == "camera_color_optical_frame"
        stamp_s = stamp_to_ns(res.view.header.stamp) * 1e-9
        truth = orbit_camera_pose(stamp_s, period_s=period)
        got = pose_msg_to_matrix(res.view.camera_pose)
        dt, dr = pose_error(got, truth)
        assert dt < 1e-3 and dr < 0.1, (dt, dr)
        # the check is sharp: 50 ms later the camera is centimetres away
        assert pose_error(orbit_camera_pose(stamp_s + 0.05, period_s=period), truth)[0] > 0.02
        poses.append(got)
        stamps.append(stamp_s)
    assert len(set(stamps)) == 5
    assert max(pose_error(poses[0], p)[0] for p in poses[1:]) > 0.05, "the camera did not move"


def test_the_simulator_publishes_a_robot_frame_tree_and_the_camera_link_moves_with_the_camera(spinner):
    spinner.add(SimWorldNode(parameter_overrides=SMALL))
    spinner.add(CameraCaptureNode())
    client = spinner.add(rclpy.create_node("tree_client"))
    static, dynamic = [], []
    client.create_subscription(TFMessage, "/tf_static", static.append, TF_STATIC_SUB_QOS)
    client.create_subscription(TFMessage, "/tf", dynamic.append, QoSProfile(depth=100))
    assert wait_for(lambda: static and dynamic, 10)
    links = {(t.header.frame_id, t.child_frame_id) for m in static for t in m.transforms}
    assert links == {("world", "panda_link0"), ("camera_link", "camera_color_frame"),
                     ("camera_color_frame", "camera_color_optical_frame")}
    assert {(t.header.frame_id, t.child_frame_id) for m in dynamic for t in m.transforms} == {("panda_link0", "camera_link")}
    set_camera = client.create_client(SimSetCamera, "/sim/set_camera")
    path = [look_at(np.array([0.55 + 0.4 * math.cos(a), 0.4 * math.sin(a), 0.6]), np.array([0.55, 0.0, 0.0]))
            for a in (0.3, 1.1, 2.0)]
    for target in path:
        res = wait_future(set_camera.call_async(SimSetCamera.Request(camera_pose=matrix_to_pose_msg(target))), 10)
        assert res.success, res.message
        view = capture(client)
        assert view.success, view.message
        dt, dr = pose_error(pose_msg_to_matrix(view.view.camera_pose), target)
        assert dt < 1e-3 and dr < 0.1, (dt, dr)


def fake_camera(node, stamp: Time, frame_id: str):
    k = CameraIntrinsics.from_fov(32, 24, 45.0)
    rgb = rgb_to_msg(np.zeros((24, 32, 3), np.uint8), frame_id)
    depth = depth_to_msg(np.ones((24, 32), np.float32), "32FC1", frame_id)
    info = intrinsics_to_camera_info(k, frame_id)
    for m in (rgb, depth, info):
        m.header.stamp = stamp
    return rgb, depth, info


@pytest.fixture
def fake_rig(spinner):
    """A camera driver (tiny images) and a TF publisher of our own; the capture node reads them."""
    topics = [Parameter("rgb_topic", value="fake/rgb"), Parameter("depth_topic", value="fake/depth"),
              Parameter("camera_info_topic", value="fake/info")]
    node = spinner.add(rclpy.create_node("fake_rig"))
    qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
    pubs = [node.create_publisher(t, n, qos) for t, n in ((Image, "fake/rgb"), (Image, "fake/depth"),
                                                            (CameraInfo, "fake/info"))]
    return node, pubs, TfPublisher(node), topics


def publish_until_answered(node, pubs, future, frame_id, stamp_fn):
    while not future.done():
        for pub, msg in zip(pubs, fake_camera(node, stamp_fn(), frame_id)):
            pub.publish(msg)
        wait_for(future.done, 0.1)
    return future.result()


def test_unknown_frame_is_a_clear_error(spinner, fake_rig):
    node, pubs, tf, topics = fake_rig
    cap = spinner.add(CameraCaptureNode(parameter_overrides=topics + [Parameter("camera_frame", value="no_such_frame")]))
    tf.publish_static([("world", "cam", np.eye(4))], node.get_clock().now().nanoseconds)
    cli = node.create_client(CaptureView, "capture_view")
    assert cli.wait_for_service(timeout_sec=10) and wait_for(lambda: all(p.get_subscription_count() for p in pubs), 10)
    res = publish_until_answered(node, pubs, cli.call_async(CaptureView.Request(timeout_s=1.0)), "cam",
                                 lambda: node.get_clock().now().to_msg())
    assert not res.success
    assert "no camera pose for the images" in res.message and "frame 'no_such_frame' does not exist" in res.message
    assert "known frames: cam, world" in res.message
    assert cap.context.ok()


def test_a_stamp_outside_the_buffer_is_a_clear_error(spinner, fake_rig):
    """TF of the camera stopped 3 s ago (a dead driver): images of now cannot be placed, and the error says so."""
    node, pubs, tf, topics = fake_rig
    spinner.add(CameraCaptureNode(parameter_overrides=topics))
    now = node.get_clock().now().nanoseconds
    tf.publish_static([("world", "base", np.eye(4))], now)
    for k in range(3):
        tf.publish([("base", "cam", np.eye(4))], now - 3_000_000_000 - k * 100_000_000)
    cli = node.create_client(CaptureView, "capture_view")
    assert cli.wait_for_service(timeout_sec=10) and wait_for(lambda: all(p.get_subscription_count() for p in pubs), 10)
    res = publish_until_answered(node, pubs, cli.call_async(CaptureView.Request(timeout_s=1.0)), "cam",
                                 lambda: node.get_clock().now().to_msg())
    assert not res.success
    assert "no camera pose for the images" in res.message and "after the newest transform" in res.message
    assert "'base' -> 'cam'" in res.message
