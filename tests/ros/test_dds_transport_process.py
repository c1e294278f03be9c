"""A process that applies the transport profile (as every node's main does) gets the large shared-memory segment.

Regression test for the stalled 60 s service-load run: with Fast DDS's default 512 KB segment,
image-sized requests arrived ~3 s late after a minute of concurrent clients
(selfsup_perception/ros/dds_transport.py). Fast DDS backs each participant's segment with a
``/dev/shm/fastdds_*`` file of the segment's size.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros,
              pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm (Linux shared memory)")]

CHILD = r"""
import glob, json, os, sys, time
from selfsup_perception.ros.dds_transport import apply_transport_profile
if sys.argv[1] == "profile":
    apply_transport_profile()
import rclpy
before = set(glob.glob("/dev/shm/fastdds_*"))
with rclpy.init():
    node = rclpy.create_node("transport_probe")
    time.sleep(0.5)
    mapped = {line.split()[-1] for line in open("/proc/self/maps") if "/dev/shm/fastdds_" in line}
    new = (set(glob.glob("/dev/shm/fastdds_*")) - before) & mapped  # created and mapped by this process
    print(json.dumps(max((os.path.getsize(p) for p in new), default=0)))
    node.destroy_node()
"""


def largest_new_segment(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.endswith("DEFAULT_PROFILES_FILE")}
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if env["RMW_IMPLEMENTATION"] != "rmw_fastrtps_cpp":
        pytest.skip("the profile is for Fast DDS")
    out = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_node_process_gets_a_segment_for_many_image_requests():
    assert largest_new_segment("profile") >= 32 * 2**20
    assert largest_new_segment("default") < 2**20  # what a process without the profile gets (512 KB)
