"""One planned push in the simulator with the ground truth of what moved (benchmarks only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from selfsup_perception.core.evaluation.ground_truth import moved_instance
from selfsup_perception.core.interaction import PlannerConfig, find_object_candidates, fit_table_plane, plan_push
from selfsup_perception.core.types import InteractionKind, InteractionOutcome, InteractionSample


@dataclass
class PushTruth:
    """An executed push (or free motion) and its ground truth (evaluation only).

    ``moved``: instance id -> horizontal displacement (m) of every object that moved more than the
    threshold; ``moved_most``: the id that moved most (0: none); ``instance_before`` / ``instance_after``:
    the instance masks of the before frame and (when asked for) of the after frame.
    """

    sample: InteractionSample
    moved_m: float
    moved_most: int
    moved: dict = field(default_factory=dict)
    instance_before: Optional[np.ndarray] = None
    instance_after: Optional[np.ndarray] = None

    def mask(self, instance_id: int) -> Optional[np.ndarray]:
        """Before-image mask of ``instance_id``; None for 0."""
        return (self.instance_before == instance_id) if instance_id else None


def simulated_push_truth(sim, rng: np.random.Generator, planner: PlannerConfig, sample_id: str = "push",
                         moved_threshold_m: float = 0.005, free_motion: bool = False,
                         after_truth: bool = False):
    """As :func:`simulated_push`, but returns a :class:`PushTruth` (None when no push is feasible, and
    a ``PushTruth`` with ``sample`` None when the arm refused it). ``after_truth``: also render the after
    frame's instance mask (same image: the segmentation pass does not change the rendering)."""
    before, gt_before = sim.render_with_ground_truth()
    plane = fit_table_plane(before, rng=np.random.default_rng(0))
    push = plan_push(before, find_object_candidates(before, plane), rng, planner)
    if push is None:
        return None
    p0 = sim.object_poses()
    if free_motion:
        ok, message = sim.execute_free_motion(push.start_point)
    else:
        ok, message = sim.execute_push(push.start_point, push.end_point)
    if not ok:
        return PushTruth(None, 0.0, 0)
    p1 = sim.object_poses()
    gt_after = None
    if after_truth:
        after, gt_after = sim.render_with_ground_truth()
    else:
        after = sim.render()
    # horizontal motion: a push moves objects on the table
    xy0 = {i: np.r_[p[0][:2], 0.0] for i, p in p0.items()}
    xy1 = {i: np.r_[p[0][:2], 0.0] for i, p in p1.items()}
    best, moved_m = moved_instance(xy0, xy1, moved_threshold_m)
    moved = {int(i): float(np.linalg.norm(xy1[i] - xy0[i])) for i in xy0 if i in xy1}
    moved = {i: d for i, d in moved.items() if d > moved_threshold_m}
    sample = InteractionSample(sample_id, InteractionKind.PUSH, before, after, push.action_pixel, push.start_point,
                               push.end_point, InteractionOutcome.EXECUTED, message)
    return PushTruth(sample, moved_m, best, moved, gt_before["instance_mask"],
                     None if gt_after is None else gt_after["instance_mask"])


def simulated_push(sim, rng: np.random.Generator, planner: PlannerConfig, sample_id: str = "push",
                   moved_threshold_m: float = 0.005, free_motion: bool = False):
    """Plan a push on the current view, execute it and render again.

    Returns (sample, gt_mask, moved_m): ``gt_mask`` is the before-image mask of the object whose
    ground-truth position moved most, None when nothing moved more than ``moved_threshold_m``.
    Returns None when no push is feasible, and (None, None, 0.0) when the arm refused it.

    ``free_motion``: plan the push but move the arm through the air above its start instead
    (``execute_free_motion``): nothing is touched, yet the camera mount shakes as with any arm
    motion -- a "nothing moved" pair whose only change is the camera's own motion.
    """
    truth = simulated_push_truth(sim, rng, planner, sample_id, moved_threshold_m, free_motion)
    if truth is None:
        return None
    if truth.sample is None:
        return None, None, 0.0
    return truth.sample, truth.mask(truth.moved_most), truth.moved_m
