"""Self-supervised mask labels from interactions: optical-flow masks (paper 003) and frame differencing (paper 001).

Both labelers share one interface: ``name`` and ``label(sample: InteractionSample) -> MaskLabel``.
"""

from selfsup_perception.core.labeling.flow_clustering import ClusterConfig, cluster_flow
from selfsup_perception.core.labeling.flow_labeler import FlowLabelerConfig, FlowMaskLabeler, resolution_scale
from selfsup_perception.core.labeling.frame_difference import FrameDifferenceConfig, FrameDifferenceLabeler
from selfsup_perception.core.labeling.optical_flow import FlowConfig, compute_flow, flow_to_color

__all__ = [
    "ClusterConfig",
    "FlowConfig",
    "FlowLabelerConfig",
    "FlowMaskLabeler",
    "FrameDifferenceConfig",
    "FrameDifferenceLabeler",
    "cluster_flow",
    "compute_flow",
    "flow_to_color",
    "resolution_scale",
]
