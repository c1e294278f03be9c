"""A bounded work queue with a worker thread: subscription callbacks only enqueue.

The newest items are kept: when full, the oldest is dropped (and counted), as image_pipeline's
camera_calibration BufferQueue does. The worker catches and reports every exception so one
bad item never stops the node.

:class:`FairSlots` limits how many requests run at once and serves the waiting ones first come,
first served (``threading.Semaphore`` lets a newcomer take a released slot before a thread that
has waited for seconds, which lengthens the tail of the latency).
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


class FairSlots:
    """At most ``n`` holders; a released slot goes to the longest waiter, never to a newcomer."""

    def __init__(self, n: int):
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = n
        self._free = n
        self._waiters: collections.deque[threading.Event] = collections.deque()
        self._lock = threading.Lock()

    def acquire(self, timeout: Optional[float] = None) -> bool:
        """True once a slot is held; False after ``timeout`` seconds (None: wait as long as it takes)."""
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            turn = threading.Event()
            self._waiters.append(turn)
        if turn.wait(timeout):
            return True
        with self._lock:
            if turn.is_set():  # handed over while the wait timed out
                return True
            self._waiters.remove(turn)
            return False

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()  # the slot passes to the longest waiter directly
            elif self._free < self.n:
                self._free += 1
            else:
                raise ValueError("FairSlots released more often than acquired")

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiters)


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
