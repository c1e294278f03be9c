"""Every interface of the package through real rclpy publishers, services and actions over DDS."""

import importlib
import inspect
import random
import time

import pytest
from rclpy.action import ActionClient, ActionServer
from rclpy.qos import QoSProfile, ReliabilityPolicy

import selfsup_perception.msg as msgs
import selfsup_perception.srv as srvs
from selfsup_perception.action import ExecuteInteraction

from ros_helpers import wait_for, wait_future

pytestmark = pytest.mark.ros
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _message_classes(module):
    return [c for _, c in inspect.getmembers(module, inspect.isclass) if hasattr(c, "get_fields_and_field_types")]


def fill(msg, rng: random.Random, depth: int = 0):
    """Give every field of ``msg`` a random non-default value (recursively, small sequences)."""
    for name, ftype in msg.get_fields_and_field_types().items():
        current = getattr(msg, name)
        base = ftype.split("<")[0]
        if base.startswith("sequence") or ftype.endswith("]"):
            elem = ftype[ftype.index("<") + 1: ftype.rindex(">")] if "<" in ftype else ftype[: ftype.index("[")]
            n = len(current) if ftype.endswith("]") and not ftype.endswith("[]") else 2
            setattr(msg, name, [_value(elem, rng, current, depth) for _ in range(n)])
        else:
            setattr(msg, name, _value(ftype, rng, current, depth))
    return msg


def _value(ftype, rng, current, depth):
    if "/" in ftype:
        pkg, name = ftype.split("/")
        return fill(getattr(importlib.import_module(f"{pkg}.msg"), name)(), rng, depth + 1)
    if ftype == "boolean":
        return True
    if ftype in ("float", "double"):
        return float(rng.randint(1, 1000)) / 8.0
    if ftype in ("octet", "uint8", "char"):
        return rng.randint(1, 255) if ftype != "octet" else bytes([rng.randint(1, 255)])
    if "int" in ftype:
        return rng.randint(1, 120)
    if ftype.startswith("string"):
        return f"s{rng.randint(0, 999)}"
    raise AssertionError(f"unhandled field type {ftype}")


MSG_CLASSES = _message_classes(msgs)


def test_package_defines_the_graph_interfaces():
    names = {c.__name__ for c in MSG_CLASSES}
    assert {"RgbdView", "InteractionSample", "LabeledSample", "InstanceSegmentation", "SegmentedInstance",
            "DescriptorImage", "ModelVersion", "TrainerStatus", "RegisteredViewPair"} <= names
    srv_names = {n for n, c in inspect.getmembers(srvs, inspect.isclass)}
    assert {"CaptureView", "SegmentImage", "ComputeDescriptors", "FindCorrespondences", "LoadModel"} <= srv_names


@pytest.mark.parametrize("cls", MSG_CLASSES, ids=lambda c: c.__name__)
def test_message_round_trip_over_dds(spinner, cls):
    import rclpy

    sent = fill(cls(), random.Random(hash(cls.__name__) % 1000))
    node = spinner.add(rclpy.create_node(f"rt_{cls.__name__.lower()}"))
    received = []
    node.create_subscription(cls, "roundtrip", received.append, RELIABLE)
    pub = node.create_publisher(cls, "roundtrip", RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 10)
    pub.publish(sent)
    assert wait_for(lambda: received, 10), f"{cls.__name__} not received"
    assert received[0] == sent


SRV_CLASSES = [c for n, c in inspect.getmembers(srvs, inspect.isclass) if hasattr(c, "Request")]


@pytest.mark.parametrize("cls", SRV_CLASSES, ids=lambda c: c.__name__)
def test_service_round_trip_over_dds(spinner, cls):
    import rclpy

    rng = random.Random(7)
    request = fill(cls.Request(), rng)
    response = fill(cls.Response(), rng)
    seen = []

    def serve(req, res):
        seen.append(req)
        for name in res.get_fields_and_field_types():
            setattr(res, name, getattr(response, name))
        return res

    server_node = spinner.add(rclpy.create_node(f"srv_{cls.__name__.lower()}"))
    server_node.create_service(cls, "rt_service", serve)
    client_node = spinner.add(rclpy.create_node(f"cli_{cls.__name__.lower()}"))
    client = client_node.create_client(cls, "rt_service")
    assert client.wait_for_service(timeout_sec=10)
    got = wait_future(client.call_async(request), 10)
    assert seen[0] == request
    assert got == response


def test_action_round_trip_with_feedback(spinner):
    import rclpy

    node = spinner.add(rclpy.create_node("action_rt"))
    rng = random.Random(3)
    expected = fill(ExecuteInteraction.Result(), rng)

    def execute(handle):
        for stage, p in (("capturing_before", 0.1), ("executing", 0.5)):
            handle.publish_feedback(ExecuteInteraction.Feedback(stage=stage, progress=p))
            time.sleep(0.05)
        handle.succeed()
        return expected

    ActionServer(node, ExecuteInteraction, "rt_action", execute)
    client = ActionClient(node, ExecuteInteraction, "rt_action")
    assert client.wait_for_server(timeout_sec=10)
    feedback = []
    goal = fill(ExecuteInteraction.Goal(), rng)
    handle = wait_future(client.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback)), 10)
    assert handle.accepted
    result = wait_future(handle.get_result_async(), 10).result
    assert result == expected
    assert [f.stage for f in feedback] == ["capturing_before", "executing"]
