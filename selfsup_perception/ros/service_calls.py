"""Blocking service calls with a timeout, safe from inside executor callbacks.

A callback running on a MultiThreadedExecutor may wait for another service as long as
the response is delivered by another executor thread; this helper waits on an event
with a timeout instead of spinning, and always returns (never blocks forever).
"""

from __future__ import annotations

import threading


class ServiceCallError(RuntimeError):
    """The service was not available or did not answer in time."""


def wait_for_service(client, timeout_s: float) -> None:
    if not client.wait_for_service(timeout_sec=timeout_s):
        raise ServiceCallError(f"service {client.srv_name} is not available after {timeout_s:.1f} s")


def call_service(client, request, timeout_s: float):
    """Call ``client`` and return the response, or raise :class:`ServiceCallError` after ``timeout_s``."""
    wait_for_service(client, min(timeout_s, 5.0))
    done = threading.Event()
    future = client.call_async(request)
    future.add_done_callback(lambda _f: done.set())
    if not done.wait(timeout_s):
        client.remove_pending_request(future)
        raise ServiceCallError(f"service {client.srv_name} did not answer within {timeout_s:.1f} s")
    if future.exception() is not None:
        raise ServiceCallError(f"service {client.srv_name} failed: {future.exception()}")
    return future.result()
