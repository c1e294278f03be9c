"""The one ``main()`` body every node shares: init, spin on a multi-threaded executor, clean up.

Follows the current rclpy idiom (``with rclpy.init()``, ExternalShutdownException). SIGINT and
SIGTERM both end the node quietly (rclpy's signal handlers shut the context down, the executor
returns) and ``destroy_node`` always runs so workers stop and files close. Nothing escapes as a
traceback: invalid parameters end the process with a one-line error (exit 2); an error while
building the node or one that escapes the executor (every callback is guarded by
:mod:`selfsup_perception.ros.callback_guard`, so that is a bug) is logged with its traceback and
the process exits 1, for the launcher to restart it.

The Fast DDS profile of :mod:`selfsup_perception.ros.dds_transport` is applied first (unless the
user set their own).

After a clean shutdown (context shut down, ``destroy_node`` done: workers were given a bounded
time to stop, files are closed) the process flushes its logs and ends with ``os._exit``: the
interpreter's own finalisation (torch, DDS, module teardown) took 1.7 s on the shared 2-core
machine, and a worker thread still inside torch at that point aborts the process
(``terminate called without an active exception``). Everything on disk is written atomically,
so nothing partial is left behind.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Callable

import rclpy
import rclpy.logging
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from selfsup_perception.ros.dds_transport import apply_transport_profile


def run_node(make_node: Callable[[], Node], *, num_threads: int = 2, args=None) -> None:
    """Construct and spin a node; see the module docstring for how it ends."""
    logger = rclpy.logging.get_logger(getattr(make_node, "__name__", "node"))
    apply_transport_profile()  # before rclpy.init: image-sized requests need a larger shared-memory segment
    try:
        with rclpy.init(args=args):
            try:
                node = make_node()
            except (ValueError, TypeError, ImportError) as exc:
                logger.fatal(f"cannot start: {exc}")
                raise SystemExit(2) from exc
            except (KeyboardInterrupt, ExternalShutdownException):
                raise
            except Exception as exc:  # noqa: BLE001 - report, exit non-zero (the launcher restarts)
                if not rclpy.ok():  # SIGINT/SIGTERM arrived while the node was being built
                    raise KeyboardInterrupt from exc
                logger.fatal(f"cannot start: {type(exc).__name__}: {exc}\n{traceback.format_exc().rstrip()}")
                raise SystemExit(1) from exc
            executor = MultiThreadedExecutor(num_threads=num_threads)
            executor.add_node(node)
            try:
                executor.spin()
            except (KeyboardInterrupt, ExternalShutdownException):
                pass
            except Exception as exc:  # noqa: BLE001
                if not rclpy.ok():  # the executor raced the signal handler's shutdown: a normal stop
                    raise KeyboardInterrupt from exc
                logger.fatal(f"executor stopped: {type(exc).__name__}: {exc}\n{traceback.format_exc().rstrip()}")
                raise SystemExit(1) from exc
            finally:
                try:
                    executor.shutdown(timeout_sec=0.3)  # in-flight callbacks: the process ends right after
                except Exception:  # noqa: BLE001 - already shut down with the context
                    pass
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    _exit_now(0)


def _exit_now(code: int) -> None:
    """End the process without interpreter finalisation (see the module docstring)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
