"""Fixtures for tests with real rclpy over DDS (no mocks of ROS)."""

import pytest
import rclpy
from ros_helpers import Spinner


@pytest.fixture
def ros_context():
    with rclpy.init():
        yield


@pytest.fixture
def spinner(ros_context):
    s = Spinner()
    yield s
    s.close()
