"""Inference: segmentation and dense descriptors as services and a stream, with hot-swapped models.

The input size, class names and normalisation of each model come from its checkpoint's
metadata (``meta.json``: ``inference``), so no parameter repeats "the size it was trained at".

Lifecycle-shaped (rclpy LifecycleNode; ``autostart`` configures and activates at start):
configure loads the served (promoted) model of each task from ``checkpoint_dir`` (missing models are
fine: requests then get a clear error), activate starts serving, cleanup frees the models.

Services: ``segment_image`` (SegmentImage), ``compute_descriptors`` (ComputeDescriptors),
``find_correspondences`` (FindCorrespondences), ``load_model`` (LoadModel).
Only promoted model versions are served (the trainer's promotion gate, with its ledger in
``checkpoint_dir``): configure loads the served version of each task, not the newest, and
``load_model`` refuses candidates. Topics in: ``trainer/model_versions`` (ModelVersion): a
version published with ``promoted`` (or a rollback) is loaded off the executor and swapped in
atomically, candidates are ignored; in-flight requests finish on the model they started
with, so no request is dropped. With ``stream`` set, the newest image of ``image_topic``
(bounded queue of 1) is segmented and published on ``inference/segmentation`` and
``inference/overlay``. Bad requests get ``success: false`` and a message; the node keeps serving.
"""

from __future__ import annotations

import array
import threading
from dataclasses import dataclass

import numpy as np
import torch
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, RegionOfInterest

from selfsup_perception.core.dataset.visualization import overlay_mask
from selfsup_perception.core.descriptors.matching import compute_descriptor_image, find_correspondences
from selfsup_perception.core.image_conversion import ImageConversionError, array_to_image, to_rgb8
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.serving.checkpoints import CheckpointError
from selfsup_perception.core.learning.serving.inference import label_image, segment_instances, segment_semantic
from selfsup_perception.core.learning.serving.model_registry import TASKS, ModelNotAvailableError, ModelRegistry
from selfsup_perception.msg import InstanceSegmentation, ModelVersion, SegmentedInstance
from selfsup_perception.ros.conversions import mask_to_msg, rgb_to_msg
from selfsup_perception.ros.node_runner import run_node
from selfsup_perception.ros.parameters import declare_config, field_with_help
from selfsup_perception.ros.work_queue import WorkQueue
from selfsup_perception.srv import ComputeDescriptors, FindCorrespondences, LoadModel, SegmentImage

LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
REQUEST_ERRORS = (ImageConversionError, ModelNotAvailableError, CheckpointError, ValueError)


@dataclass(frozen=True)
class InferenceParams:
    checkpoint_dir: str = field_with_help("data/checkpoints", "model versions written by the trainer")
    device: str = field_with_help("cpu", "cpu | cuda | cuda:N")
    score_threshold: float = field_with_help(0.3, "default minimum instance score")
    max_instances: int = field_with_help(20, "default maximum number of instances")
    max_concurrent_requests: int = field_with_help(2, "requests served at once; more wait up to request_wait_s")
    request_wait_s: float = field_with_help(10.0, "how long a request may wait for a free slot (s)")
    follow_trainer: bool = field_with_help(True, "activate each version the trainer promotes (or rolls back to)")
    stream: bool = field_with_help(False, "segment the newest image of image_topic continuously")
    image_topic: str = field_with_help("camera/color/image_raw", "input of the stream")
    torch_threads: int = field_with_help(2, "CPU threads for inference")
    correspondence_coarse_stride: int = field_with_help(
        1, "find_correspondences: 1 = exhaustive search; N > 1 searches every N-th target pixel, then refines "
        "within N px (faster, can miss on descriptors that are not smooth at that scale)")
    autostart: bool = field_with_help(True, "configure and activate at start")

    def __post_init__(self) -> None:
        if self.max_concurrent_requests < 1:
            raise ValueError("max_concurrent_requests must be >= 1")
        if self.correspondence_coarse_stride < 1:
            raise ValueError("correspondence_coarse_stride must be >= 1")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError("score_threshold must be in [0, 1]")


class InferenceNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("inference", **kwargs)
        self.params = declare_config(self, InferenceParams, read_only=("device",))
        torch.set_num_threads(max(self.params.torch_threads, 1))
        self.registry: ModelRegistry | None = None
        self._active = False
        self._slots = threading.BoundedSemaphore(self.params.max_concurrent_requests)
        self.served = {"ok": 0, "failed": 0}
        self._swap_queue = WorkQueue(self._load_version, maxsize=4, on_error=self._on_swap_error, name="model-swap")
        self._stream_queue: WorkQueue | None = None
        services = ReentrantCallbackGroup()
        self.create_service(SegmentImage, "segment_image", self._on_segment, callback_group=services)
        self.create_service(ComputeDescriptors, "compute_descriptors", self._on_descriptors, callback_group=services)
        self.create_service(FindCorrespondences, "find_correspondences", self._on_correspondences,
                            callback_group=services)
        self.create_service(LoadModel, "load_model", self._on_load_model, callback_group=services)
        self.segmentation_pub = self.create_publisher(InstanceSegmentation, "inference/segmentation", 2)
        self.overlay_pub = self.create_publisher(Image, "inference/overlay", 2)
        self.active_pub = self.create_publisher(ModelVersion, "inference/active_models", LATCHED)
        self.create_subscription(ModelVersion, "trainer/model_versions", self._on_model_version, LATCHED,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        if self.params.autostart:
            self.trigger_configure()
            self.trigger_activate()

    # ------------------------------------------------------------- lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self.registry = ModelRegistry(self.params.checkpoint_dir, device=self.params.device)
        except (RuntimeError, ValueError) as exc:
            self.get_logger().error(f"cannot use device {self.params.device!r}: {exc}")
            return TransitionCallbackReturn.FAILURE
        for task in TASKS:
            try:
                loaded = self.registry.activate(task, self.registry.served_version(task))
                self.get_logger().info(f"serving {loaded.name} from {loaded.path}")
                self._announce(loaded)
            except ModelNotAvailableError:
                pass
            except CheckpointError as exc:
                self.get_logger().error(f"served {task} checkpoint unusable: {exc}")
        if not self.registry.active_names():
            self.get_logger().warning(f"no model in {self.params.checkpoint_dir} yet; waiting for the trainer")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        if self.params.stream:
            self._stream_queue = WorkQueue(self._stream_one, maxsize=1, on_error=self._on_stream_error, name="stream")
            self._stream_sub = self.create_subscription(Image, self.params.image_topic, self._stream_queue.put, 1)
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._active = False
        if self._stream_queue is not None:
            self.destroy_subscription(self._stream_sub)
            self._stream_queue.stop()
            self._stream_queue = None
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self.registry = None  # models are freed when the last request holding one ends
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._active = False
        self._swap_queue.stop()
        return TransitionCallbackReturn.SUCCESS

    # ----------------------------------------------------------- model swap
    def _on_model_version(self, msg: ModelVersion) -> None:
        if self.params.follow_trainer and msg.promoted:  # candidates stay on disk, never served
            self._swap_queue.put(msg)

    def _load_version(self, msg: ModelVersion) -> None:
        if self.registry is None:
            return
        current = self.registry.active_names().get(msg.task)
        if current == f"{msg.task}/v{msg.version}":
            return
        loaded = self.registry.activate(msg.task, int(msg.version), msg.checkpoint_path or None)
        what = f"rolled back to {loaded.name} (from v{msg.previous_version})" if msg.rolled_back else \
            f"now serving {loaded.name}"
        self.get_logger().info(what + (f": {msg.promotion_reason}" if msg.promotion_reason else ""))
        self._announce(loaded, msg)

    def _on_swap_error(self, msg, exc) -> None:
        self.get_logger().error(f"could not load {msg.task} v{msg.version}: {exc}; keeping the current model")

    def _announce(self, loaded, source: ModelVersion | None = None) -> ModelVersion:
        """Publish the now-active version on inference/active_models (promotion fields from ``source`` or meta)."""
        msg = ModelVersion(task=loaded.task, version=loaded.version, step=int(loaded.meta.get("step", 0)),
                           checkpoint_path=str(loaded.path), promoted=True)
        if source is not None:
            msg.rolled_back, msg.previous_version = source.rolled_back, source.previous_version
            msg.promotion_reason = source.promotion_reason
            msg.validation_names, msg.validation_values = list(source.validation_names), list(source.validation_values)
        else:
            msg.promotion_reason = str(loaded.meta.get("promotion_reason", ""))
            validation = loaded.meta.get("validation") or {}
            msg.validation_names, msg.validation_values = list(validation), [float(v) for v in validation.values()]
        msg.stamp = self.get_clock().now().to_msg()
        self.active_pub.publish(msg)
        return msg

    # -------------------------------------------------------------- serving
    def _serve(self, response, work) -> object:
        """Run ``work(response)`` in a request slot, turning every bad request into a clear error."""
        if not self._active or self.registry is None:
            response.success, response.message = False, "inference node is not active (lifecycle state)"
            return response
        if not self._slots.acquire(timeout=self.params.request_wait_s):
            response.success, response.message = False, "busy: no free request slot"
            return response
        try:
            work(response)
            response.success = True
            self.served["ok"] += 1
        except REQUEST_ERRORS as exc:
            response.success, response.message = False, str(exc)
            self.served["failed"] += 1
        except Exception as exc:  # noqa: BLE001 - never let one request take the node down
            response.success, response.message = False, f"internal error: {exc}"
            self.served["failed"] += 1
            self.get_logger().error(f"request failed: {exc}")
        finally:
            self._slots.release()
        return response

    def segment(self, rgb: np.ndarray, model_version: str = "", score_threshold: float = 0.0,
                max_instances: int = 0, with_label_image: bool = True, header=None):
        """(InstanceSegmentation message, list of core Instances) of one RGB image."""
        p = self.params
        loaded = self.registry.get("instance_segmentation", model_version)
        instances = segment_instances(loaded.model, rgb, ckpt.serving_input_size(loaded.meta),
                                      score_threshold=score_threshold or p.score_threshold,
                                      max_instances=max_instances or p.max_instances)
        out = InstanceSegmentation(model_version=loaded.name)
        if header is not None:
            out.header = header
        for i, inst in enumerate(instances):
            x0, y0, x1, y1 = inst.box
            item = SegmentedInstance(id=i + 1, score=float(inst.score), mask=mask_to_msg(inst.mask[y0:y1 + 1, x0:x1 + 1]))
            item.box = RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0 + 1, height=y1 - y0 + 1)
            out.instances.append(item)
        if with_label_image:
            array_to_image(label_image(instances, rgb.shape[:2]), "mono16", out.label_image)
        self._add_semantic(out, rgb)
        return out, instances

    def _add_semantic(self, out: InstanceSegmentation, rgb: np.ndarray) -> None:
        """Fill the semantic image when a semantic segmentation model is active."""
        try:
            loaded = self.registry.active("semantic_segmentation")
        except ModelNotAvailableError:
            return
        p = self.params
        classes = segment_semantic(loaded.model, rgb, ckpt.serving_input_size(loaded.meta))
        array_to_image(classes, "mono8", out.semantic_image)
        out.class_names = ckpt.serving_class_names(loaded.meta)

    def _on_segment(self, request, response):
        def work(res):
            rgb = to_rgb8(request.image)
            if self.registry.active_names().get("instance_segmentation") is None and not request.model_version:
                # only a semantic model: answer with the semantic image alone
                try:
                    self.registry.active("semantic_segmentation")
                except ModelNotAvailableError:
                    pass
                else:
                    res.segmentation = InstanceSegmentation(header=request.image.header)
                    self._add_semantic(res.segmentation, rgb)
                    res.segmentation.model_version = self.registry.active_names()["semantic_segmentation"]
                    res.message = f"semantic segmentation from {res.segmentation.model_version}"
                    return
            res.segmentation, _ = self.segment(rgb, request.model_version, request.score_threshold,
                                            request.max_instances, request.return_label_image, request.image.header)
            res.message = f"{len(res.segmentation.instances)} instances from {res.segmentation.model_version}"
        return self._serve(response, work)

    def _on_descriptors(self, request, response):
        def work(res):
            rgb = to_rgb8(request.image)
            loaded = self.registry.get("descriptors", request.model_version)
            desc = compute_descriptor_image(loaded.model, rgb, device=self.registry.device)
            d = res.descriptors
            d.header, d.model_version = request.image.header, loaded.name
            d.height, d.width, d.dimension = desc.shape
            d.data = array.array("f", np.ascontiguousarray(desc, dtype=np.float32).tobytes())  # no Python floats
            res.message = f"{desc.shape[1]}x{desc.shape[0]}x{desc.shape[2]} from {loaded.name}"
        return self._serve(response, work)

    def _on_correspondences(self, request, response):
        def work(res):
            if len(request.reference_pixels) % 2:
                raise ValueError("reference_pixels must hold (u, v) pairs")
            ref, tgt = to_rgb8(request.reference_image), to_rgb8(request.target_image)
            loaded = self.registry.get("descriptors", request.model_version)
            pixels = np.asarray(request.reference_pixels, dtype=np.float64).reshape(-1, 2)
            d_ref = compute_descriptor_image(loaded.model, ref, device=self.registry.device)
            d_tgt = compute_descriptor_image(loaded.model, tgt, device=self.registry.device)
            matched, confidence = find_correspondences(d_ref, d_tgt, pixels,
                                                       coarse_stride=self.params.correspondence_coarse_stride)
            res.model_version = loaded.name
            res.target_pixels = matched.astype(np.float32).reshape(-1).tolist()
            res.confidences = confidence.astype(np.float32).tolist()
            res.message = f"{len(pixels)} correspondences from {loaded.name}"
        return self._serve(response, work)

    def _on_load_model(self, request, response):
        if self.registry is None:
            response.success, response.message = False, "inference node is not configured"
            return response
        try:
            if request.checkpoint_path:
                loaded = self.registry.activate(request.task, int(request.version), request.checkpoint_path)
            else:
                version = self.registry.served_version(request.task) if request.version < 0 else int(request.version)
                self.registry.load(request.task, version)  # a clear error if it does not exist
                if not self.registry.is_promoted(request.task, version):
                    raise ModelNotAvailableError(f"{request.task} v{version} is a candidate that was not promoted; "
                                                 "only promoted versions are served")
                loaded = self.registry.activate(request.task, version)
        except (ModelNotAvailableError, CheckpointError, ValueError) as exc:
            response.success, response.message = False, str(exc)
            return response
        response.active = self._announce(loaded)
        response.success, response.message = True, f"serving {loaded.name}"
        return response

    # --------------------------------------------------------------- stream
    def _stream_one(self, image: Image) -> None:
        if self.registry is None:
            return
        rgb = to_rgb8(image)
        seg, instances = self.segment(rgb, header=image.header)
        self.segmentation_pub.publish(seg)
        overlay = rgb
        for inst in instances:
            overlay = overlay_mask(overlay, inst.mask, color=(40, 200, 255))
        self.overlay_pub.publish(rgb_to_msg(overlay, image.header.frame_id))

    def _on_stream_error(self, image, exc) -> None:
        if not isinstance(exc, ModelNotAvailableError):
            self.get_logger().warning(f"stream frame skipped: {exc}")


def main(args=None) -> None:
    run_node(InferenceNode, num_threads=4, args=args)


if __name__ == "__main__":
    main()
