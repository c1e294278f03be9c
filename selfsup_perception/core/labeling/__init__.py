"""Self-supervised mask labels from interactions: optical-flow masks (paper 003), frame differencing (paper 001)
and grasp outcomes (Pathak et al.: what a grasp lifted, or a negative where nothing was there).

All labelers share one interface: ``name`` and ``label(sample: InteractionSample) -> MaskLabel``. A sample
whose data cannot be labelled (no depth, no table in view, ...) gives a label with ``kept=False`` and the
reason ``"skipped: ..."``; the flow labeler removes the camera's own motion first (:mod:`.ego_motion`).
"""

from selfsup_perception.core.labeling.ego_motion import EgoMotion, EgoMotionConfig, estimate_ego_motion
from selfsup_perception.core.labeling.flow_clustering import ClusterConfig, cluster_flow
from selfsup_perception.core.labeling.flow_labeler import FlowLabelerConfig, FlowMaskLabeler, resolution_scale
from selfsup_perception.core.labeling.frame_difference import FrameDifferenceConfig, FrameDifferenceLabeler
from selfsup_perception.core.labeling.grasp_outcome import GraspOutcomeConfig, GraspOutcomeLabeler
from selfsup_perception.core.labeling.optical_flow import FlowConfig, compute_flow, flow_to_color

__all__ = [
    "ClusterConfig",
    "EgoMotion",
    "EgoMotionConfig",
    "FlowConfig",
    "FlowLabelerConfig",
    "FlowMaskLabeler",
    "FrameDifferenceConfig",
    "FrameDifferenceLabeler",
    "GraspOutcomeConfig",
    "GraspOutcomeLabeler",
    "cluster_flow",
    "compute_flow",
    "estimate_ego_motion",
    "flow_to_color",
    "resolution_scale",
]
