"""rosbag2 (MCAP or sqlite3) recording and replay of this stack's messages without rosbag2_py.

Uses ``rosbag2_py`` when it is importable (a ROS 2 install); otherwise the ``rosbags``
library writes and reads real rosbag2 bags. Messages are serialized with rclpy's own CDR
serializer, so a bag written here replays with ``ros2 bag play`` on a robot and vice versa.
Our message definitions are registered from the package's ``msg/`` files so that the bag
carries their definitions and type hashes (MCAP needs them).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Iterator, Optional

from rclpy.serialization import deserialize_message, serialize_message

from selfsup_perception.ros.bag_files import BagReadError, RawBag, make_typestore  # noqa: F401 (re-exported)


def ros_type_name(msg_class) -> str:
    """'pkg/msg/Name' of a generated message class."""
    module = msg_class.__module__.split(".")
    return f"{module[0]}/{module[1]}/{msg_class.__name__}"


class BagRecorder:
    """Append messages of known types to a new rosbag2 bag; thread-safe; close() finalises it.

    A bag interrupted by a crash keeps every message written so far in its storage file
    (MCAP chunks / sqlite rows); ``close()`` writes ``metadata.yaml``.
    """

    def __init__(self, path: str | Path, storage: str = "mcap"):
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in ("mcap", "sqlite3"):
            raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
        self.path = Path(path)
        self._store = make_typestore()
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._writer.open()
        self._connections: dict[str, object] = {}
        self._lock = threading.Lock()
        self.count = 0

    def write(self, topic: str, msg, stamp_ns: int) -> None:
        with self._lock:
            if self._writer is None:
                raise RuntimeError("bag is closed")
            conn = self._connections.get(topic)
            if conn is None:
                conn = self._writer.add_connection(topic, ros_type_name(type(msg)), typestore=self._store)
                self._connections[topic] = conn
            self._writer.write(conn, int(stamp_ns), serialize_message(msg))
            self.count += 1

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def __enter__(self) -> "BagRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NoMatchingTopicError(BagReadError):
    """The bag has no topic of the wanted type (or not the topic asked for)."""


class SchemaMismatchError(BagReadError):
    """The bag's definition of a type differs from this package's (a legacy or foreign schema)."""


def check_schema(info, store) -> None:
    """Raise :class:`SchemaMismatchError` if ``info`` (a TopicInfo) defines its type differently from ``store``."""
    if info.digest:
        ours = store.hash_rihs01(info.msgtype)
        if info.digest != ours:
            raise SchemaMismatchError(
                f"topic {info.topic} carries {info.msgtype} with type hash {info.digest}, but this package's "
                f"definition hashes to {ours}: the bag was recorded with a different (older or foreign) "
                f"definition of the message; replay it with the version of the package that recorded it")
        return
    if info.msgdef:
        from rosbags.typesys import get_types_from_msg

        name = info.msgtype
        try:
            theirs = get_types_from_msg(info.msgdef.split("\n" + "=" * 80)[0], name)[name]
        except Exception as exc:  # noqa: BLE001 - a definition rosbags cannot parse
            raise SchemaMismatchError(
                f"topic {info.topic}: cannot parse the bag's definition of {name}: {exc}") from exc
        ours = store.fielddefs[name]
        if [f[0] for f in theirs[1]] != [f[0] for f in ours[1]]:
            raise SchemaMismatchError(
                f"topic {info.topic} carries {name} with fields {[f[0] for f in theirs[1]]}, but this package's "
                f"definition has fields {[f[0] for f in ours[1]]}: the bag was recorded with a different (older "
                f"or foreign) definition of the message")


def read_bag(path: str | Path, msg_class, topic: Optional[str] = None,
             on_error: Optional[Callable[[int, Exception], None]] = None) -> Iterator[tuple[int, object]]:
    """Yield (timestamp_ns, message) of every ``msg_class`` message in a rosbag2 bag.

    Raises :class:`NoMatchingTopicError` (listing the bag's topics and types) when the bag has no
    topic of this type, or ``topic`` is not one of them; :class:`SchemaMismatchError` when the bag
    defines the type differently. A message that does not deserialize is passed to
    ``on_error(timestamp_ns, exception)`` and skipped, or raises :class:`BagReadError` without it.
    """
    bag = RawBag(path)
    type_name = ros_type_name(msg_class)
    candidates = bag.topics_of_type(type_name)
    if topic is not None:
        wanted = topic if topic in bag.topics else ("/" + topic.lstrip("/") if "/" + topic.lstrip("/") in bag.topics
                                                     else topic.lstrip("/"))
        if wanted not in bag.topics:
            raise NoMatchingTopicError(f"topic {topic!r} is not in bag {bag.path}; it has: {bag.describe_topics()}")
        if bag.topics[wanted].msgtype != type_name:
            raise NoMatchingTopicError(f"topic {wanted} in bag {bag.path} is {bag.topics[wanted].msgtype}, "
                                       f"not {type_name}")
        candidates = [wanted]
    if not candidates:
        raise NoMatchingTopicError(f"bag {bag.path} has no {type_name} topic; it has: {bag.describe_topics()}")
    store = make_typestore()
    for name in candidates:
        check_schema(bag.topics[name], store)
    for _topic, _type, stamp, raw in bag.messages(candidates):
        try:
            msg = deserialize_message(raw, msg_class)
        except Exception as exc:  # noqa: BLE001 - rclpy raises several types for a bad buffer
            if on_error is None:
                raise BagReadError(f"cannot decode a {type_name} message at {stamp} ns in {bag.path}: {exc}") from exc
            on_error(stamp, exc)
            continue
        yield stamp, msg
