"""One guard for every callback of every node: a bad request is answered, never fatal.

Other robot nodes call our services in their own loops, so one malformed request must not
take a node (and with it the graph) down. :class:`CallbackGuard` wraps service, subscription,
timer and action callbacks:

* an *expected* error (``ValueError``, ``LookupError``, ``TimeoutError`` and whatever the
  node adds, e.g. ``CheckpointError``) is a bad request: a service answers
  ``success: false`` with the error's message, a subscription/timer logs one warning line;
* anything else is a bug or a broken resource: it is answered as ``internal error: <type>:
  <message>`` and logged once with its traceback (later occurrences of the same error at the
  same place are logged as one line with a count, so a client in a loop cannot flood the log).

Nodes get the guard by inheriting :class:`GuardedNodeMixin` before ``Node``/``LifecycleNode``:
``create_service``, ``create_subscription`` and ``create_timer`` then wrap their callbacks,
including those that helper classes (message_filters, arm backends) create on the node.
Action servers wrap theirs with :meth:`CallbackGuard.action_execute` and
:meth:`CallbackGuard.action_goal`.

Requests also carry numbers (timeouts, sizes, thresholds); :func:`clamp_request_value`
checks one against its documented range so ``timeout_s = inf`` or ``1e300`` becomes a clamped
value or a clear error, never an ``OverflowError`` deep inside rclpy.
"""

from __future__ import annotations

import functools
import math
import threading
import traceback
from typing import Callable, Optional


class RequestError(ValueError):
    """A request the caller must fix (answered with this message)."""


DEFAULT_EXPECTED: tuple[type[BaseException], ...] = (ValueError, LookupError, TimeoutError)


def clamp_request_value(name: str, value: float, *, low: float, high: float, default: Optional[float] = None,
                        zero_means_default: bool = False) -> float:
    """``value`` checked against ``[low, high]``.

    NaN and values below ``low`` are refused with a :class:`RequestError`; values above ``high``
    (including ``inf``) are clamped to ``high``. With ``zero_means_default``, 0 returns ``default``.
    """
    v = float(value)
    if math.isnan(v):
        raise RequestError(f"{name} is NaN")
    if zero_means_default and v == 0:
        if default is None:
            raise ValueError("zero_means_default needs a default")
        return float(default)
    if v < low:
        raise RequestError(f"{name} = {v:g} is below its minimum {low:g}")
    return min(v, high)


def _set_failure(response, message: str):
    if hasattr(response, "success"):
        response.success = False
    if hasattr(response, "message"):
        response.message = message
    return response


class CallbackGuard:
    """Wraps callbacks so they never raise into the executor (see the module docstring)."""

    def __init__(self, logger, expected: tuple[type[BaseException], ...] = DEFAULT_EXPECTED,
                 shutting_down: Optional[Callable[[], bool]] = None):
        self.logger = logger
        self.expected = tuple(expected)
        self.shutting_down = shutting_down  # errors while the context shuts down (publish fails) are not bugs
        self.counts = {"expected": 0, "unexpected": 0}
        self._seen: dict[tuple, int] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- logging
    def report_unexpected(self, where: str, exc: BaseException) -> str:
        """Log an unexpected error (traceback the first time at this place) and return the answer text."""
        tb = traceback.extract_tb(exc.__traceback__)
        site = (tb[-1].filename, tb[-1].lineno) if tb else ("?", 0)
        key = (where, type(exc).__name__, site)
        with self._lock:
            self.counts["unexpected"] += 1
            n = self._seen.get(key, 0) + 1
            self._seen[key] = n
        text = f"internal error: {type(exc).__name__}: {exc}"
        if self.shutting_down is not None and self.shutting_down():
            return text
        if n == 1:
            formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.logger.error(f"{where}: {text}\n{formatted.rstrip()}")
        else:
            self.logger.error(f"{where}: {text} (seen {n} times; traceback logged the first time)")
        return text

    def _is_expected(self, exc: BaseException) -> bool:
        return isinstance(exc, self.expected)

    # --------------------------------------------------------------- wrappers
    def service(self, callback: Callable, name: str = "") -> Callable:
        where = name or getattr(callback, "__name__", "service")

        @functools.wraps(callback)
        def guarded(request, response):
            try:
                return callback(request, response)
            except Exception as exc:  # noqa: BLE001 - the point of the guard
                fresh = type(response)()  # drop whatever the handler half-filled
                if self._is_expected(exc):
                    with self._lock:
                        self.counts["expected"] += 1
                    return _set_failure(fresh, str(exc) or type(exc).__name__)
                return _set_failure(fresh, self.report_unexpected(where, exc))

        return guarded

    def callback(self, callback: Callable, name: str = "") -> Callable:
        """A subscription or timer callback: errors are logged, the node keeps running."""
        where = name or getattr(callback, "__name__", "callback")

        @functools.wraps(callback)  # keeps the signature rclpy inspects (msg, msg_info) / (timer_info)
        def guarded(*args):
            try:
                return callback(*args)
            except Exception as exc:  # noqa: BLE001
                if self._is_expected(exc):
                    with self._lock:
                        self.counts["expected"] += 1
                    self.logger.warning(f"{where}: dropped: {type(exc).__name__}: {exc}")
                else:
                    self.report_unexpected(where, exc)
                return None

        return guarded

    def action_goal(self, callback: Callable, name: str = "") -> Callable:
        """An action goal callback: an error rejects the goal."""
        from rclpy.action import GoalResponse

        where = name or getattr(callback, "__name__", "goal")

        @functools.wraps(callback)
        def guarded(goal):
            try:
                return callback(goal)
            except Exception as exc:  # noqa: BLE001
                if self._is_expected(exc):
                    self.logger.warning(f"{where}: goal rejected: {exc}")
                else:
                    self.report_unexpected(where, exc)
                return GoalResponse.REJECT

        return guarded

    def action_execute(self, callback: Callable, result_type: type, name: str = "") -> Callable:
        """An action execute callback: an error aborts the goal with ``success: false`` and the reason."""
        where = name or getattr(callback, "__name__", "execute")

        @functools.wraps(callback)
        def guarded(goal_handle):
            try:
                return callback(goal_handle)
            except Exception as exc:  # noqa: BLE001
                text = str(exc) if self._is_expected(exc) else self.report_unexpected(where, exc)
                try:
                    if goal_handle.is_active:
                        goal_handle.abort()
                except Exception:  # noqa: BLE001 - the goal may already be finished
                    pass
                return _set_failure(result_type(), text)

        return guarded


class GuardedNodeMixin:
    """Put before ``Node``/``LifecycleNode``: every service, subscription and timer callback is guarded.

    ``expected_errors`` (class attribute) adds the node's own "bad request" exception types.
    """

    expected_errors: tuple[type[BaseException], ...] = ()

    @property
    def guard(self) -> CallbackGuard:
        g = self.__dict__.get("_callback_guard")
        if g is None:
            g = CallbackGuard(self.get_logger(), DEFAULT_EXPECTED + tuple(self.expected_errors),
                              shutting_down=lambda: not self.context.ok())
            self.__dict__["_callback_guard"] = g
        return g

    def create_service(self, srv_type, srv_name, callback, **kwargs):
        return super().create_service(srv_type, srv_name, self.guard.service(callback, srv_name), **kwargs)

    def create_subscription(self, msg_type, topic, callback, *args, **kwargs):
        return super().create_subscription(msg_type, topic, self.guard.callback(callback, f"topic {topic}"),
                                           *args, **kwargs)

    def create_timer(self, timer_period_sec, callback, *args, **kwargs):
        name = f"timer {getattr(callback, '__name__', '')}".strip()
        return super().create_timer(timer_period_sec, self.guard.callback(callback, name), *args, **kwargs)
