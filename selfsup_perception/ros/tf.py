"""TF for this stack's nodes: publish a frame tree on /tf and /tf_static, look transforms up at a stamp.

* :class:`TfPublisher`: static transforms once on ``/tf_static`` (transient local, as
  ``tf2_ros.StaticTransformBroadcaster``), dynamic ones on ``/tf`` (as
  ``tf2_ros.TransformBroadcaster``), from 4x4 matrices.
* :class:`TfLookup`: ``lookup(target, source, stamp_ns) -> T_target_source`` at a stamp, with
  tf2's semantics. It uses ``tf2_ros.Buffer`` + ``TransformListener`` when tf2_ros is
  importable (a ROS 2 install); otherwise it subscribes to ``/tf`` and ``/tf_static`` itself
  and fills :class:`~selfsup_perception.core.geometry.transform_buffer.TransformBuffer` (interpolation,
  no extrapolation). Either way a failure is an ``UnknownFrameError`` or an
  ``ExtrapolationError`` (both ``LookupError``) whose message names the frames and the stamp.

The QoS profiles are tf2_ros's (``tf2_ros/qos.py``): dynamic depth 100; static depth 1
transient local for the publisher, depth 100 transient local for listeners.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

from selfsup_perception.core.geometry.transform_buffer import (
    ExtrapolationError,
    TransformBuffer,
    UnknownFrameError,
    matrix_from_translation_quaternion,
    quaternion_from_matrix,
)

TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
TF_STATIC_PUB_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                               durability=DurabilityPolicy.TRANSIENT_LOCAL)
TF_STATIC_SUB_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                               durability=DurabilityPolicy.TRANSIENT_LOCAL)


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int, out=None):
    from builtin_interfaces.msg import Time

    out = out if out is not None else Time()
    out.sec, out.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return out


def transform_to_msg(parent: str, child: str, T_parent_child: np.ndarray, stamp_ns: int) -> TransformStamped:
    t = np.asarray(T_parent_child, dtype=np.float64)
    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = parent, child
    ns_to_stamp(stamp_ns, msg.header.stamp)
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (float(v) for v in t[:3, 3])
    q = quaternion_from_matrix(t[:3, :3])
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return msg


def msg_to_matrix(msg: TransformStamped) -> np.ndarray:
    tr, r = msg.transform.translation, msg.transform.rotation
    return matrix_from_translation_quaternion((tr.x, tr.y, tr.z), (r.x, r.y, r.z, r.w))


class TfPublisher:
    """Publishes a frame tree: :meth:`publish_static` once, :meth:`publish` for every change."""

    def __init__(self, node) -> None:
        self._pub = node.create_publisher(TFMessage, "/tf", TF_QOS)
        self._static_pub = node.create_publisher(TFMessage, "/tf_static", TF_STATIC_PUB_QOS)

    def publish_static(self, transforms: Iterable[tuple[str, str, np.ndarray]], stamp_ns: int) -> None:
        self._static_pub.publish(TFMessage(transforms=[transform_to_msg(p, c, t, stamp_ns) for p, c, t in transforms]))

    def publish(self, transforms: Iterable[tuple[str, str, np.ndarray]], stamp_ns: int) -> None:
        self._pub.publish(TFMessage(transforms=[transform_to_msg(p, c, t, stamp_ns) for p, c, t in transforms]))


class TfLookup:
    """Transforms at a stamp from /tf and /tf_static (tf2_ros.Buffer when importable).

    Args:
        node: the node that subscribes.
        cache_time_s: history kept per link (tf2's default is 10 s).
        use_tf2_ros: ``None`` = tf2_ros when importable; ``False`` forces the built-in buffer.
    """

    def __init__(self, node, cache_time_s: float = 10.0, callback_group=None, use_tf2_ros: bool | None = None) -> None:
        self._tf2 = None
        if use_tf2_ros is not False:
            try:
                import tf2_ros  # type: ignore[import-not-found]
                from rclpy.duration import Duration

                self._tf2_module = tf2_ros
                self._tf2 = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time_s))
                self._listener = tf2_ros.TransformListener(self._tf2, node)
            except ImportError:
                if use_tf2_ros:
                    raise
        self.backend = "tf2_ros" if self._tf2 is not None else "builtin"
        if self._tf2 is None:
            self.buffer = TransformBuffer(cache_time_s)
            node.create_subscription(TFMessage, "/tf", self._on_tf, TF_QOS, callback_group=callback_group)
            node.create_subscription(TFMessage, "/tf_static", self._on_tf_static, TF_STATIC_SUB_QOS,
                                     callback_group=callback_group)
        self.rejected = 0

    def _store(self, msg: TFMessage, static: bool) -> None:
        for t in msg.transforms:
            try:
                self.buffer.set_transform(t.header.frame_id, t.child_frame_id, msg_to_matrix(t),
                                          stamp_to_ns(t.header.stamp), static=static)
            except ValueError:  # a malformed transform (loop, zero quaternion): tf2 also drops it
                self.rejected += 1

    def _on_tf(self, msg: TFMessage) -> None:
        self._store(msg, static=False)

    def _on_tf_static(self, msg: TFMessage) -> None:
        self._store(msg, static=True)

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int) -> np.ndarray:
        """``T_target_source`` at ``stamp_ns``; ``UnknownFrameError`` / ``ExtrapolationError`` otherwise."""
        if self._tf2 is None:
            return self.buffer.lookup(target_frame, source_frame, int(stamp_ns))
        from rclpy.time import Time

        tf2 = self._tf2_module
        try:
            msg = self._tf2.lookup_transform(target_frame, source_frame, Time(nanoseconds=int(stamp_ns)))
        except tf2.ExtrapolationException as exc:
            raise ExtrapolationError(f"{target_frame} <- {source_frame} at {stamp_ns} ns: {exc}") from exc
        except (tf2.LookupException, tf2.ConnectivityException, tf2.InvalidArgumentException) as exc:
            raise UnknownFrameError(f"{target_frame} <- {source_frame} at {stamp_ns} ns: {exc}") from exc
        return msg_to_matrix(msg)

