"""Camera capture: time-synchronised RGB + depth + camera_info (+ pose), served as snapshots.

Subscribes (reliable depth 2 by default, or sensor-data QoS): rgb, depth, camera_info (approximate time sync, message_filters
when importable). The camera pose comes from TF (``use_tf``, the default): the transform
``world_frame <- camera_frame`` *at the images' stamp* (``camera_frame`` defaults to the
CameraInfo's ``header.frame_id``), looked up in tf2_ros's buffer when tf2_ros is importable,
otherwise in a built-in buffer fed from /tf and /tf_static (ros/tf.py). With ``use_tf: false``
it comes from a PoseStamped topic (``pose_topic``) instead.
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
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from selfsup_perception.compat.message_filters import ApproximateTimeSynchronizer, Subscriber
from selfsup_perception.core.image_conversion import ImageConversionError
from selfsup_perception.core.geometry.transform_buffer import UnknownFrameError
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
from selfsup_perception.ros.tf import TfLookup, stamp_to_ns
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
    use_tf: bool = field_with_help(True, "camera pose from TF at the image stamp (false: from pose_topic)")
    world_frame: str = field_with_help("world", "frame of the camera pose")
    camera_frame: str = field_with_help("", "TF frame of the camera (empty: the CameraInfo's header.frame_id)")
    tf_cache_s: float = field_with_help(10.0, "history of the TF buffer (s)")
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
        if self.tf_cache_s <= 0:
            raise ValueError("tf_cache_s must be positive")


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
        self.tf: Optional[TfLookup] = None
        if p.use_tf:
            self.tf = TfLookup(self, p.tf_cache_s, callback_group=MutuallyExclusiveCallbackGroup())
        else:
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

    def _camera_pose(self, rgb: Image, info: CameraInfo) -> np.ndarray:
        """T_world_camera at the images' stamp; LookupError (UnknownFrameError, ExtrapolationError) if unknown."""
        p = self.params
        if self.tf is not None:
            camera_frame = p.camera_frame or info.header.frame_id
            if not camera_frame:
                raise UnknownFrameError("the camera_info has no header.frame_id and camera_frame is not set")
            matrix = self.tf.lookup(p.world_frame, camera_frame, stamp_to_ns(rgb.header.stamp))
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
                pose = self._camera_pose(rgb, info)
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
