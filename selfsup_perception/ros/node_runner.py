"""The one ``main()`` body every node shares: init, spin on a multi-threaded executor, clean up.

Follows the current rclpy idiom (``with rclpy.init()``, ExternalShutdownException); Ctrl-C
ends the node quietly and ``destroy_node`` always runs so workers stop and files close.
"""

from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


def run_node(make_node: Callable[[], Node], *, num_threads: int = 2, args=None) -> None:
    try:
        with rclpy.init(args=args):
            node = make_node()
            executor = MultiThreadedExecutor(num_threads=num_threads)
            executor.add_node(node)
            try:
                executor.spin()
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
