"""Mask labeler: interaction samples in, labeled samples and an overlay image out.

Subscribes ``interaction/samples`` (InteractionSample). A worker thread (bounded queue,
oldest dropped) labels each push with the flow labeler (or frame differencing) and each grasp
with the grasp-outcome labeler (what the grasp lifted, or a negative; ``grasp_labeler``), stores
the label atomically next to the sample in ``dataset_dir`` (in the configured labeler's label set,
``labels/<labeler>/``, so the trainer learns from both; ``label.labeler`` and the provenance name
the labeler that made it), and publishes
``labeler/labeled_samples`` (LabeledSample) and ``labeler/overlay`` (rgb8: the before
image with the mask and the action pixel, for RViz/Foxglove). On start it labels every
stored sample that has no label yet, so a crash or restart loses nothing. Every label records
its provenance (labeler, version, config hash, scene, the model version that chose the action).
A malformed sample is logged and skipped.

Integrity: the subscription callback *stores* each sample before anything else (the queue then
holds only ids), so a kill -9 loses at most the messages DDS delivered but the callback had not
yet taken (bounded by the subscription depth, 10) - never a sample the node accepted. A sample
id is unique: the same sample again is ignored, a different sample under a stored id is refused
and logged, and a stored sample or label is never rewritten. A sample the labeler cannot label
(an exception) gets a *failed* label (``kept: false`` with the reason), so it is not retried on
every restart.

The sample store, not the topic, is the record of what needs a label: a sample the interaction
node stored in the same ``dataset_dir`` but whose message never arrived (published before the
subscription matched; dropped from a full queue) is found by a rescan every ``rescan_interval_s``
while the worker is idle, and labelled then.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from selfsup_perception.core.dataset.provenance import label_provenance
from selfsup_perception.core.dataset.sample_store import DuplicateSampleError, SampleStore
from selfsup_perception.core.dataset.visualization import overlay_mask
from selfsup_perception.core.labeling import (
    FlowLabelerConfig,
    FlowMaskLabeler,
    FrameDifferenceConfig,
    FrameDifferenceLabeler,
    GraspOutcomeLabeler,
)
from selfsup_perception.msg import InteractionSample as InteractionSampleMsg
from selfsup_perception.core.types import InteractionKind, MaskLabel
from selfsup_perception.msg import LabeledSample
from selfsup_perception.ros.conversions import label_to_msg, rgb_to_msg, sample_from_msg, sample_to_msg
from selfsup_perception.ros.callback_guard import GuardedNodeMixin
from selfsup_perception.ros.node_runner import run_node
from selfsup_perception.ros.parameters import declare_config, field_with_help
from selfsup_perception.ros.work_queue import WorkQueue

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


@dataclass(frozen=True)
class LabelerParams:
    labeler: str = field_with_help("flow", "flow (optical flow, paper 003) | frame_difference (baseline)")
    dataset_dir: str = field_with_help("data/interactions", "sample store; labels go to labels/<labeler>/")
    label_stored_on_start: bool = field_with_help(True, "label stored samples that have no label yet")
    queue_size: int = field_with_help(16, "samples waiting to be labeled (oldest dropped when full; a rescan "
                                      "finds them again)")
    rescan_interval_s: float = field_with_help(5.0, "look for stored samples without a label this often while "
                                               "idle (messages lost or dropped); 0 = only at start")
    max_mean_flow_px: float = field_with_help(7.0, "discard interactions with more mean flow (px at 640x480)")
    max_area_fraction: float = field_with_help(0.025, "discard masks larger than this fraction of the image")
    min_area_px: float = field_with_help(100.0, "discard masks smaller than this (px at 640x480)")
    max_flow_std_px: float = field_with_help(15.0, "discard masks whose flow-magnitude std is larger (rotation)")
    motion_threshold_px: float = field_with_help(1.0, "flow magnitude that counts as motion (px at 640x480)")
    grasp_labeler: str = field_with_help("grasp_outcome", "grasps: grasp_outcome (what the grasp lifted, or a "
                                         "negative) | push (the push labeler, as before)")

    def __post_init__(self) -> None:
        if self.labeler not in ("flow", "frame_difference"):
            raise ValueError(f"labeler must be flow or frame_difference, got {self.labeler!r}")
        if self.grasp_labeler not in ("grasp_outcome", "push"):
            raise ValueError(f"grasp_labeler must be grasp_outcome or push, got {self.grasp_labeler!r}")
        if self.queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if not (math.isfinite(self.rescan_interval_s) and self.rescan_interval_s >= 0):
            raise ValueError(f"rescan_interval_s must be finite and >= 0, got {self.rescan_interval_s}")


def make_labeler(p: LabelerParams):
    if p.labeler == "flow":
        return FlowMaskLabeler(FlowLabelerConfig(
            max_mean_flow_px=p.max_mean_flow_px, max_area_fraction=p.max_area_fraction, min_area_px=p.min_area_px,
            max_flow_std_px=p.max_flow_std_px, motion_threshold_px=p.motion_threshold_px))
    return FrameDifferenceLabeler(dataclasses.replace(
        FrameDifferenceConfig(), max_area_fraction=p.max_area_fraction, min_area_px=p.min_area_px))


def make_grasp_labeler(p: LabelerParams, push_labeler):
    """The labeler for grasps: the grasp outcome, or the push labeler itself (``grasp_labeler: push``)."""
    return GraspOutcomeLabeler() if p.grasp_labeler == "grasp_outcome" else push_labeler


class LabelerNode(GuardedNodeMixin, Node):
    def __init__(self, **kwargs):
        super().__init__("labeler", **kwargs)
        self.params = declare_config(self, LabelerParams, on_change=self._on_params, dynamic=(
            "labeler", "max_mean_flow_px", "max_area_fraction", "min_area_px", "max_flow_std_px",
            "motion_threshold_px", "grasp_labeler"))
        self.labeler = make_labeler(self.params)
        self.grasp_labeler = make_grasp_labeler(self.params, self.labeler)
        self.store = SampleStore(self.params.dataset_dir)
        self.label_pub = self.create_publisher(LabeledSample, "labeler/labeled_samples", RELIABLE)
        self.overlay_pub = self.create_publisher(Image, "labeler/overlay", 2)
        self.counts = {"kept": 0, "negative": 0, "discarded": 0, "failed": 0, "refused": 0, "duplicate": 0}
        self._queue = WorkQueue(self._label_one, self.params.queue_size, on_error=self._on_error, name="labeler")
        self.create_subscription(InteractionSampleMsg, "interaction/samples", self._on_sample, RELIABLE)
        if self.params.label_stored_on_start:
            self._queue_unlabeled("stored samples without a label at start")
        if self.params.rescan_interval_s > 0:
            self.create_timer(self.params.rescan_interval_s, self._rescan)
        self.get_logger().info(f"labeler '{self.labeler_name}' ready on {self.params.dataset_dir}")

    def _queue_unlabeled(self, why: str) -> int:
        """Queue stored samples that have no label (oldest first, at most a queue's worth); returns how many."""
        pending = self.store.unlabeled_ids(self.labeler_name)[:self.params.queue_size]
        if pending:
            self.get_logger().info(f"labeling {len(pending)} {why}")
        for sample_id in pending:
            self._queue.put(sample_id)
        return len(pending)

    def _rescan(self) -> None:
        """Timer: with nothing queued or running, every stored sample without a label was missed; label it."""
        if self._queue.idle():
            self._queue_unlabeled("stored samples whose message was lost or dropped")

    @property
    def labeler_name(self) -> str:
        return self.labeler.name

    def _on_params(self, params: LabelerParams) -> None:
        self.labeler = make_labeler(params)
        self.grasp_labeler = make_grasp_labeler(params, self.labeler)
        self.params = params

    def _on_error(self, item, exc: BaseException) -> None:
        self.counts["failed"] += 1
        self.get_logger().error(f"could not label sample {item}: {exc}")

    def _on_sample(self, msg: InteractionSampleMsg) -> None:
        """Store the sample first (persisted before it counts as accepted), then queue its id for labeling."""
        try:
            sample = sample_from_msg(msg)  # validates encodings and sizes
        except ValueError as exc:
            self.counts["failed"] += 1
            self.get_logger().error(f"could not label sample {msg.sample_id}: {exc}")
            return
        try:
            self.store.write_sample(sample)  # a no-op when this very sample is already stored
        except DuplicateSampleError as exc:
            self.counts["refused"] += 1
            self.get_logger().error(f"refused sample {sample.sample_id}: {exc}")
            return
        if self.store.label_path(sample.sample_id, self.labeler_name).exists():
            self.counts["duplicate"] += 1
            self.get_logger().info(f"{sample.sample_id}: already labeled by {self.labeler_name}; ignored")
            return
        self._queue.put(sample.sample_id)

    def _label_one(self, sample_id: str) -> None:
        """Worker: label one stored sample (once: an existing label is never rewritten)."""
        if self.store.label_path(sample_id, self.labeler_name).exists():
            return
        sample = self.store.read_sample(sample_id)
        msg = sample_to_msg(sample)
        labeler = self.grasp_labeler if sample.kind == InteractionKind.GRASP else self.labeler
        try:
            label = labeler.label(sample)
        except Exception as exc:  # noqa: BLE001 - stored as a failed label, so it is not retried forever
            label = MaskLabel(mask=np.zeros(sample.before.rgb.shape[:2], dtype=bool), is_negative=False, kept=False,
                              reason=f"labeling failed: {type(exc).__name__}: {exc}", labeler=labeler.name)
            self.counts["failed"] += 1
            self.get_logger().error(f"{sample_id}: {label.reason}")
        label.provenance = label_provenance(labeler, sample)
        # the configured label set holds every label (the trainer reads one set); label.labeler says who made it
        self.store.write_label(sample.sample_id, label, labels_name=self.labeler_name)
        key = "discarded" if not label.kept else ("negative" if label.is_negative else "kept")
        self.counts[key] += 1
        self.label_pub.publish(label_to_msg(msg, label))
        color = (40, 220, 40) if label.kept else (220, 40, 40)
        overlay = overlay_mask(sample.before.rgb, label.mask, sample.action_pixel, color=color)
        self.overlay_pub.publish(rgb_to_msg(overlay, sample.before.frame_id))
        self.get_logger().info(f"{sample.sample_id}: {key} ({label.reason})")

    def idle(self) -> bool:
        return self._queue.idle()

    def destroy_node(self) -> None:
        if hasattr(self, "_queue"):  # absent when the constructor failed (e.g. a bad parameter)
            self._queue.stop()
        super().destroy_node()


def main(args=None) -> None:
    run_node(LabelerNode, num_threads=2, args=args)


if __name__ == "__main__":
    main()
