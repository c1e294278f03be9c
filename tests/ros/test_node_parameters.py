"""Parameters are applied or refused, never silently ignored: set over rclpy's parameter services (as `ros2 param set`)."""

import pytest
import rclpy
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from ros_helpers import wait_for, wait_future

from selfsup_perception.nodes.camera_capture_node import CameraCaptureNode
from selfsup_perception.nodes.inference_node import InferenceNode
from selfsup_perception.nodes.labeler_node import LabelerNode
from selfsup_perception.nodes.trainer_node import TrainerNode

pytestmark = pytest.mark.ros


def _value(v) -> ParameterValue:
    if isinstance(v, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
    if isinstance(v, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
    if isinstance(v, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=v)


def set_param(client_node, node_name: str, name: str, value):
    """One SetParameters call over DDS, as `ros2 param set /node name value` makes it."""
    client = client_node.create_client(SetParameters, f"/{node_name}/set_parameters")
    assert client.wait_for_service(timeout_sec=10), f"/{node_name}/set_parameters not available"
    req = SetParameters.Request(parameters=[ParameterMsg(name=name, value=_value(value))])
    result = wait_future(client.call_async(req), 10).results[0]
    client_node.destroy_client(client)
    return result


def test_inference_dynamic_parameter_takes_effect_and_read_only_is_refused(spinner, tmp_path):
    node = spinner.add(InferenceNode(parameter_overrides=[Parameter("checkpoint_dir", value=str(tmp_path))]))
    client = spinner.add(rclpy.create_node("param_client"))
    ok = set_param(client, "inference", "score_threshold", 0.7)
    assert ok.successful, ok.reason
    assert wait_for(lambda: node.params.score_threshold == 0.7)
    bad = set_param(client, "inference", "score_threshold", 1.5)  # validated by InferenceParams
    assert not bad.successful and "score_threshold" in bad.reason
    assert node.params.score_threshold == 0.7
    refused = set_param(client, "inference", "checkpoint_dir", str(tmp_path / "elsewhere"))
    assert not refused.successful and "read-only" in refused.reason
    assert node.params.checkpoint_dir == str(tmp_path)
    assert node.get_parameter("checkpoint_dir").value == str(tmp_path)


def test_trainer_learning_rate_reaches_the_optimizer_schedule(spinner, tmp_path):
    node = spinner.add(TrainerNode(parameter_overrides=[
        Parameter("dataset_dir", value=str(tmp_path / "ds")), Parameter("checkpoint_dir", value=str(tmp_path / "ck")),
        Parameter("input_width", value=64), Parameter("input_height", value=48), Parameter("min_samples", value=100)]))
    client = spinner.add(rclpy.create_node("param_client"))
    ok = set_param(client, "trainer", "learning_rate", 0.01)
    assert ok.successful, ok.reason
    assert wait_for(lambda: node.online.trainer.config.lr == 0.01)
    assert node.online.trainer.lr_at(10_000) == pytest.approx(0.01)  # past warm-up: the new rate is used
    ok = set_param(client, "trainer", "steps_per_round", 7)
    assert ok.successful and wait_for(lambda: node.online.config.steps_per_round == 7)
    for name, value in (("task", "descriptors"), ("input_width", 128), ("dataset_dir", "/tmp/x")):
        refused = set_param(client, "trainer", name, value)
        assert not refused.successful and "read-only" in refused.reason, name


def test_labeler_threshold_rebuilds_the_labeler(spinner, tmp_path):
    node = spinner.add(LabelerNode(parameter_overrides=[Parameter("dataset_dir", value=str(tmp_path))]))
    client = spinner.add(rclpy.create_node("param_client"))
    before = node.labeler
    ok = set_param(client, "labeler", "min_area_px", 321.0)
    assert ok.successful, ok.reason
    assert wait_for(lambda: node.params.min_area_px == 321.0 and node.labeler is not before)
    refused = set_param(client, "labeler", "queue_size", 3)
    assert not refused.successful and "read-only" in refused.reason


def test_camera_capture_topics_are_read_only(spinner):
    node = spinner.add(CameraCaptureNode())
    client = spinner.add(rclpy.create_node("param_client"))
    refused = set_param(client, "camera_capture", "rgb_topic", "/other/image")
    assert not refused.successful and "read-only" in refused.reason
    ok = set_param(client, "camera_capture", "default_timeout_s", 3.5)
    assert ok.successful, ok.reason
    assert wait_for(lambda: node.params.default_timeout_s == 3.5)
