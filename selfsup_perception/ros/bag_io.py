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
from typing import Iterator, Optional

from rclpy.serialization import deserialize_message, serialize_message

PACKAGE = "selfsup_perception"


def _msg_dirs() -> list[Path]:
    dirs = [Path(__file__).resolve().parents[2] / "msg"]
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory(PACKAGE)) / "msg")
    except Exception:  # noqa: BLE001 - not installed through ament: the source tree is enough
        pass
    return [d for d in dirs if d.is_dir()]


def make_typestore():
    """A rosbags typestore with ROS 2 Kilted's standard types plus this package's messages."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    dirs = _msg_dirs()
    if not dirs:
        raise FileNotFoundError(f"cannot find the {PACKAGE} msg/ definitions")
    types = {}
    for path in sorted(dirs[0].glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


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


class BagReadError(RuntimeError):
    """A bag that cannot be opened or decoded."""


def read_bag(path: str | Path, msg_class, topic: Optional[str] = None) -> Iterator[tuple[int, object]]:
    """Yield (timestamp_ns, message) of every ``msg_class`` message in a rosbag2 bag."""
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no bag at {path}")
    type_name = ros_type_name(msg_class)
    try:
        with AnyReader([path], default_typestore=make_typestore()) as reader:
            conns = [c for c in reader.connections
                     if c.msgtype == type_name and (topic is None or c.topic == topic)]
            for conn, stamp, raw in reader.messages(connections=conns):
                yield stamp, deserialize_message(bytes(raw), msg_class)
    except (FileNotFoundError, KeyError):
        raise
    except Exception as exc:  # noqa: BLE001 - rosbags raises several unrelated types
        raise BagReadError(f"cannot read bag {path}: {exc}") from exc
