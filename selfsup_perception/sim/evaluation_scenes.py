"""Held-out simulated test scenes and AP evaluation of instance segmenters on them (evaluation only).

Test scenes use the simulator's ``test`` object set, disjoint from the ``train`` objects the
robot interacts with, so the AP measures segmentation of objects never seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from selfsup_perception.core.evaluation.coco_eval import evaluate_instances
from selfsup_perception.sim.tabletop import CameraConfig, SimConfig, TabletopSim

CLUTTERS = ("low", "medium", "high")


@dataclass
class TestScene:
    rgb: np.ndarray
    depth: np.ndarray
    instance_mask: np.ndarray  # (H, W) uint16, 0 = no object
    frame: object  # the RgbdFrame (intrinsics and pose for geometric baselines)


def render_test_scenes(num_scenes: int, *, seed: int = 10_000, width: int = 640, height: int = 480,
                       clutters: Sequence[str] = CLUTTERS, split: str = "test") -> list[TestScene]:
    """``num_scenes`` scenes cycling through ``clutters``, rendered with their ground-truth instance masks."""
    scenes = []
    with TabletopSim(SimConfig(seed=seed, camera=CameraConfig(width=width, height=height))) as sim:
        for i in range(num_scenes):
            sim.reset_scene(seed + i, split=split, clutter=clutters[i % len(clutters)])
            frame, gt = sim.render_with_ground_truth()
            scenes.append(TestScene(frame.rgb, frame.depth, gt["instance_mask"], frame))
    return scenes


def evaluate_segmenter(segment: Callable[[TestScene], list], scenes: Sequence[TestScene],
                       min_gt_area: int = 50) -> dict[str, float]:
    """COCO mask AP of ``segment(scene) -> [(mask, score) or Instance]`` over ``scenes``.

    Ground-truth objects with fewer than ``min_gt_area`` visible pixels are left out (they
    cannot be segmented from the image; mostly objects hidden behind others).
    """
    predictions, ground_truth = [], []
    for scene in scenes:
        gt = scene.instance_mask.copy()
        for i in np.unique(gt):
            if i and (gt == i).sum() < min_gt_area:
                gt[gt == i] = 0
        predictions.append(segment(scene))
        ground_truth.append(gt)
    return evaluate_instances(predictions, ground_truth)
