"""Fast DDS transport sized for image-carrying service requests: a larger shared-memory segment.

Our services take whole camera images in their requests (640x480 RGB: 0.9 MB;
``find_correspondences``: two). Fast DDS sends them between processes on one host through the
sender's shared-memory segment, 512 KB per participant by default. Measured with
``bench/service_load.py`` (8 ``segment_image`` clients + 2 descriptor clients + ``load_model``
every 2 s + the trainer, 60 s, 2-core machine): after the load, every request with a full-size
image arrived about 3 s late at the inference node (Fast DDS's heartbeat period: the first
transmission was dropped and only repaired later), while small images and the node's own work
took milliseconds (a fresh client in the same process was as late); 300 explicit-version
requests at ~3 s each made "the 60 s run stall". With the 32 MB segment of
``config/fastdds_profile.xml`` the same sequence answered every request in 0.1-0.2 s, and the
60 s bench completes (README, "Service load"). Why the delays outlast the load was not traced
inside Fast DDS; the segment size is the setting that removes them.

:func:`apply_transport_profile` points ``FASTDDS_DEFAULT_PROFILES_FILE`` at that profile before
``rclpy.init`` (a participant reads it when it is created). A profile file the user set
(``FASTDDS_DEFAULT_PROFILES_FILE`` or the older ``FASTRTPS_DEFAULT_PROFILES_FILE``) always wins,
and other RMW implementations are left alone. Clients in other processes (another robot node
calling our services) send from *their* segment: give them the same profile for large requests.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping, Optional

PROFILE_FILE = "fastdds_profile.xml"
PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FASTDDS_RMWS = ("", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")  # "": the default RMW of Kilted


def profile_path() -> Path:
    from selfsup_perception.ros.package_paths import config_dir

    return config_dir() / PROFILE_FILE


def apply_transport_profile(env: Optional[MutableMapping[str, str]] = None) -> Optional[Path]:
    """Set the Fast DDS profile in ``env`` (default: this process); returns it, or None when not applied."""
    env = os.environ if env is None else env
    if env.get("RMW_IMPLEMENTATION", "") not in FASTDDS_RMWS:
        return None
    if any(env.get(var) for var in PROFILE_VARS):
        return None  # the user's own profile
    path = profile_path()
    if not path.is_file():
        return None
    env[PROFILE_VARS[0]] = str(path)
    return path
