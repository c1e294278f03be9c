"""Shared fixtures of the simulator tests."""

import cv2
import pytest

from selfsup_perception.sim.tabletop import CameraConfig, SimConfig, TabletopSim


@pytest.fixture(scope="module")
def sim():
    """The simple world at 320x240, one simulator per test module (OpenCV on one thread). Modules that need
    another world or size define their own ``sim`` fixture, which overrides this one."""
    cv2.setNumThreads(1)
    s = TabletopSim(SimConfig(seed=0, camera=CameraConfig(width=320, height=240)))
    yield s
    s.close()
