"""Metrics for the learned perception models (ROS-free)."""

from selfsup_perception.core.evaluation.coco_eval import evaluate_instances, instance_masks_from_id_map

__all__ = ["evaluate_instances", "instance_masks_from_id_map"]
