"""camera_capture over DDS: a non-finite camera pose is never passed on, timeouts are clamped, the node keeps serving."""

import math
import threading

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import wait_for, wait_future
from sensor_msgs.msg import CameraInfo, Image

from selfsup_perception.nodes.camera_capture_node import CameraCaptureNode
from selfsup_perception.ros.conversions import depth_to_msg, rgb_to_msg
from selfsup_perception.srv import CaptureView

pytestmark = pytest.mark.ros


def test_nan_pose_is_refused_and_timeouts_are_clamped(spinner):
    cap = spinner.add(CameraCaptureNode(parameter_overrides=[
        Parameter("rgb_topic", value="fake/rgb"), Parameter("depth_topic", value="fake/depth"),
        Parameter("camera_info_topic", value="fake/info"), Parameter("pose_topic", value="fake/pose"),
        Parameter("max_timeout_s", value=1.0), Parameter("default_timeout_s", value=1.0)]))
    node = spinner.add(rclpy.create_node("fake_camera_nan"))
    qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
    rgb_pub = node.create_publisher(Image, "fake/rgb", qos)
    depth_pub = node.create_publisher(Image, "fake/depth", qos)
    info_pub = node.create_publisher(CameraInfo, "fake/info", qos)
    pose_pub = node.create_publisher(PoseStamped, "fake/pose", qos)
    capture = node.create_client(CaptureView, "capture_view")
    assert capture.wait_for_service(timeout_sec=10)
    assert wait_for(lambda: all(p.get_subscription_count() for p in (rgb_pub, depth_pub, info_pub, pose_pub)), 10)
    position = {"x": math.nan}
    stop = threading.Event()

    def camera():
        rgb, depth = np.full((8, 10, 3), 100, np.uint8), np.full((8, 10), 0.8, np.float32)
        while not stop.wait(0.05):
            stamp = node.get_clock().now().to_msg()
            msgs = [rgb_to_msg(rgb, "cam"), depth_to_msg(depth, "32FC1", "cam"),
                    CameraInfo(width=10, height=8, k=[10.0, 0, 4.5, 0, 10.0, 3.5, 0, 0, 1])]
            pose = PoseStamped()
            pose.header.frame_id = "world"
            pose.pose.position.x, pose.pose.orientation.w = position["x"], 1.0
            for m in msgs + [pose]:
                m.header.stamp = stamp
            pose_pub.publish(pose)
            for p, m in zip((rgb_pub, depth_pub, info_pub), msgs):
                p.publish(m)

    thread = threading.Thread(target=camera, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: cap._latest is not None, 20), "no synchronised set arrived"
        res = wait_future(capture.call_async(CaptureView.Request(timeout_s=1.0)), 10)
        assert not res.success and "non-finite position" in res.message, res.message
        for timeout in (math.inf, 1e300):  # clamped to max_timeout_s (1 s), answered, no OverflowError
            res = wait_future(capture.call_async(CaptureView.Request(timeout_s=timeout)), 10)
            assert not res.success and "within 1.0 s" in res.message, res.message
        for bad in (math.nan, -1.0):
            res = wait_future(capture.call_async(CaptureView.Request(timeout_s=bad)), 10)
            assert not res.success and "timeout_s" in res.message
        position["x"] = 0.25
        res = wait_future(capture.call_async(CaptureView.Request(timeout_s=3.0)), 10)
        assert res.success, res.message
        assert res.view.camera_pose.position.x == 0.25
    finally:
        stop.set()
        thread.join(2)
