"""One planned push in the simulator with the ground truth of what moved (benchmarks only)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from selfsup_perception.core.evaluation.ground_truth import moved_instance
from selfsup_perception.core.interaction import PlannerConfig, find_object_candidates, fit_table_plane, plan_push
from selfsup_perception.core.types import InteractionKind, InteractionOutcome, InteractionSample


def simulated_push(sim, rng: np.random.Generator, planner: PlannerConfig, sample_id: str = "push",
                   moved_threshold_m: float = 0.005):
    """Plan a push on the current view, execute it and render again.

    Returns (sample, gt_mask, moved_m): ``gt_mask`` is the before-image mask of the object whose
    ground-truth position moved most, None when nothing moved more than ``moved_threshold_m``.
    Returns None when no push is feasible, and (None, None, 0.0) when the arm refused it.
    """
    before, gt_before = sim.render_with_ground_truth()
    plane = fit_table_plane(before, rng=np.random.default_rng(0))
    push = plan_push(before, find_object_candidates(before, plane), rng, planner)
    if push is None:
        return None
    p0 = sim.object_poses()
    ok, message = sim.execute_push(push.start_point, push.end_point)
    if not ok:
        return None, None, 0.0
    p1 = sim.object_poses()
    after = sim.render()
    # horizontal motion: a push moves objects on the table
    best, moved_m = moved_instance({i: np.r_[p[0][:2], 0.0] for i, p in p0.items()},
                                   {i: np.r_[p[0][:2], 0.0] for i, p in p1.items()}, moved_threshold_m)
    gt: Optional[np.ndarray] = (gt_before["instance_mask"] == best) if best else None
    sample = InteractionSample(sample_id, InteractionKind.PUSH, before, after, push.action_pixel, push.start_point,
                               push.end_point, InteractionOutcome.EXECUTED, message)
    return sample, gt, moved_m
