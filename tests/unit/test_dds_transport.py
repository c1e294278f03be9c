"""The Fast DDS profile for image-sized requests: applied unless the user has their own, and large enough."""

import xml.etree.ElementTree as ET

from selfsup_perception.ros.dds_transport import PROFILE_VARS, apply_transport_profile, profile_path

NS = {"d": "http://www.eprosima.com"}
IMAGE_REQUEST_BYTES = 640 * 480 * 3  # one 640x480 RGB image


def test_profile_is_applied_for_fast_dds_only_and_never_over_the_users_own():
    env = {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}
    assert apply_transport_profile(env) == profile_path() and env[PROFILE_VARS[0]] == str(profile_path())
    env = {}  # the default RMW (Fast DDS)
    assert apply_transport_profile(env) is not None
    for var in PROFILE_VARS:
        env = {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp", var: "/robot/my_profile.xml"}
        assert apply_transport_profile(env) is None and env[var] == "/robot/my_profile.xml"
        assert set(env) == {"RMW_IMPLEMENTATION", var}
    env = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert apply_transport_profile(env) is None and set(env) == {"RMW_IMPLEMENTATION"}


def test_profile_shared_memory_segment_holds_many_concurrent_image_requests():
    root = ET.parse(profile_path()).getroot()
    shm = [t for t in root.iterfind(".//d:transport_descriptor", NS) if t.findtext("d:type", namespaces=NS) == "SHM"]
    assert len(shm) == 1
    segment = int(shm[0].findtext("d:segment_size", namespaces=NS))
    assert segment >= 16 * IMAGE_REQUEST_BYTES  # the service-load bench has 10 clients with 1-2 images each
    participant = root.find(".//d:participant", NS)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.iterfind(".//d:userTransports/d:transport_id", NS)]
    assert shm[0].findtext("d:transport_id", namespaces=NS) in used
    assert participant.findtext(".//d:useBuiltinTransports", namespaces=NS) == "false"
