"""A bounded work queue with a worker thread: subscription callbacks only enqueue.

The newest items are kept: when full, the oldest is dropped (and counted), as image_pipeline's
camera_calibration BufferQueue does. The worker catches and reports every exception so one
bad item never stops the node.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Callable, Optional


class WorkQueue:
    def __init__(self, handler: Callable[[object], None], maxsize: int = 8,
                 on_error: Optional[Callable[[object, BaseException], None]] = None, name: str = "worker"):
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._items: collections.deque = collections.deque(maxlen=maxsize)
        self._cond = threading.Condition()
        self._handler = handler
        self._on_error = on_error
        self._stop = False
        self.dropped = 0
        self.processed = 0
        self.failed = 0
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item) -> None:
        with self._cond:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def idle(self) -> bool:
        with self._cond:
            return not self._items and not self._busy

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items or self._stop)
                if self._stop:
                    return
                item = self._items.popleft()
                self._busy = True
            try:
                self._handler(item)
                self.processed += 1
            except Exception as exc:  # noqa: BLE001 - reported, never fatal
                self.failed += 1
                if self._on_error is not None:
                    self._on_error(item, exc)
            finally:
                with self._cond:
                    self._busy = False

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout_s)


def lower_thread_priority(niceness: int) -> bool:
    """Raise the calling thread's nice value by ``niceness`` (Linux: per thread); False where not possible.

    Background work (training, heavy descriptor requests) then yields the CPU to latency-critical
    requests on a loaded machine instead of sharing it equally.
    """
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
        return True
    except OSError:
        return False
