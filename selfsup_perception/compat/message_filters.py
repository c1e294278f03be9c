"""message_filters when importable, otherwise a tested equivalent with the same call shape.

Provides ``Subscriber(node, msg_type, topic, qos_profile=...)`` and
``ApproximateTimeSynchronizer(subscribers, queue_size, slop)`` with
``registerCallback(cb)``, as used by the camera capture node.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable

try:  # pragma: no cover - depends on the install
    from message_filters import ApproximateTimeSynchronizer, Subscriber  # type: ignore[import-not-found]

    USING_ROS_MESSAGE_FILTERS = True
except ImportError:
    USING_ROS_MESSAGE_FILTERS = False

    def _stamp(msg) -> float:
        return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9

    class Subscriber:  # type: ignore[no-redef]
        """Subscribes to one topic and forwards messages to registered callbacks."""

        def __init__(self, node, msg_type, topic: str, qos_profile=10, **kwargs):
            self._callbacks: list[Callable] = []
            self.topic = topic
            self.sub = node.create_subscription(msg_type, topic, self._on_message, qos_profile, **kwargs)

        def registerCallback(self, cb: Callable) -> None:  # noqa: N802 - message_filters API
            self._callbacks.append(cb)

        def _on_message(self, msg) -> None:
            for cb in self._callbacks:
                cb(msg)

    class ApproximateTimeSynchronizer:  # type: ignore[no-redef]
        """Calls back with one message per input whose stamps lie within ``slop`` seconds.

        Each input keeps a bounded queue (``queue_size``, oldest dropped). When a message
        arrives, the newest complete set whose stamps span at most ``slop`` is emitted and
        everything up to it is discarded (the policy of message_filters' approximate sync for
        the common case of a camera publishing all streams at one rate).
        """

        def __init__(self, fs, queue_size: int, slop: float, allow_headerless: bool = False):
            if queue_size < 1:
                raise ValueError("queue_size must be >= 1")
            self._queues = [deque(maxlen=queue_size) for _ in fs]
            self._slop = float(slop)
            self._lock = threading.Lock()
            self._callbacks: list[Callable] = []
            for i, f in enumerate(fs):
                f.registerCallback(lambda msg, i=i: self._add(i, msg))

        def registerCallback(self, cb: Callable) -> None:  # noqa: N802 - message_filters API
            self._callbacks.append(cb)

        def _add(self, index: int, msg) -> None:
            with self._lock:
                self._queues[index].append(msg)
                match = self._find_match(index, msg)
                if match is None:
                    return
                for q, m in zip(self._queues, match):
                    while q and _stamp(q[0]) <= _stamp(m):
                        q.popleft()
            for cb in self._callbacks:
                cb(*match)

        def _find_match(self, index: int, msg):
            t = _stamp(msg)
            match = []
            for i, q in enumerate(self._queues):
                if i == index:
                    match.append(msg)
                    continue
                if not q:
                    return None
                best = min(q, key=lambda m: abs(_stamp(m) - t))
                if abs(_stamp(best) - t) > self._slop:
                    return None
                match.append(best)
            return match
