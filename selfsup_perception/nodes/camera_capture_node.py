"""Camera capture: time-synchronised RGB + depth + camera_info (+ pose), served as snapshots.

Subscribes (reliable depth 2 by default, or sensor-data QoS): rgb, depth, camera_info (approximate time sync, message_filters
when importable) and the camera pose (PoseStamped topic, or TF via tf2_ros when
``use_tf`` is set and tf2_ros is importable).
Service ``capture_view`` (CaptureView): the first synchronised set *newer than the
request*, so a capture after an arm motion never returns an image from before it.
A bad message (wrong encoding, mismatched sizes) is logged and dropped; the node keeps running.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
from geometry_msgs.msg import Pose, PoseStamped
from rclpy.duration import Duration
from rclpy.time import Time
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from selfsup_perception.compat.message_filters import ApproximateTimeSynchronizer, Subscriber
from selfsup_perception.core.image_conversion import ImageConversionError
from selfsup_perception.msg import RgbdView
from selfsup_perception.ros.conversions import (
    frame_from_images,
    matrix_to_pose_msg,
    pose_msg_to_matrix,
    time_from_msg,
)
from selfsup_perception.ros.callback_guard import GuardedNodeMixin, clamp_request_value
from selfsup_perception.ros.node_runner import run_node
from selfsup_perception.ros.parameters import declare_config, field_with_help
from selfsup_perception.srv import CaptureView

# Large images over best effort lose fragments under load (see sim_world_node.CAMERA_QOS);
# reliable with a shallow queue is the default, sensor-data QoS is a parameter away.
CAMERA_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


@dataclass(frozen=True)
class CaptureParams:
    rgb_topic: str = field_with_help("camera/color/image_raw", "RGB image topic")
    depth_topic: str = field_with_help("camera/depth/image_raw", "depth image topic (32FC1 m or 16UC1 mm)")
    camera_info_topic: str = field_with_help("camera/color/camera_info", "camera info topic")
    pose_topic: str = field_with_help("camera/pose", "camera pose topic (PoseStamped) when use_tf is false")
    use_tf: bool = field_with_help(False, "look the camera pose up in TF (needs tf2_ros)")
    world_frame: str = field_with_help("world", "frame of the camera pose")
    sync_slop_s: float = field_with_help(0.05, "max stamp difference of a synchronised set (s)")
    sync_queue_size: int = field_with_help(5, "per-topic queue of the synchroniser")
    default_timeout_s: float = field_with_help(5.0, "capture timeout when the request gives none (s)")
    max_timeout_s: float = field_with_help(60.0, "longer capture_view timeouts (also inf) are clamped to this (s)")
    max_pose_age_s: float = field_with_help(1.0, "a pose older than this relative to the images is stale (s)")
    reliable: bool = field_with_help(True, "subscribe reliable (false: best effort, sensor-data QoS)")

    def __post_init__(self) -> None:
        if not (self.sync_slop_s > 0 and 0 < self.default_timeout_s <= self.max_timeout_s < 1e6):
            raise ValueError("sync_slop_s > 0 and 0 < default_timeout_s <= max_timeout_s < 1e6 are required")
        if self.sync_queue_size < 1:
            raise ValueError("sync_queue_size must be >= 1")


class CameraCaptureNode(GuardedNodeMixin, Node):
    def __init__(self, **kwargs):
        super().__init__("camera_capture", **kwargs)
        self.params = declare_config(self, CaptureParams, on_change=self._apply_params,
                                     dynamic=("default_timeout_s", "max_pose_age_s", "world_frame"))
        p = self.params
        self._cond = threading.Condition()
        self._latest: Optional[tuple[Image, Image, CameraInfo]] = None
        self._latest_seq = 0
        self._poses: collections.deque = collections.deque(maxlen=50)  # recent poses, to match image stamps
        self.dropped_messages = 0
        sensor_group = MutuallyExclusiveCallbackGroup()
        qos = CAMERA_QOS if p.reliable else qos_profile_sensor_data
        subs = [
            Subscriber(self, Image, p.rgb_topic, qos_profile=qos, callback_group=sensor_group),
            Subscriber(self, Image, p.depth_topic, qos_profile=qos, callback_group=sensor_group),
            Subscriber(self, CameraInfo, p.camera_info_topic, qos_profile=qos,
                       callback_group=sensor_group),
        ]
        self._sync = ApproximateTimeSynchronizer(subs, queue_size=p.sync_queue_size, slop=p.sync_slop_s)
        self._sync.registerCallback(self._on_synchronized)
        self._tf_buffer = None
        if p.use_tf:
            try:
                from tf2_ros import Buffer, TransformListener  # type: ignore[import-not-found]

                self._tf_buffer = Buffer()
                self._tf_listener = TransformListener(self._tf_buffer, self)
            except ImportError:
                self.get_logger().error("use_tf is set but tf2_ros is not importable; using the pose topic")
        if self._tf_buffer is None:
            self.create_subscription(PoseStamped, p.pose_topic, self._on_pose, qos,
                                     callback_group=sensor_group)
        self.create_service(CaptureView, "capture_view", self._on_capture, callback_group=ReentrantCallbackGroup())
        self.get_logger().info(f"capturing {p.rgb_topic} + {p.depth_topic} (slop {p.sync_slop_s}s)")

    def _apply_params(self, params: CaptureParams) -> None:
        self.params = params  # read per capture; topics, sync and QoS are fixed at start-up (read-only)

    def _on_pose(self, msg: PoseStamped) -> None:
        with self._cond:
            self._poses.append(msg)

    def _on_synchronized(self, rgb: Image, depth: Image, info: CameraInfo) -> None:
        with self._cond:
            self._latest = (rgb, depth, info)
            self._latest_seq += 1
            self._cond.notify_all()

    def _camera_pose(self, rgb: Image) -> np.ndarray:
        p = self.params
        if self._tf_buffer is not None:
            try:
                tf = self._tf_buffer.lookup_transform(p.world_frame, rgb.header.frame_id,
                                                      Time.from_msg(rgb.header.stamp), timeout=Duration(seconds=0.5))
            except Exception as exc:  # noqa: BLE001 - tf2's TransformException family
                raise LookupError(f"no transform {p.world_frame} <- {rgb.header.frame_id}: {exc}") from exc
            pose = Pose()
            pose.position.x, pose.position.y, pose.position.z = (
                tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z)
            pose.orientation = tf.transform.rotation
            matrix = pose_msg_to_matrix(pose)
            if not np.isfinite(matrix).all():
                raise ValueError("camera pose from TF is not finite")
            return matrix
        t_image = time_from_msg(rgb.header.stamp)
        with self._cond:
            poses = list(self._poses)
        if not poses:
            raise LookupError(f"no camera pose received on {p.pose_topic}")
        pose = min(poses, key=lambda m: abs(time_from_msg(m.header.stamp) - t_image))
        age = abs(t_image - time_from_msg(pose.header.stamp))
        if age > p.max_pose_age_s:
            raise LookupError(f"camera pose is {age:.2f} s away from the images (max {p.max_pose_age_s} s)")
        matrix = pose_msg_to_matrix(pose.pose)
        if not np.isfinite(matrix).all():
            raise ValueError("camera pose is not finite (NaN or inf in position or orientation)")
        return matrix

    def capture(self, timeout_s: float) -> RgbdView:
        """Wait for a synchronised set *acquired* after this call and return it as a validated view.

        The images' header stamps are compared with the time of the request (the node clock), so
        a set that was taken before, say, an arm motion but delivered late is never returned.
        """
        deadline = time.monotonic() + timeout_s
        requested_at = self.get_clock().now().nanoseconds * 1e-9
        last_error: Optional[Exception] = None
        while True:
            with self._cond:
                ok = self._cond.wait_for(lambda: self._latest is not None
                                         and time_from_msg(self._latest[0].header.stamp) >= requested_at,
                                         timeout=max(deadline - time.monotonic(), 0.0))
                if not ok and last_error is not None:
                    raise TimeoutError(f"no valid camera set within {timeout_s:.1f} s; last error: {last_error}")
                if not ok:
                    raise TimeoutError(
                        f"no synchronised rgb/depth/camera_info within {timeout_s:.1f} s "
                        f"(topics {self.params.rgb_topic}, {self.params.depth_topic}, {self.params.camera_info_topic})")
                rgb, depth, info = self._latest
            try:
                frame_from_images(rgb, depth, info)  # validates encodings and sizes
                pose = self._camera_pose(rgb)
            except (ImageConversionError, ValueError) as exc:
                last_error = exc
                self.dropped_messages += 1
                self.get_logger().warning(f"dropping a bad camera set: {exc}")
                requested_at = self.get_clock().now().nanoseconds * 1e-9
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no valid camera set within {timeout_s:.1f} s; last error: {exc}") from exc
                continue
            except LookupError as exc:  # the pose of these images has not arrived (yet)
                last_error = exc
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no camera pose for the images within {timeout_s:.1f} s: {exc}") from exc
                time.sleep(0.02)
                continue
            view = RgbdView()
            view.header = rgb.header
            view.rgb, view.depth, view.camera_info = rgb, depth, info
            view.world_frame = self.params.world_frame
            view.camera_pose = matrix_to_pose_msg(pose)
            return view

    def _on_capture(self, request, response):
        # documented range: 0 = default_timeout_s; (0, max_timeout_s], larger (inf too) clamped; NaN/negative refused
        timeout = clamp_request_value("timeout_s", request.timeout_s, low=0.0, high=self.params.max_timeout_s,
                                      default=self.params.default_timeout_s, zero_means_default=True)
        try:
            response.view = self.capture(timeout)
            response.success, response.message = True, "captured"
        except (TimeoutError, LookupError) as exc:
            response.success, response.message = False, str(exc)
            self.get_logger().warning(f"capture failed: {exc}")
        return response


def main(args=None) -> None:
    run_node(CameraCaptureNode, num_threads=3, args=args)


if __name__ == "__main__":
    main()
