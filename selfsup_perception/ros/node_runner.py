"""The one ``main()`` body every node shares: init, spin on a multi-threaded executor, clean up.

Follows the current rclpy idiom (``with rclpy.init()``, ExternalShutdownException); Ctrl-C
ends the node quietly and ``destroy_node`` always runs so workers stop and files close.
"""

from __future__ import annotations

from typing import Callable

import rclpy
import rclpy.logging
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


def run_node(make_node: Callable[[], Node], *, num_threads: int = 2, args=None) -> None:
    """Construct and spin a node; invalid parameters end the process with a one-line error (exit 2)."""
    try:
        with rclpy.init(args=args):
            try:
                node = make_node()
            except (ValueError, TypeError, ImportError) as exc:
                rclpy.logging.get_logger(getattr(make_node, "__name__", "node")).fatal(f"cannot start: {exc}")
                raise SystemExit(2) from exc
            executor = MultiThreadedExecutor(num_threads=num_threads)
            executor.add_node(node)
            try:
                executor.spin()
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
