"""Trainer and inference nodes over DDS: online rounds, resume after a kill, hot swap under load, bad requests."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_helpers import wait_for, wait_future
from sample_factory import labeled_store as _labeled_store
from sample_factory import make_sample
from sensor_msgs.msg import Image

from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.serving.promotions import PromotionLedger
from selfsup_perception.msg import ModelVersion, TrainerStatus
from selfsup_perception.nodes.inference_node import InferenceNode
from selfsup_perception.nodes.trainer_node import TrainerNode
from selfsup_perception.ros.conversions import rgb_to_msg
from selfsup_perception.ros.service_calls import call_service
from selfsup_perception.srv import LoadModel, SegmentImage

pytestmark = pytest.mark.ros
LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
H, W = 48, 64


def labeled_store(root, n=4):
    return _labeled_store(root, n, H, W, last_negative=True)


def trainer_params(tmp_path, rounds):
    return [Parameter("dataset_dir", value=str(tmp_path / "ds")), Parameter("checkpoint_dir", value=str(tmp_path / "ck")),
            Parameter("input_width", value=W), Parameter("input_height", value=H), Parameter("steps_per_round", value=2),
            Parameter("batch_size", value=2), Parameter("min_samples", value=2), Parameter("update_interval_s", value=0.0),
            Parameter("max_rounds", value=rounds), Parameter("mask_loss", value="bce")]


def test_trainer_publishes_versions_and_resumes_after_a_kill(spinner, tmp_path):
    labeled_store(tmp_path / "ds")
    listener = spinner.add(rclpy.create_node("version_listener"))
    versions, statuses = [], []
    listener.create_subscription(ModelVersion, "trainer/model_versions", versions.append, LATCHED)
    listener.create_subscription(TrainerStatus, "trainer/status", statuses.append, 10)
    trainer = spinner.add(TrainerNode(parameter_overrides=trainer_params(tmp_path, rounds=2)))
    assert wait_for(lambda: len(versions) >= 2, 120), "no model versions published"
    assert [v.version for v in versions[:2]] == [1, 2] and versions[1].step == 4
    # the promotion gate holds one positive out (quota: min_samples training labels first, then validation)
    assert wait_for(lambda: statuses and statuses[-1].dataset_size == 3, 10)
    assert statuses[-1].num_negative == 1 and statuses[-1].num_positive == 2
    assert dict(zip(versions[1].metric_names, versions[1].metric_values))["validation_labels"] == 1
    # a killed writer leaves a temp directory behind; a restart must ignore it and lose nothing
    (tmp_path / "ck" / "instance_segmentation" / ".tmp-v3-999999-dead").mkdir()
    spinner.nodes.remove(trainer)
    spinner.executor.remove_node(trainer)
    trainer.destroy_node()
    versions.clear()
    restarted = spinner.add(TrainerNode(parameter_overrides=trainer_params(tmp_path, rounds=1)))
    assert restarted.online.trainer.step == 4 and restarted.online.version == 2
    assert wait_for(lambda: any(v.version == 3 for v in versions), 120)
    assert [i.version for i in ckpt.list_versions(tmp_path / "ck", "instance_segmentation")] == [1, 2, 3]
    assert ckpt.read_meta(tmp_path / "ck" / "instance_segmentation" / "v00003")["step"] == 6


@pytest.fixture
def trained(tmp_path):
    """Two checkpoint versions trained on tiny images, both promoted (4 labels hold out no validation set,
    so the gate keeps them as candidates; the promotion is recorded here by hand)."""
    from selfsup_perception.core.learning.training.online import OnlineInstanceTrainer, OnlineTrainingConfig

    labeled_store(tmp_path / "ds")
    online = OnlineInstanceTrainer(OnlineTrainingConfig(dataset_dir=str(tmp_path / "ds"),
                                                        checkpoint_dir=str(tmp_path / "ck"), input_width=W,
                                                        input_height=H, steps_per_round=1, batch_size=2,
                                                        min_samples=2))
    online.train_round()
    online.train_round()
    assert not online.last_decision.promoted and "positive validation labels" in online.last_decision.reason
    ledger = PromotionLedger.load(tmp_path / "ck", "instance_segmentation")
    ledger.record_promotion(1, "promoted by the test fixture")
    ledger.record_promotion(2, "promoted by the test fixture")
    return tmp_path / "ck"


def inference_params(ck):
    # no input size or class names: they come from each checkpoint's metadata
    return [Parameter("checkpoint_dir", value=str(ck)), Parameter("max_concurrent_requests", value=2)]


def test_hot_swap_under_concurrent_requests_drops_nothing(spinner, trained):
    node = spinner.add(InferenceNode(parameter_overrides=inference_params(trained)))
    client_node = spinner.add(rclpy.create_node("seg_clients"))
    client = client_node.create_client(SegmentImage, "segment_image")
    pub = client_node.create_publisher(ModelVersion, "trainer/model_versions", LATCHED)
    image = rgb_to_msg(make_sample("q", h=H, w=W).before.rgb)
    stop = threading.Event()
    results = []

    def hammer():
        while not stop.is_set():
            results.append(call_service(client, SegmentImage.Request(image=image, return_label_image=True), 30.0))

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(hammer) for _ in range(3)]
        for version in (1, 2, 1, 2):
            pub.publish(ModelVersion(task="instance_segmentation", version=version, promoted=True))
            assert wait_for(lambda: node.registry.active_names().get("instance_segmentation")
                            == f"instance_segmentation/v{version}", 30)
            n = len(results)
            assert wait_for(lambda: len(results) >= n + 2, 30)
        stop.set()
        for f in futures:
            f.result()
    assert results and all(r.success for r in results), [r.message for r in results if not r.success][:3]
    served = {r.segmentation.model_version for r in results}
    assert served == {"instance_segmentation/v1", "instance_segmentation/v2"}
    label = results[-1].segmentation.label_image
    assert (label.height, label.width, label.encoding) == (H, W, "mono16")


def test_bad_requests_get_clear_errors_and_the_node_keeps_serving(spinner, trained):
    spinner.add(InferenceNode(parameter_overrides=inference_params(trained)))
    client_node = spinner.add(rclpy.create_node("bad_clients"))
    seg = client_node.create_client(SegmentImage, "segment_image")
    load = client_node.create_client(LoadModel, "load_model")
    assert seg.wait_for_service(timeout_sec=10)
    good = rgb_to_msg(make_sample("q", h=H, w=W).before.rgb)
    cases = {
        "empty image": (Image(encoding="rgb8"), "", "empty image"),
        "wrong encoding": (Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8)), "", "yuv422"),
        "unknown version": (good, "instance_segmentation/v42", "version 42 does not exist"),
        "malformed version": (good, "latest please", "not of the form"),
    }
    for name, (image, version, expected) in cases.items():
        res = wait_future(seg.call_async(SegmentImage.Request(image=image, model_version=version)), 20)
        assert not res.success and expected in res.message, (name, res.message)
    res = wait_future(load.call_async(LoadModel.Request(task="descriptors", version=-1)), 20)
    assert not res.success and "no promoted descriptors model" in res.message
    res = wait_future(load.call_async(LoadModel.Request(task="instance_segmentation", version=1)), 20)
    assert res.success and res.active.version == 1
    res = wait_future(seg.call_async(SegmentImage.Request(image=good)), 20)
    assert res.success and res.segmentation.model_version == "instance_segmentation/v1"


def test_missing_model_is_a_clear_error(spinner, tmp_path):
    (tmp_path / "nothing").mkdir()  # an empty checkpoint folder (a missing one fails configure: test_lifecycle_nodes)
    spinner.add(InferenceNode(parameter_overrides=inference_params(tmp_path / "nothing")))
    client_node = spinner.add(rclpy.create_node("no_model_client"))
    seg = client_node.create_client(SegmentImage, "segment_image")
    assert seg.wait_for_service(timeout_sec=10)
    res = wait_future(seg.call_async(SegmentImage.Request(image=rgb_to_msg(np.zeros((H, W, 3), np.uint8)))), 20)
    assert not res.success and "no instance_segmentation model is active" in res.message


def test_semantic_model_is_served_with_class_names(spinner, trained):
    import torch

    from selfsup_perception.core.learning.serving.inference import segment_semantic
    from selfsup_perception.core.learning.models.semantic_segmentation import SemanticSegConfig, SemanticSegNet
    from selfsup_perception.sim.tabletop import SEMANTIC_CLASSES

    torch.manual_seed(0)
    cfg = SemanticSegConfig()
    model = SemanticSegNet(cfg).eval()
    ckpt.save_checkpoint(trained, task="semantic_segmentation", model=model, model_config=cfg.to_dict(), step=1,
                         inference=ckpt.inference_info((W, H), SEMANTIC_CLASSES))
    spinner.add(InferenceNode(parameter_overrides=inference_params(trained)))
    client_node = spinner.add(rclpy.create_node("semantic_client"))
    seg = client_node.create_client(SegmentImage, "segment_image")
    assert seg.wait_for_service(timeout_sec=10)
    rgb = make_sample("q", h=2 * H, w=2 * W).before.rgb
    res = wait_future(seg.call_async(SegmentImage.Request(image=rgb_to_msg(rgb))), 20)
    assert res.success, res.message
    sem = res.segmentation.semantic_image
    assert (sem.height, sem.width, sem.encoding) == (2 * H, 2 * W, "mono8")
    assert list(res.segmentation.class_names) == list(SEMANTIC_CLASSES)
    expected = segment_semantic(model, rgb, (W, H))
    assert np.array_equal(np.frombuffer(bytes(sem.data), np.uint8).reshape(2 * H, 2 * W), expected)


def test_trainer_pretrains_semantic_segmentation_on_registered_views(spinner, tmp_path):
    from view_factory import H as VH
    from view_factory import W as VW
    from view_factory import add_plane_view

    from selfsup_perception.core.registration.pair_store import PairStore

    store = PairStore(tmp_path / "reg")
    for tx in (0.0, 0.1, 0.2):
        add_plane_view(store, tx, with_regions=False)
    listener = spinner.add(rclpy.create_node("semantic_versions"))
    versions = []
    listener.create_subscription(ModelVersion, "trainer/model_versions", versions.append, LATCHED)
    spinner.add(TrainerNode(parameter_overrides=[
        Parameter("task", value="semantic_segmentation"), Parameter("dataset_dir", value=str(tmp_path / "reg")),
        Parameter("checkpoint_dir", value=str(tmp_path / "ck")), Parameter("input_width", value=VW),
        Parameter("input_height", value=VH), Parameter("steps_per_round", value=2), Parameter("batch_size", value=2),
        Parameter("min_samples", value=1), Parameter("update_interval_s", value=0.0), Parameter("max_rounds", value=1)]))
    assert wait_for(lambda: versions, 120), "no semantic model version published"
    assert versions[0].task == "semantic_segmentation" and versions[0].step == 2
    model, meta = ckpt.load_model_for_inference(versions[0].checkpoint_path)
    assert meta["task"] == "semantic_segmentation" and type(model).__name__ == "SemanticSegNet"


def test_stream_mode_segments_the_newest_image(spinner, trained):
    from selfsup_perception.msg import InstanceSegmentation

    spinner.add(InferenceNode(parameter_overrides=inference_params(trained) + [
        Parameter("stream", value=True), Parameter("image_topic", value="stream_test/rgb")]))
    node = spinner.add(rclpy.create_node("stream_client"))
    segmentations, overlays = [], []
    node.create_subscription(InstanceSegmentation, "inference/segmentation", segmentations.append, 2)
    node.create_subscription(Image, "inference/overlay", overlays.append, 2)
    pub = node.create_publisher(Image, "stream_test/rgb", 1)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 10)
    image = rgb_to_msg(make_sample("q", h=H, w=W).before.rgb, "cam")
    image.header.stamp.sec = 42
    assert wait_for(lambda: (pub.publish(image), segmentations and overlays)[1], 20)
    assert segmentations[0].header.stamp.sec == 42 and segmentations[0].model_version.startswith("instance_segmentation/v")
    assert (overlays[0].height, overlays[0].width, overlays[0].encoding) == (H, W, "rgb8")


def test_trainer_learns_descriptors_from_interaction_images_and_inference_serves_them(spinner, tmp_path):
    from selfsup_perception.srv import ComputeDescriptors

    labeled_store(tmp_path / "ds")
    listener = spinner.add(rclpy.create_node("descriptor_versions"))
    versions = []
    listener.create_subscription(ModelVersion, "trainer/model_versions", versions.append, LATCHED)
    spinner.add(TrainerNode(parameter_overrides=[
        Parameter("task", value="descriptors"), Parameter("dataset_dir", value=str(tmp_path / "ds")),
        Parameter("checkpoint_dir", value=str(tmp_path / "ck")), Parameter("input_width", value=W),
        Parameter("input_height", value=H), Parameter("steps_per_round", value=1), Parameter("batch_size", value=2),
        Parameter("min_samples", value=2), Parameter("update_interval_s", value=0.0), Parameter("max_rounds", value=1)]))
    assert wait_for(lambda: versions, 120), "no descriptor model version published"
    assert versions[0].task == "descriptors" and versions[0].step == 1
    spinner.add(InferenceNode(parameter_overrides=inference_params(tmp_path / "ck")))
    client_node = spinner.add(rclpy.create_node("descriptor_client"))
    client = client_node.create_client(ComputeDescriptors, "compute_descriptors")
    assert client.wait_for_service(timeout_sec=10)
    rgb = make_sample("q", h=H, w=W).before.rgb
    res = wait_future(client.call_async(ComputeDescriptors.Request(image=rgb_to_msg(rgb))), 30)
    assert res.success, res.message
    d = res.descriptors
    assert (d.height, d.width) == (H, W) and d.model_version == "descriptors/v1"
    desc = np.asarray(d.data, dtype=np.float32).reshape(H, W, d.dimension)
    np.testing.assert_allclose(np.linalg.norm(desc, axis=-1), 1.0, atol=1e-4)
