"""View registration: collects RGB-D views of a static scene and publishes overlapping view pairs.

Service ``registration/collect`` (std_srvs/Trigger) queues the collection of
``views_per_collection`` views; with ``collect_period_s`` > 0 a timer queues one whenever the
worker is idle. A worker thread (never a callback) does the work:

* each view comes from the camera capture node's ``capture_view`` (CaptureView; the pose comes with
  the view, from TF or the pose topic). With ``drive_sim_camera`` the node first moves the simulated
  camera along a jittered arc around the table (core/geometry/camera_poses.ring_camera_poses ->
  ``/sim/set_camera``), then captures; on a robot something else moves the camera and the node
  captures every ``capture_interval_s``;
* a view overlapping a stored view by more than ``duplicate_iou`` (camera standing still) is dropped;
* the view is stored atomically in ``dataset_dir`` (core/registration/pair_store.py) with its
  Felzenszwalb regions at ``region_width`` x ``region_height``, its view overlap with every stored
  view is computed (depth reprojection at ``overlap_stride``), pairs with IoU in
  [``iou_low``, ``iou_high``] are stored and published on ``registration/view_pairs``
  (RegisteredViewPair; at most ``max_correspondences`` correspondences, a uniform subsample).

On start, stored views whose pairs were never computed (a crash mid-way) are registered first.
A failed capture or camera move is logged with the reason, counted, and the collection goes on;
the next ``registration/collect`` answer repeats the last error. The online pre-training
(core/learning/online_region_consistency.py) reads the same store.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger

from selfsup_perception.core.image_conversion import ImageConversionError
from selfsup_perception.core.registration import FelzenszwalbConfig, correspondences, felzenszwalb_regions, view_overlap
from selfsup_perception.core.registration.pair_store import PairStore, StoredPair, pair_id_of
from selfsup_perception.core.types import RgbdFrame
from selfsup_perception.msg import RegisteredViewPair
from selfsup_perception.ros.conversions import frame_to_view_msg, matrix_to_pose_msg, time_to_msg, view_msg_to_frame
from selfsup_perception.ros.node_runner import run_node
from selfsup_perception.ros.parameters import declare_config, field_with_help
from selfsup_perception.ros.service_calls import ServiceCallError, call_service
from selfsup_perception.ros.work_queue import WorkQueue
from selfsup_perception.core.geometry.camera_poses import MultiViewConfig, ring_camera_poses
from selfsup_perception.srv import CaptureView, SimSetCamera

PAIRS_QOS = QoSProfile(depth=8, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


@dataclass(frozen=True)
class RegistrationParams:
    dataset_dir: str = field_with_help("data/registration", "pair store: views/*.npz + pairs.json")
    capture_service: str = field_with_help("capture_view", "CaptureView service of the camera capture node")
    capture_timeout_s: float = field_with_help(5.0, "timeout of one capture (s)")
    views_per_collection: int = field_with_help(8, "views captured per registration/collect call")
    collect_period_s: float = field_with_help(0.0, "timer mode: queue a collection this often when idle (0 = off)")
    max_timer_collections: int = field_with_help(0, "timer mode: stop after this many collections (0 = never)")
    capture_interval_s: float = field_with_help(0.0, "pause between captures (robot mode: let the camera move)")
    drive_sim_camera: bool = field_with_help(False, "simulation: move the camera on an arc via sim_camera_service")
    sim_camera_service: str = field_with_help("/sim/set_camera", "SimSetCamera service of the simulator")
    service_timeout_s: float = field_with_help(5.0, "timeout of a camera move (s)")
    pose_tolerance_m: float = field_with_help(0.005, "sim: a captured pose farther from the commanded one is retried")
    capture_retries: int = field_with_help(3, "sim: captures tried per view until the pose matches")
    ring_target: list = field_with_help([0.55, 0.0, 0.0], "sim arc: look-at target (m, world)")
    ring_radius: list = field_with_help([0.45, 0.6], "sim arc: horizontal eye distance range (m)")
    ring_height: list = field_with_help([0.35, 0.55], "sim arc: eye height range above the table (m)")
    ring_azimuth_deg: list = field_with_help([-120.0, 120.0], "sim arc: azimuth range (deg, 0 = +x)")
    iou_low: float = field_with_help(0.3, "keep pairs with view IoU >= this (RegConsist: 0.3)")
    iou_high: float = field_with_help(0.9, "keep pairs with view IoU <= this (RegConsist: 0.9)")
    duplicate_iou: float = field_with_help(0.97, "drop a new view overlapping a stored one more than this")
    depth_tolerance: float = field_with_help(0.01, "depth-consistency test, absolute part (m)")
    relative_depth_tolerance: float = field_with_help(0.02, "depth-consistency test, fraction of the depth")
    overlap_stride: int = field_with_help(4, "pixel stride of the view-overlap estimate")
    max_baseline_m: float = field_with_help(0.0, "skip stored views whose camera is farther (m; 0 = no limit)")
    max_correspondences: int = field_with_help(5000, "correspondences per published pair (uniform subsample)")
    compute_regions: bool = field_with_help(True, "store Felzenszwalb regions with each view")
    region_width: int = field_with_help(160, "regions are computed at this width (Felzenszwalb is slow)")
    region_height: int = field_with_help(120, "regions are computed at this height")
    felzenszwalb_scale: float = field_with_help(100.0, "Felzenszwalb k (0..255 units; larger: fewer regions)")
    felzenszwalb_sigma: float = field_with_help(0.8, "Felzenszwalb Gaussian pre-blur (px at region size)")
    felzenszwalb_min_size: int = field_with_help(30, "Felzenszwalb minimum region (px at region size)")
    register_stored_on_start: bool = field_with_help(True, "register stored views whose pairs are missing")
    queue_size: int = field_with_help(4, "collections waiting (further requests are refused)")
    depth_encoding: str = field_with_help("32FC1", "depth encoding of published views: 32FC1 | 16UC1")
    world_frame: str = field_with_help("world", "frame of the camera poses")
    seed: int = field_with_help(0, "seed of the sim arc jitter and correspondence subsampling")

    def __post_init__(self) -> None:
        if not 0.0 <= self.iou_low <= self.iou_high <= 1.0:
            raise ValueError(f"need 0 <= iou_low <= iou_high <= 1, got [{self.iou_low}, {self.iou_high}]")
        if not self.iou_high < self.duplicate_iou <= 1.0 + 1e-9:
            raise ValueError(f"duplicate_iou must be in (iou_high, 1], got {self.duplicate_iou}")
        if self.capture_timeout_s <= 0 or self.service_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if self.views_per_collection < 1 or self.capture_retries < 1 or self.queue_size < 1:
            raise ValueError("views_per_collection, capture_retries and queue_size must be >= 1")
        if self.collect_period_s < 0 or self.capture_interval_s < 0 or self.max_baseline_m < 0:
            raise ValueError("collect_period_s, capture_interval_s and max_baseline_m must be >= 0")
        if self.depth_tolerance < 0 or self.relative_depth_tolerance < 0:
            raise ValueError("depth tolerances must be non-negative")
        if self.overlap_stride < 1 or self.max_correspondences < 1:
            raise ValueError("overlap_stride and max_correspondences must be >= 1")
        if self.region_width < 16 or self.region_height < 16:
            raise ValueError("region_width and region_height must be at least 16")
        if self.felzenszwalb_scale <= 0 or self.felzenszwalb_sigma < 0 or self.felzenszwalb_min_size < 1:
            raise ValueError("felzenszwalb_scale > 0, felzenszwalb_sigma >= 0 and felzenszwalb_min_size >= 1 needed")
        if self.depth_encoding not in ("32FC1", "16UC1"):
            raise ValueError(f"depth_encoding must be 32FC1 or 16UC1, got {self.depth_encoding!r}")
        for name, n in (("ring_target", 3), ("ring_radius", 2), ("ring_height", 2), ("ring_azimuth_deg", 2)):
            v = getattr(self, name)
            if len(v) != n or not all(math.isfinite(float(x)) for x in v):
                raise ValueError(f"{name} must be {n} finite numbers, got {v}")
            if n == 2 and not float(v[0]) <= float(v[1]):
                raise ValueError(f"{name} must be [low, high] with low <= high, got {v}")

    def ring_config(self, num_views: int) -> MultiViewConfig:
        f = lambda v: tuple(float(x) for x in v)  # noqa: E731
        return MultiViewConfig(num_views=num_views, target=f(self.ring_target), radius=f(self.ring_radius),
                               height=f(self.ring_height), azimuth_deg=f(self.ring_azimuth_deg))


class CollectionError(RuntimeError):
    """One view could not be collected (capture or camera move failed)."""


@dataclass
class _Collect:
    num_views: int
    index: int


def subsample_correspondences(pixels_a: np.ndarray, pixels_b: np.ndarray, max_count: int,
                              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_count`` correspondences, a uniform subsample kept in the original (row-major) order."""
    if len(pixels_a) <= max_count:
        return pixels_a, pixels_b
    keep = np.sort(rng.choice(len(pixels_a), size=max_count, replace=False))
    return pixels_a[keep], pixels_b[keep]


class RegistrationNode(Node):
    def __init__(self, **kwargs):
        super().__init__("registration", **kwargs)
        self.params = declare_config(self, RegistrationParams, on_change=self._on_params,
                                     read_only=("dataset_dir", "queue_size", "capture_service",
                                                "sim_camera_service", "collect_period_s"))
        p = self.params
        self.store = PairStore(p.dataset_dir)
        self._clients_group = ReentrantCallbackGroup()
        self._capture_client = self.create_client(CaptureView, p.capture_service, callback_group=self._clients_group)
        self._camera_client = self.create_client(SimSetCamera, p.sim_camera_service, callback_group=self._clients_group)
        self.pair_pub = self.create_publisher(RegisteredViewPair, "registration/view_pairs", PAIRS_QOS)
        self.stats = {"collections": 0, "views": 0, "pairs": 0, "failed_views": 0, "duplicates": 0}
        self.last_error = ""
        self._collections_queued = 0
        self._rng = np.random.default_rng(p.seed)
        # depth, intrinsics and pose of every registered view (what the overlap test needs)
        self._geometry: dict[str, tuple[np.ndarray, object, np.ndarray]] = {}
        self._load_registered()
        self._queue = WorkQueue(self._work, p.queue_size, on_error=self._on_error, name="registration")
        service_group = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "registration/collect", self._on_collect, callback_group=service_group)
        if p.collect_period_s > 0:
            self.create_timer(p.collect_period_s, self._on_timer, callback_group=service_group)
        if p.register_stored_on_start:
            pending = self.store.unregistered_view_ids()
            if pending:
                self.get_logger().info(f"registering {len(pending)} stored views without pairs")
            for view_id in pending:
                self._queue.put(view_id)
        self.get_logger().info(
            f"registration ready on {p.dataset_dir}: {len(self._geometry)} views, {len(self.store)} pairs; "
            f"{'driving the sim camera' if p.drive_sim_camera else 'capturing'} via {p.capture_service}")

    # ---------------------------------------------------------------- callbacks (enqueue only)
    def _on_params(self, params: RegistrationParams) -> None:
        self.params = params

    def _on_collect(self, request, response):
        response.success, response.message = self._enqueue_collection()
        return response

    def _on_timer(self) -> None:
        limit = self.params.max_timer_collections
        if self._queue.idle() and not (limit and self._collections_queued >= limit):
            self._enqueue_collection()

    def _enqueue_collection(self) -> tuple[bool, str]:
        if len(self._queue) >= self.params.queue_size:
            return False, f"busy: {len(self._queue)} collections already queued"
        self._collections_queued += 1
        n = self.params.views_per_collection
        self._queue.put(_Collect(n, self._collections_queued))
        message = f"queued collection {self._collections_queued} of {n} views"
        if self.last_error:
            message += f" (last error: {self.last_error})"
        return True, message

    def _on_error(self, item, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.get_logger().error(f"registration of {item} failed: {exc}")

    # ---------------------------------------------------------------- worker
    def _work(self, item) -> None:
        if isinstance(item, _Collect):
            self._collect(item)
        else:  # a stored view id left unregistered by a crash
            frame = self.store.read_view(item)
            self._register(item, frame, None)

    def _collect(self, job: _Collect) -> None:
        p = self.params
        poses = (ring_camera_poses(p.ring_config(job.num_views), np.random.default_rng([p.seed, job.index]))
                 if p.drive_sim_camera else [None] * job.num_views)
        added = failed = 0
        for i, pose in enumerate(poses):
            if i > 0 and p.capture_interval_s > 0:
                time.sleep(p.capture_interval_s)
            try:
                frame, view_msg = self._capture(pose)
            except CollectionError as exc:
                failed += 1
                self.stats["failed_views"] += 1
                self.last_error = f"view {i + 1}/{job.num_views} of collection {job.index}: {exc}"
                self.get_logger().error(self.last_error)
                continue
            if self._store_new_view(frame, view_msg) is not None:
                added += 1
        self.stats["collections"] += 1
        self.get_logger().info(f"collection {job.index}: {added} views added, {failed} failed; "
                               f"{len(self._geometry)} views, {len(self.store)} pairs stored")

    def _capture(self, pose: Optional[np.ndarray]) -> tuple[RgbdFrame, object]:
        """Move the sim camera to ``pose`` (if given) and capture a view whose pose matches it."""
        p = self.params
        try:
            if pose is not None:
                res = call_service(self._camera_client, SimSetCamera.Request(camera_pose=matrix_to_pose_msg(pose)),
                                   p.service_timeout_s)
                if not res.success:
                    raise CollectionError(f"{p.sim_camera_service} refused the pose: {res.message}")
            for _ in range(p.capture_retries if pose is not None else 1):
                res = call_service(self._capture_client, CaptureView.Request(timeout_s=p.capture_timeout_s),
                                   p.capture_timeout_s + 5.0)
                if not res.success:
                    raise CollectionError(f"{p.capture_service} failed: {res.message}")
                frame = view_msg_to_frame(res.view)
                if pose is None or np.linalg.norm(frame.camera_to_world[:3, 3] - pose[:3, 3]) <= p.pose_tolerance_m:
                    return frame, res.view
            raise CollectionError(f"captured camera pose still differs from the commanded one after "
                                  f"{p.capture_retries} captures (tolerance {p.pose_tolerance_m} m)")
        except ServiceCallError as exc:
            raise CollectionError(str(exc)) from exc
        except (ImageConversionError, ValueError) as exc:
            raise CollectionError(f"captured view is invalid: {exc}") from exc

    def _overlaps(self, frame: RgbdFrame, exclude: str = "") -> dict[str, float]:
        p = self.params
        centre = frame.camera_to_world[:3, 3]
        out = {}
        for vid, (depth, k, t) in self._geometry.items():
            if vid == exclude or (p.max_baseline_m > 0 and np.linalg.norm(t[:3, 3] - centre) > p.max_baseline_m):
                continue
            out[vid] = view_overlap(depth, k, t, frame.depth, frame.intrinsics, frame.camera_to_world,
                                    depth_tolerance=p.depth_tolerance,
                                    relative_depth_tolerance=p.relative_depth_tolerance, stride=p.overlap_stride)
        return out

    def _store_new_view(self, frame: RgbdFrame, view_msg) -> Optional[str]:
        overlaps = self._overlaps(frame)
        best = max(overlaps.items(), key=lambda kv: kv[1], default=None)
        if best is not None and best[1] > self.params.duplicate_iou:
            self.stats["duplicates"] += 1
            self.get_logger().info(
                f"dropping a view that overlaps {best[0]} by IoU {best[1]:.3f} (camera did not move)")
            return None
        view_id = self.store.next_view_id()
        self.store.write_view(view_id, frame, self._regions(frame))
        self._register(view_id, frame, view_msg, overlaps)
        return view_id

    def _regions(self, frame: RgbdFrame) -> Optional[np.ndarray]:
        p = self.params
        if not p.compute_regions:
            return None
        import cv2

        rgb = frame.rgb
        if rgb.shape[:2] != (p.region_height, p.region_width):
            rgb = cv2.resize(rgb, (p.region_width, p.region_height), interpolation=cv2.INTER_AREA)
        return felzenszwalb_regions(rgb, FelzenszwalbConfig(p.felzenszwalb_scale, p.felzenszwalb_sigma,
                                                            p.felzenszwalb_min_size))

    def _register(self, view_id: str, frame: RgbdFrame, view_msg, overlaps: Optional[dict] = None) -> None:
        """Select, store and publish the pairs of a stored view with every registered view."""
        p = self.params
        if overlaps is None:
            overlaps = self._overlaps(frame, exclude=view_id)
        selected = [(vid, iou) for vid, iou in overlaps.items() if p.iou_low <= iou <= p.iou_high]
        pairs = [StoredPair(pair_id_of(vid, view_id), vid, view_id, iou) for vid, iou in selected]
        self.store.register_view(view_id, pairs)  # stored before published: a restart loses nothing
        self._geometry[view_id] = (frame.depth, frame.intrinsics, frame.camera_to_world)
        self.stats["views"] += 1
        self.stats["pairs"] += len(pairs)
        if view_msg is None:
            view_msg = frame_to_view_msg(frame, depth_encoding=p.depth_encoding, world_frame=p.world_frame)
        for pair in pairs:
            self.pair_pub.publish(self._pair_msg(pair, view_msg, frame))
        self.get_logger().info(f"{view_id}: {len(pairs)} pairs (IoU in [{p.iou_low}, {p.iou_high}]) "
                               f"of {len(overlaps)} compared views")

    def _pair_msg(self, pair: StoredPair, view_b_msg, frame_b: RgbdFrame) -> RegisteredViewPair:
        p = self.params
        frame_a = self.store.read_view(pair.view_a)
        corr = correspondences(frame_a.depth, frame_a.intrinsics, frame_a.camera_to_world,
                               frame_b.depth, frame_b.intrinsics, frame_b.camera_to_world,
                               depth_tolerance=p.depth_tolerance, relative_depth_tolerance=p.relative_depth_tolerance)
        pa, pb = subsample_correspondences(corr.pixels_a, corr.pixels_b, p.max_correspondences, self._rng)
        msg = RegisteredViewPair()
        msg.header.stamp = time_to_msg(self.get_clock().now().nanoseconds * 1e-9)
        msg.header.frame_id = p.world_frame
        msg.pair_id = pair.pair_id
        msg.view_a = frame_to_view_msg(frame_a, depth_encoding=p.depth_encoding, world_frame=p.world_frame)
        msg.view_b = view_b_msg
        msg.overlap_iou = float(pair.iou)
        msg.num_correspondences = int(len(pa))
        msg.pixels_a = pa.astype(np.uint16).ravel().tolist()
        msg.pixels_b = pb.astype(np.float32).ravel().tolist()
        return msg

    def _load_registered(self) -> None:
        for view_id in self.store.registered_view_ids():
            frame = self.store.load_view_or_quarantine(view_id)
            if frame is None:
                self.get_logger().warning(f"registered view {view_id} is missing or corrupt; skipped")
                continue
            self._geometry[view_id] = (frame.depth, frame.intrinsics, frame.camera_to_world)

    def idle(self) -> bool:
        return self._queue.idle()

    def destroy_node(self) -> None:
        queue = getattr(self, "_queue", None)  # absent when the constructor failed (e.g. a bad parameter)
        if queue is not None:
            queue.stop()
        super().destroy_node()


def main(args=None) -> None:
    run_node(RegistrationNode, num_threads=3, args=args)


if __name__ == "__main__":
    main()
