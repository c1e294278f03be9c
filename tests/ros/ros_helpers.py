"""Helpers for tests with real rclpy over DDS."""

import threading
import time

from rclpy.executors import MultiThreadedExecutor


class Spinner:
    """Spins nodes on a multi-threaded executor in a background thread."""

    def __init__(self, *nodes, threads: int = 6):
        self.executor = MultiThreadedExecutor(num_threads=threads)
        self.nodes = list(nodes)
        for n in nodes:
            self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def close(self):
        self.executor.shutdown()
        for n in self.nodes:
            n.destroy_node()


def wait_for(predicate, timeout_s: float = 10.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def wait_future(future, timeout_s: float = 10.0):
    assert wait_for(future.done, timeout_s), "future did not complete in time"
    return future.result()
