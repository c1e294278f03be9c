"""Interaction planning from RGB-D: table plane, object candidates, push and grasp actions (ROS-free)."""

from selfsup_perception.core.interaction.action_planning import (
    GraspAction,
    ObjectCandidate,
    PlannerConfig,
    PushAction,
    candidates_from_masks,
    evaluate_push,
    find_object_candidates,
    plan_grasp,
    plan_push,
)
from selfsup_perception.core.geometry.table_plane import (
    TablePlane,
    TablePlaneConfig,
    TablePlaneResult,
    find_table_plane,
    fit_table_plane,
)

__all__ = [
    "GraspAction",
    "ObjectCandidate",
    "PlannerConfig",
    "PushAction",
    "TablePlane",
    "TablePlaneConfig",
    "TablePlaneResult",
    "candidates_from_masks",
    "evaluate_push",
    "find_object_candidates",
    "find_table_plane",
    "fit_table_plane",
    "plan_grasp",
    "plan_push",
]
