"""Inference: segmentation and dense descriptors as services and a stream, with hot-swapped models.

The input size, class names and normalisation of each model come from its checkpoint's
metadata (``meta.json``: ``inference``), so no parameter repeats "the size it was trained at".
Segmentation and descriptor networks both run on the image resized to that size; results come
back at full resolution (descriptor maps are sampled at full-resolution pixels).

A lifecycle node (rclpy LifecycleNode, driven over the standard ``lifecycle_msgs`` services
``~/change_state`` and ``~/get_state``): configure resolves ``device`` and loads the served
(promoted) model of each task from ``checkpoint_dir`` (missing models are fine: requests then get a
clear error; a missing *folder*, or an unavailable device, fails the transition), activate
starts serving, deactivate stops, cleanup frees the models (and the CUDA cache). With
``autostart`` the node configures and activates itself, waiting (checking every second)
for the checkpoint folder to appear when the trainer has not created it yet.

Services: ``segment_image`` (SegmentImage), ``compute_descriptors`` (ComputeDescriptors),
``find_correspondences`` (FindCorrespondences), ``load_model`` (LoadModel). A ``segment_image``
request with depth and ``camera_info`` is answered with the model's instances combined with the
depth-aware segments (``combine_with_depth``; the depth segments alone before any model exists).
Only promoted model versions are served (the trainer's promotion gate, with its ledger in
``checkpoint_dir``): configure loads the served version of each task, not the newest, and
``load_model`` refuses candidates. Topics in: ``trainer/model_versions`` (ModelVersion): a
version published with ``promoted`` (or a rollback) is loaded off the executor and swapped in
atomically, candidates are ignored; in-flight requests finish on the model they started
with, so no request is dropped. With ``stream`` set, the newest image of ``image_topic``
(bounded queue of 1) is segmented and published on ``inference/segmentation`` and
``inference/overlay``. Bad requests get ``success: false`` and a message; the node keeps serving
(every callback runs under :mod:`selfsup_perception.ros.callback_guard`).

Start-up serves the newest version of each task that builds and loads; every newer version
skipped is logged with its reason. Resources are bounded: images larger than
``max_image_pixels`` are refused (dense descriptors: ``max_dense_pixels``), at most
``max_cached_models`` non-active versions / ``max_cache_mb`` stay loaded, ``load_model`` only
reads inside ``checkpoint_dir`` unless ``allow_external_checkpoints``. Services have their own
callback groups: descriptor requests run one at a time and never take the threads or slots of
``segment_image``. The version being served is pinned (``PINNED``) so checkpoint retention keeps it.
"""

from __future__ import annotations

import array
import hashlib
import math
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from selfsup_perception.core.dataset.visualization import overlay_mask
from selfsup_perception.core.descriptors.matching import compute_descriptor_image, find_correspondences
from selfsup_perception.core.descriptors.sparse import (
    compute_descriptor_map,
    descriptor_grid,
    match_on_grid,
    pick_keypoints,
    sample_descriptor_map,
)
from selfsup_perception.core.image_conversion import ImageConversionError, array_to_image, to_depth_metres, to_rgb8
from selfsup_perception.core.types import RgbdFrame
from selfsup_perception.core.learning.device import release_device_memory, resolve_device
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.serving.checkpoints import CheckpointError, pin_version, unpin_version
from selfsup_perception.core.learning.serving.inference import (
    label_image,
    segment_instances,
    segment_rgbd,
    segment_semantic,
)
from selfsup_perception.core.learning.serving.mask_refinement import MaskRefinementConfig
from selfsup_perception.core.learning.serving.model_registry import TASKS, ModelNotAvailableError, ModelRegistry
from selfsup_perception.msg import InstanceSegmentation, ModelVersion
from selfsup_perception.ros.callback_guard import GuardedNodeMixin
from selfsup_perception.ros.conversions import camera_info_to_intrinsics, instances_to_msgs, rgb_to_msg
from selfsup_perception.ros.node_runner import run_node
from selfsup_perception.ros.parameters import declare_config, field_with_help
from selfsup_perception.ros.work_queue import FairSlots, WorkQueue, lower_thread_priority
from selfsup_perception.srv import ComputeDescriptors, FindCorrespondences, LoadModel, SegmentImage

LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
REQUEST_ERRORS = (ImageConversionError, ModelNotAvailableError, CheckpointError, ValueError)
MAX_INSTANCES_LIMIT = 1000  # a request's max_instances is clamped to this
DEFAULT_KEYPOINTS = 500


@dataclass(frozen=True)
class InferenceParams:
    checkpoint_dir: str = field_with_help("data/checkpoints", "model versions written by the trainer")
    device: str = field_with_help("cpu", "cpu | cuda | cuda:N | auto (CUDA when available); "
                                  "CUDA runs under torch.autocast (float16)")
    score_threshold: float = field_with_help(0.3, "default minimum instance score")
    max_instances: int = field_with_help(20, "default maximum number of instances")
    refine_masks: bool = field_with_help(True, "refine masks at full resolution along image edges (guided filter); "
                                         "false: nearest-neighbour upsampling of the network's grid")
    max_concurrent_requests: int = field_with_help(2, "requests served at once; more wait up to request_wait_s")
    request_wait_s: float = field_with_help(10.0, "how long a request may wait for a free slot (s)")
    combine_with_depth: bool = field_with_help(True, "segment_image with depth + camera_info: combine the model's "
                                               "instances with the depth-aware segments (objects above the table "
                                               "split at depth jumps); without an instance model, those alone")
    follow_trainer: bool = field_with_help(True, "activate each version the trainer promotes (or rolls back to)")
    stream: bool = field_with_help(False, "segment the newest image of image_topic continuously")
    image_topic: str = field_with_help("camera/color/image_raw", "input of the stream")
    torch_threads: int = field_with_help(2, "CPU threads for inference")
    correspondence_coarse_stride: int = field_with_help(
        1, "find_correspondences with exhaustive=true: 1 = every target pixel; N > 1 searches every N-th target "
        "pixel, then refines within N px")
    max_image_pixels: int = field_with_help(4_194_304, "largest image (width x height) any service accepts")
    max_dense_pixels: int = field_with_help(
        307_200, "largest image for full-resolution descriptors (compute_descriptors MODE_DENSE, exhaustive "
        "find_correspondences); use MODE_GRID / MODE_PIXELS for larger images")
    max_sparse_pixels: int = field_with_help(10_000, "most pixels in one MODE_PIXELS/keypoints/find_correspondences request")
    max_cached_models: int = field_with_help(4, "loaded model versions kept besides the active ones (LRU)")
    max_cache_mb: float = field_with_help(512.0, "memory of all loaded models (MB); non-active ones are evicted first")
    descriptors_at_training_size: bool = field_with_help(
        True, "run the descriptor network on the image resized to the size it was trained at (checkpoint "
        "metadata), as segmentation does, and sample its map at full-resolution pixels; false: on the full image "
        "(slower, and not the scale the network learned)")
    descriptor_cache_size: int = field_with_help(
        8, "descriptor maps of recent images kept (by image content), e.g. a reference image matched repeatedly")
    allow_external_checkpoints: bool = field_with_help(
        False, "load_model may read checkpoint_path outside checkpoint_dir")
    descriptor_niceness: int = field_with_help(
        10, "descriptor requests run in one worker thread this much nicer (Linux), so they yield the CPU "
        "to segment_image; 0 = same priority")
    autostart: bool = field_with_help(True, "configure and activate at start")

    def __post_init__(self) -> None:
        if self.max_concurrent_requests < 1:
            raise ValueError("max_concurrent_requests must be >= 1")
        if self.correspondence_coarse_stride < 1:
            raise ValueError("correspondence_coarse_stride must be >= 1")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError("score_threshold must be in [0, 1]")
        if min(self.max_image_pixels, self.max_dense_pixels, self.max_sparse_pixels) < 1:
            raise ValueError("max_image_pixels, max_dense_pixels and max_sparse_pixels must be >= 1")
        if self.max_cached_models < 0 or not self.max_cache_mb >= 0 or self.descriptor_cache_size < 0:
            raise ValueError("max_cached_models, max_cache_mb and descriptor_cache_size must be >= 0")
        if not (math.isfinite(self.request_wait_s) and self.request_wait_s >= 0):
            raise ValueError("request_wait_s must be finite and >= 0")



class InferenceNode(GuardedNodeMixin, LifecycleNode):
    expected_errors = REQUEST_ERRORS

    def __init__(self, **kwargs):
        super().__init__("inference", **kwargs)
        self.params = declare_config(self, InferenceParams, on_change=self._apply_params, dynamic=(
            "score_threshold", "max_instances", "refine_masks", "combine_with_depth", "request_wait_s",
            "follow_trainer", "correspondence_coarse_stride", "torch_threads", "descriptors_at_training_size"))
        torch.set_num_threads(max(self.params.torch_threads, 1))
        self.registry: ModelRegistry | None = None
        self._active = False
        self._slots = FairSlots(self.params.max_concurrent_requests)  # segment_image, first come first served
        self._descriptor_slots = FairSlots(1)  # descriptors: one at a time (own group too)
        self.served = {"ok": 0, "failed": 0}
        self._desc_cache: OrderedDict = OrderedDict()  # (model name, image digest) -> descriptor map
        self._desc_cache_lock = threading.Lock()
        self._pinned: dict[str, Path] = {}  # task -> version directory pinned as served
        self._swap_queue = WorkQueue(self._load_version, maxsize=4, on_error=self._on_swap_error, name="model-swap")
        self._descriptor_worker = ThreadPoolExecutor(1, thread_name_prefix="descriptors",
                                                     initializer=lower_thread_priority,
                                                     initargs=(self.params.descriptor_niceness,))
        self._stream_queue: WorkQueue | None = None
        # Own groups: descriptor requests queue in DDS (not on executor threads), so they can neither
        # take segment_image's threads nor its slots; load_model runs beside both.
        descriptors = MutuallyExclusiveCallbackGroup()
        self.create_service(SegmentImage, "segment_image", self._on_segment, callback_group=ReentrantCallbackGroup())
        self.create_service(ComputeDescriptors, "compute_descriptors", self._on_descriptors,
                            callback_group=descriptors)
        self.create_service(FindCorrespondences, "find_correspondences", self._on_correspondences,
                            callback_group=descriptors)
        self.create_service(LoadModel, "load_model", self._on_load_model,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self.segmentation_pub = self.create_publisher(InstanceSegmentation, "inference/segmentation", 2)
        self.overlay_pub = self.create_publisher(Image, "inference/overlay", 2)
        self.active_pub = self.create_publisher(ModelVersion, "inference/active_models", LATCHED)
        self.create_subscription(ModelVersion, "trainer/model_versions", self._on_model_version, LATCHED,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        self._autostart_timer = None
        if self.params.autostart:
            self._autostart()

    def _apply_params(self, params: InferenceParams) -> None:
        """Dynamic parameters take effect with the next request (each request reads ``self.params`` once)."""
        torch.set_num_threads(max(params.torch_threads, 1))
        self.params = params

    # ------------------------------------------------------------- lifecycle
    def _autostart(self) -> None:
        """Configure and activate; while the checkpoint folder is missing, try again every second."""
        waiting = not Path(self.params.checkpoint_dir).is_dir()
        if waiting and self._autostart_timer is None:
            self.get_logger().warning(f"checkpoint_dir {self.params.checkpoint_dir!r} does not exist yet; "
                                      "configuring once it does (the trainer creates it)")
            self._autostart_timer = self.create_timer(1.0, self._autostart)
        if waiting:
            return
        if self._autostart_timer is not None:
            self.destroy_timer(self._autostart_timer)
            self._autostart_timer = None
        if self._state_machine.current_state[1] != "unconfigured":  # configured over the service meanwhile
            return
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state) -> TransitionCallbackReturn:
        p = self.params
        folder = Path(p.checkpoint_dir)
        if not folder.is_dir():
            self.get_logger().error(f"configure failed: checkpoint_dir {str(folder)!r} does not exist "
                                    "(point it at the trainer's checkpoint_dir)")
            return TransitionCallbackReturn.FAILURE
        try:
            device = resolve_device(p.device)
            self.registry = ModelRegistry(folder, device=str(device), max_cached=p.max_cached_models,
                                          max_cache_bytes=int(p.max_cache_mb * 2**20))
        except (RuntimeError, ValueError) as exc:
            self.get_logger().error(f"configure failed: cannot use device {p.device!r}: {exc}")
            return TransitionCallbackReturn.FAILURE
        for task in TASKS:
            loaded, skipped = None, []
            try:
                version = self.registry.served_version(task)  # the promotion ledger's choice
            except ModelNotAvailableError:
                version = None
            if version is not None:
                try:
                    loaded = self.registry.activate(task, version)
                except (CheckpointError, ModelNotAvailableError) as exc:
                    skipped.append((version, str(exc)))
            if loaded is None:  # fall back to the newest promoted version that loads
                loaded, more = self.registry.activate_newest_loadable(
                    task, eligible=lambda v, task=task: self.registry.is_promoted(task, v))
                skipped += more
            for version, reason in skipped:
                self.get_logger().error(f"skipping {task} v{version}: {reason}")
            if loaded is not None:
                self.get_logger().info(f"serving {loaded.name} from {loaded.path}"
                                       + (f" ({len(skipped)} versions skipped)" if skipped else ""))
                self._announce(loaded)
            elif skipped:
                self.get_logger().error(f"no usable {task} version in {p.checkpoint_dir}; waiting for the trainer")
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
        device = self.registry.device if self.registry is not None else None
        self.registry = None  # models are freed when the last request holding one ends
        release_device_memory(device)
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop_workers()
        self.registry = None
        return TransitionCallbackReturn.SUCCESS

    def _stop_workers(self) -> None:
        """Stop and join the worker threads (a daemon thread inside torch at exit aborts the process)."""
        self._active = False
        if self._stream_queue is not None:
            self._stream_queue.stop(timeout_s=0.8)
            self._stream_queue = None
        self._swap_queue.stop(timeout_s=0.8)
        self._descriptor_worker.shutdown(wait=False, cancel_futures=True)

    def destroy_node(self) -> None:
        if hasattr(self, "_swap_queue"):  # absent when the constructor failed
            self._stop_workers()
        super().destroy_node()

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
        path = self._checkpoint_path(msg.checkpoint_path) if msg.checkpoint_path else None
        loaded = self.registry.activate(msg.task, int(msg.version), path)
        what = f"rolled back to {loaded.name} (from v{msg.previous_version})" if msg.rolled_back else \
            f"now serving {loaded.name}"
        self.get_logger().info(what + (f": {msg.promotion_reason}" if msg.promotion_reason else ""))
        self._announce(loaded, msg)

    def _on_swap_error(self, msg, exc) -> None:
        self.get_logger().error(f"could not load {msg.task} v{msg.version}: {exc}; keeping the current model")

    def _announce(self, loaded, source: ModelVersion | None = None) -> ModelVersion:
        """Publish the now-active version on inference/active_models (promotion fields from ``source`` or meta)."""
        previous = self._pinned.get(loaded.task)
        try:  # checkpoint retention (trainer keep_versions) never removes the version being served
            pin_version(loaded.path, "served")
            if previous is not None and previous != loaded.path:
                unpin_version(previous, "served")
            self._pinned[loaded.task] = loaded.path
        except OSError as exc:
            self.get_logger().warning(f"cannot pin {loaded.path}: {exc}", once=True)
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
    def _serve(self, response, work, slots=None) -> object:
        """Run ``work(response)`` in a request slot, turning every bad request into a clear error."""
        if not self._active or self.registry is None:
            response.success, response.message = False, "inference node is not active (lifecycle state)"
            return response
        slots = slots or self._slots
        if not slots.acquire(timeout=self.params.request_wait_s):
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
            slots.release()
        return response

    def _check_size(self, image, name: str, limit: int = 0, limit_name: str = "max_image_pixels") -> None:
        """Refuse an image larger than ``limit`` pixels before converting it."""
        limit = limit or self.params.max_image_pixels
        n = int(image.width) * int(image.height)
        if n > limit:
            raise ValueError(f"{name} is {image.width}x{image.height} = {n} pixels; at most {limit} are accepted "
                             f"({limit_name})")

    def _checkpoint_path(self, text: str) -> Path:
        """``text`` as a version directory, inside ``checkpoint_dir`` unless allow_external_checkpoints."""
        path = Path(text).expanduser().resolve()
        root = Path(self.params.checkpoint_dir).expanduser().resolve()
        if not self.params.allow_external_checkpoints and root != path and root not in path.parents:
            raise ValueError(f"checkpoint_path {text!r} is outside checkpoint_dir {str(root)!r} "
                             "(set allow_external_checkpoints to allow other paths)")
        return path

    def _descriptor_input_size(self, loaded) -> tuple[int, int] | None:
        """(width, height) the descriptor network runs at: its training size, or None (the image's own size).

        A checkpoint without an input size in its metadata (written before it had one) runs on the image itself.
        """
        if not self.params.descriptors_at_training_size or not (loaded.meta.get("inference") or {}).get("input_width"):
            return None
        return loaded.input_size

    def _descriptor_map(self, loaded, rgb: np.ndarray):
        """Low-resolution descriptor map of ``rgb``, from a small cache keyed by model, input size and image content."""
        size = self._descriptor_input_size(loaded)
        key = (loaded.name, str(loaded.path), size, rgb.shape, hashlib.blake2b(rgb.tobytes(), digest_size=16).digest())
        with self._desc_cache_lock:
            hit = self._desc_cache.get(key)
            if hit is not None:
                self._desc_cache.move_to_end(key)
                return hit
        dmap = compute_descriptor_map(loaded.model, rgb, device=self.registry.device, input_size=size)  # (D, h, w)
        if self.params.descriptor_cache_size > 0:
            with self._desc_cache_lock:
                self._desc_cache[key] = dmap
                while len(self._desc_cache) > self.params.descriptor_cache_size:
                    self._desc_cache.popitem(last=False)
        return dmap

    def segment(self, rgb: np.ndarray, model_version: str = "", score_threshold: float = 0.0,
                max_instances: int = 0, with_label_image: bool = True, header=None):
        """(InstanceSegmentation message, list of core Instances) of one RGB image."""
        p = self.params
        loaded = self.registry.get("instance_segmentation", model_version)
        instances = segment_instances(loaded.model, rgb, loaded.input_size,
                                      score_threshold=score_threshold or p.score_threshold,
                                      max_instances=max_instances or p.max_instances,
                                      refinement=MaskRefinementConfig() if p.refine_masks else None)
        return self._segmentation_msg(loaded.name, instances, rgb, with_label_image, header), instances

    def segment_with_depth(self, frame: RgbdFrame, model_version: str = "", score_threshold: float = 0.0,
                           max_instances: int = 0, with_label_image: bool = True, header=None):
        """(InstanceSegmentation message, core Instances, note) of one RGB-D frame: the instance model's
        instances combined with the depth-aware segments (``segment_rgbd``); with no instance model active
        (and no version asked for), the depth-aware segments alone (``model_version`` "")."""
        p = self.params
        loaded = None
        if model_version or self.registry.active_names().get("instance_segmentation") is not None:
            loaded = self.registry.get("instance_segmentation", model_version)
        instances, note = segment_rgbd(
            loaded.model if loaded else None, frame, loaded.input_size if loaded else None,
            score_threshold=score_threshold or p.score_threshold, max_instances=max_instances or p.max_instances,
            refinement=MaskRefinementConfig() if p.refine_masks else None)
        out = self._segmentation_msg(loaded.name if loaded else "", instances, frame.rgb, with_label_image, header)
        return out, instances, note

    def _segmentation_msg(self, model_version: str, instances, rgb: np.ndarray, with_label_image: bool, header):
        out = InstanceSegmentation(model_version=model_version)
        if header is not None:
            out.header = header
        out.instances = instances_to_msgs(instances)
        if with_label_image:
            array_to_image(label_image(instances, rgb.shape[:2]), "mono16", out.label_image)
        self._add_semantic(out, rgb)
        return out

    def _add_semantic(self, out: InstanceSegmentation, rgb: np.ndarray) -> None:
        """Fill the semantic image when a semantic segmentation model is active."""
        try:
            loaded = self.registry.active("semantic_segmentation")
        except ModelNotAvailableError:
            return
        classes = segment_semantic(loaded.model, rgb, loaded.input_size)
        array_to_image(classes, "mono8", out.semantic_image)
        out.class_names = ckpt.serving_class_names(loaded.meta)

    def _on_segment(self, request, response):
        if not (math.isfinite(request.score_threshold) and 0.0 <= request.score_threshold <= 1.0):
            raise ValueError(f"score_threshold must be in [0, 1] (0 = node default), got {request.score_threshold}")
        self._check_size(request.image, "image")
        has_depth = bool(request.depth.width or request.depth.height or len(request.depth.data))
        size = (request.image.width, request.image.height)
        if has_depth and (request.depth.width, request.depth.height) != size:
            raise ValueError(f"depth is {request.depth.width}x{request.depth.height} but the image is "
                             f"{size[0]}x{size[1]}")
        if has_depth and not (request.camera_info.width or request.camera_info.height):
            raise ValueError("depth without camera_info: the depth-aware segments need the image's intrinsics "
                             "(fill camera_info, or send no depth)")
        if has_depth and (request.camera_info.width, request.camera_info.height) != size:
            raise ValueError(f"camera_info is for {request.camera_info.width}x{request.camera_info.height} but the "
                             f"image is {size[0]}x{size[1]}")
        max_instances = min(int(request.max_instances), MAX_INSTANCES_LIMIT)

        def work(res):
            rgb = to_rgb8(request.image)
            frame = None
            if has_depth:
                depth = to_depth_metres(request.depth)  # validates encoding (32FC1 m / 16UC1 mm) and size
                if not np.isfinite(depth).any() or not (depth > 0).any():
                    raise ValueError("depth has no valid (finite, positive) value; send an empty depth instead")
                frame = RgbdFrame(rgb=rgb, depth=depth, intrinsics=camera_info_to_intrinsics(request.camera_info),
                                  frame_id=request.image.header.frame_id).validate()
            if frame is not None and self.params.combine_with_depth:
                res.segmentation, _, note = self.segment_with_depth(
                    frame, request.model_version, request.score_threshold, max_instances,
                    request.return_label_image, request.image.header)
                res.message = (f"{len(res.segmentation.instances)} instances from "
                               f"{res.segmentation.model_version or 'depth alone (no instance model)'}, {note}")
                return
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
                                               max_instances, request.return_label_image, request.image.header)
            res.message = f"{len(res.segmentation.instances)} instances from {res.segmentation.model_version}"
            if frame is not None:
                res.message += " (depth not used: combine_with_depth is off)"
        return self._serve(response, work)

    def _on_descriptors(self, request, response):
        p = self.params
        mode = int(request.mode)
        modes = ComputeDescriptors.Request
        if mode not in (modes.MODE_DENSE, modes.MODE_GRID, modes.MODE_PIXELS, modes.MODE_KEYPOINTS):
            raise ValueError(f"unknown mode {mode}; use MODE_DENSE (0), MODE_GRID (1), MODE_PIXELS (2) or "
                             "MODE_KEYPOINTS (3)")
        if mode == modes.MODE_DENSE:
            self._check_size(request.image, "image", min(p.max_dense_pixels, p.max_image_pixels),
                             "max_dense_pixels; ask for MODE_GRID or MODE_PIXELS instead")
        else:
            self._check_size(request.image, "image")
        if mode == modes.MODE_PIXELS:
            if len(request.pixels) % 2:
                raise ValueError("pixels must hold (u, v) pairs")
            if len(request.pixels) // 2 > p.max_sparse_pixels:
                raise ValueError(f"{len(request.pixels) // 2} pixels asked for; at most {p.max_sparse_pixels} "
                                 "(max_sparse_pixels)")
        max_keypoints = min(int(request.max_keypoints) or DEFAULT_KEYPOINTS, p.max_sparse_pixels)

        def work(res):
            rgb = to_rgb8(request.image)
            loaded = self.registry.get("descriptors", request.model_version)
            size = rgb.shape[:2]
            if mode == modes.MODE_DENSE:
                desc = compute_descriptor_image(loaded.model, rgb, device=self.registry.device,
                                                input_size=self._descriptor_input_size(loaded))
                res.grid_stride = 1
            elif mode == modes.MODE_GRID:
                dmap = self._descriptor_map(loaded, rgb)
                stride = int(request.grid_stride) or max(int(round(size[1] / dmap.shape[2])), 1)
                desc = descriptor_grid(dmap, size, min(stride, max(size)))
                res.grid_stride = min(stride, max(size))
            else:
                dmap = self._descriptor_map(loaded, rgb)
                if mode == modes.MODE_PIXELS:
                    px = np.asarray(request.pixels, dtype=np.float64).reshape(-1, 2)
                else:
                    px = pick_keypoints(rgb, max_keypoints)
                sparse = sample_descriptor_map(dmap, px, size)
                res.pixels = array.array("f", px.astype(np.float32).reshape(-1).tobytes())
                res.sparse_descriptors = array.array("f", np.ascontiguousarray(sparse, np.float32).tobytes())
                res.dimension = sparse.shape[1]
                res.descriptors.header, res.descriptors.model_version = request.image.header, loaded.name
                res.message = f"{len(px)} descriptors of dimension {sparse.shape[1]} from {loaded.name}"
                return
            d = res.descriptors
            d.header, d.model_version = request.image.header, loaded.name
            d.height, d.width, d.dimension = desc.shape
            res.dimension = desc.shape[2]
            d.data = array.array("f", np.ascontiguousarray(desc, dtype=np.float32).tobytes())  # no Python floats
            res.message = f"{desc.shape[1]}x{desc.shape[0]}x{desc.shape[2]} from {loaded.name}"
        return self._serve(response, self._in_descriptor_worker(work), self._descriptor_slots)

    def _in_descriptor_worker(self, work):
        """``work`` run on the low-priority descriptor thread; the executor thread just waits for it."""
        return lambda res: self._descriptor_worker.submit(work, res).result()

    def _on_correspondences(self, request, response):
        p = self.params
        if len(request.reference_pixels) % 2:
            raise ValueError("reference_pixels must hold (u, v) pairs")
        if len(request.reference_pixels) // 2 > p.max_sparse_pixels:
            raise ValueError(f"{len(request.reference_pixels) // 2} reference pixels; at most {p.max_sparse_pixels} "
                             "(max_sparse_pixels)")
        limit, limit_name = ((min(p.max_dense_pixels, p.max_image_pixels), "max_dense_pixels, for exhaustive")
                             if request.exhaustive else (p.max_image_pixels, "max_image_pixels"))
        self._check_size(request.reference_image, "reference_image", limit, limit_name)
        self._check_size(request.target_image, "target_image", limit, limit_name)

        def work(res):
            ref, tgt = to_rgb8(request.reference_image), to_rgb8(request.target_image)
            loaded = self.registry.get("descriptors", request.model_version)
            pixels = np.asarray(request.reference_pixels, dtype=np.float64).reshape(-1, 2)
            if request.exhaustive:
                size = self._descriptor_input_size(loaded)
                d_ref = compute_descriptor_image(loaded.model, ref, device=self.registry.device, input_size=size)
                d_tgt = compute_descriptor_image(loaded.model, tgt, device=self.registry.device, input_size=size)
                matched, confidence = find_correspondences(d_ref, d_tgt, pixels,
                                                           coarse_stride=p.correspondence_coarse_stride)
            else:
                matched, confidence = match_on_grid(self._descriptor_map(loaded, ref), ref.shape[:2],
                                                    self._descriptor_map(loaded, tgt), tgt.shape[:2], pixels)
            res.model_version = loaded.name
            res.target_pixels = array.array("f", matched.astype(np.float32).reshape(-1).tobytes())
            res.confidences = array.array("f", confidence.astype(np.float32).tobytes())
            res.message = f"{len(pixels)} correspondences from {loaded.name}"
        return self._serve(response, self._in_descriptor_worker(work), self._descriptor_slots)

    def _on_load_model(self, request, response):
        if self.registry is None:
            response.success, response.message = False, "inference node is not configured"
            return response
        if request.checkpoint_path:
            path = self._checkpoint_path(request.checkpoint_path)
            loaded = self.registry.activate(request.task, int(request.version), path)  # errors: answered by the guard
        else:
            version = self.registry.served_version(request.task) if request.version < 0 else int(request.version)
            self.registry.load(request.task, version)  # a clear error if it does not exist
            if not self.registry.is_promoted(request.task, version):
                raise ModelNotAvailableError(f"{request.task} v{version} is a candidate that was not promoted; "
                                             "only promoted versions are served")
            loaded = self.registry.activate(request.task, version)
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
        if not self._active or not self.context.ok():
            return  # shutting down: the publishers are gone
        if not isinstance(exc, ModelNotAvailableError):
            self.get_logger().warning(f"stream frame skipped: {exc}")


def main(args=None) -> None:
    run_node(InferenceNode, num_threads=6, args=args)


if __name__ == "__main__":
    main()
