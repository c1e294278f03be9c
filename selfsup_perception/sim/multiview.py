"""Multi-view capture of a static simulated tabletop: camera trajectories around the table.

For RegConsist-style pre-training the robot moves a camera around a static scene and registers the
views by depth and pose. Here the camera of :class:`~selfsup_perception.sim.tabletop.TabletopSim`
is moved along an arc around the workspace (``look_at`` from eyes on a ring, with jitter on radius,
height, azimuth and the look-at target). Each view comes with ground-truth semantic and instance
masks (class ids index :data:`~selfsup_perception.sim.tabletop.SEMANTIC_CLASSES`) that are meant for
evaluation and for the few labelled fine-tuning views only -- never for pre-training (except the
explicit ground-truth-regions upper bound of the bench).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from selfsup_perception.core.types import RgbdFrame
from selfsup_perception.core.geometry.camera_poses import MultiViewConfig, ring_camera_poses
from selfsup_perception.sim.tabletop import SEMANTIC_CLASSES, SimConfig, TabletopSim, replace_camera

__all__ = ["LabelledView", "MultiViewConfig", "SEMANTIC_CLASSES", "capture_scene", "ring_camera_poses", "render_views"]


@dataclass
class LabelledView:
    frame: RgbdFrame
    semantic: np.ndarray  # (H, W) uint8, index into SEMANTIC_CLASSES -- evaluation / labelled views only
    instance: np.ndarray  # (H, W) uint16, 0 = no object

    # ViewLike accessors so a LabelledView can be passed where views are expected.
    @property
    def rgb(self) -> np.ndarray:
        return self.frame.rgb

    @property
    def depth(self) -> np.ndarray:
        return self.frame.depth

    @property
    def intrinsics(self):
        return self.frame.intrinsics

    @property
    def camera_to_world(self) -> np.ndarray:
        return self.frame.camera_to_world


def render_views(sim: TabletopSim, poses: list[np.ndarray]) -> list[LabelledView]:
    """Render each pose with its ground truth; restores the simulator's camera pose afterwards."""
    saved = sim.camera_to_world.copy()
    views = []
    try:
        for t in poses:
            sim.set_camera_pose(t)
            frame, gt = sim.render_with_ground_truth()
            views.append(LabelledView(frame, gt["semantic_mask"], gt["instance_mask"]))
    finally:
        sim.set_camera_pose(saved)
    return views


def capture_scene(
    seed: int,
    *,
    split: str = "train",
    clutter: str = "medium",
    width: int = 160,
    height: int = 120,
    config: MultiViewConfig = MultiViewConfig(),
    sim: Optional[TabletopSim] = None,
) -> list[LabelledView]:
    """Reset a scene from ``(seed, split, clutter)`` and capture ``config.num_views`` labelled views.

    Pass ``sim`` to reuse a simulator (its camera size must be ``width`` x ``height``).
    """
    own = sim is None
    if own:
        sim = TabletopSim(replace_camera(SimConfig(seed=seed), width=width, height=height))
    elif (sim.intrinsics.width, sim.intrinsics.height) != (width, height):
        raise ValueError(f"sim renders {sim.intrinsics.width}x{sim.intrinsics.height}, asked for {width}x{height}")
    try:
        sim.reset_scene(seed, split=split, clutter=clutter)
        poses = ring_camera_poses(config, np.random.default_rng([seed, 271828]))
        return render_views(sim, poses)
    finally:
        if own:
            sim.close()
