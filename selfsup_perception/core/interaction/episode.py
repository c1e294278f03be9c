"""One interaction episode, ROS-free: capture before -> choose -> act -> capture after.

The interaction node wires real captures and an arm backend into :func:`run_episode`;
tests and benches wire the simulator in directly. Every failure comes back as an
:class:`EpisodeResult` with an error code; nothing here raises for a failed motion.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from selfsup_perception.core.interaction.action_planning import (
    GraspAction,
    PlannerConfig,
    PushAction,
    candidates_from_masks,
    find_object_candidates,
    plan_grasp,
    plan_push,
)
from selfsup_perception.core.evaluation.bottom_up import depth_bottom_up
from selfsup_perception.core.geometry.table_plane import fit_table_plane
from selfsup_perception.core.interaction.selection import hypothesis_candidates, rank_hypotheses
from selfsup_perception.core.types import InteractionKind, InteractionOutcome, InteractionSample, RgbdFrame

CAPTURE_FAILED = "CAPTURE_FAILED"
NO_CANDIDATE = "NO_CANDIDATE"


@dataclass
class EpisodeResult:
    success: bool
    message: str
    error_code: str = ""
    sample: Optional[InteractionSample] = None
    action: Optional[object] = None  # PushAction | GraspAction
    timings: dict = field(default_factory=dict)


def choose_action(frame: RgbdFrame, kind: InteractionKind, rng: np.random.Generator,
                  planner: PlannerConfig, hypotheses: Optional[Sequence[np.ndarray]] = None,
                  hypothesis_scores: Optional[Sequence[float]] = None, exclude: Sequence[tuple] = (),
                  policy: Optional[str] = None):
    """Plan a push or grasp on ``frame``; candidates come from model hypotheses when given, else geometry.

    ``policy`` None: the model's hypotheses (best feasible action over them), then geometric candidates.
    ``policy`` 'uncertain' | 'random' | 'confident' (:mod:`.selection`): the depth-aware bottom-up
    segments and the model's hypotheses are ranked by the policy and tried in that order (the first
    with a feasible action wins; other objects are obstacles), then geometric candidates. When no
    hypothesis allows a feasible action, geometric candidates are tried. ``exclude`` lists
    (source, candidate_id) pairs that failed already (e.g. unreachable for the arm).
    Returns (action or None, candidate source: 'model', 'depth' or 'geometry').
    """
    plane = fit_table_plane(frame, rng=rng)
    plan = plan_push if kind == InteractionKind.PUSH else plan_grasp
    if policy is not None:
        action, source = _choose_by_policy(frame, plane, plan, rng, planner, hypotheses or [],
                                           hypothesis_scores, exclude, policy)
        if action is not None:
            return action, source
    sources = []
    if hypotheses and policy is None:
        sources.append(("model", lambda: candidates_from_masks(frame, plane, hypotheses, scores=hypothesis_scores,
                                                               config=planner)))
    sources.append(("geometry", lambda: find_object_candidates(frame, plane, planner)))
    for source, make in sources:
        candidates = [c for c in make() if (source, c.candidate_id) not in exclude]
        action = plan(frame, candidates, rng, planner) if candidates else None
        if action is not None:
            return action, source
    return None, sources[-1][0]


def _choose_by_policy(frame, plane, plan, rng, planner, masks, scores, exclude, policy):
    """(action, source) for the first hypothesis in ``policy``'s order with a feasible action, else (None, '')."""
    depth = depth_bottom_up(frame, plane=plane).instances
    model = list(zip(masks, scores if scores is not None else [1.0] * len(masks)))
    source = "model" if model else "depth"  # with a model, its belief ranked the hypotheses
    min_area = int(planner.min_candidate_area_px * frame.shape[0] * frame.shape[1] / (640 * 480))
    hyps = hypothesis_candidates(depth, model, min_area=min_area)
    for i in rank_hypotheses(hyps, policy, rng):
        if (source, i + 1) in exclude:  # ids: 1 + the hypothesis' index, stable across replanning
            continue
        # the chosen hypothesis (id 1) among the other objects (depth segments without its pixels) as obstacles
        obstacles = [m & ~hyps[i].mask for m, _ in depth]
        candidates = candidates_from_masks(frame, plane, [hyps[i].mask] + obstacles, config=planner)
        if not candidates or candidates[0].candidate_id != 1:
            continue
        action = plan(frame, candidates, rng, planner, candidate_id=1)
        if action is not None:
            action.candidate_id = i + 1
            return action, source
    return None, ""


def run_episode(
    capture: Callable[[], RgbdFrame],
    arm,
    kind: InteractionKind,
    rng: np.random.Generator,
    *,
    planner: Optional[PlannerConfig] = None,
    start_point: Optional[Sequence[float]] = None,
    end_point: Optional[Sequence[float]] = None,
    action_pixel: Optional[Sequence[float]] = None,
    hypotheses: Optional[Callable[[RgbdFrame], tuple[list, list]]] = None,
    feedback: Callable[[str, float], None] = lambda stage, progress: None,
    sample_id: Optional[str] = None,
    max_attempts: int = 3,
    policy: Optional[str] = None,
) -> EpisodeResult:
    """Run one interaction. With ``start_point``/``end_point`` given, execute them; otherwise plan.

    ``capture`` returns a validated frame or raises (TimeoutError, ValueError...);
    ``arm`` is an :class:`~selfsup_perception.robot.arm_backend.ArmBackend`;
    ``hypotheses(frame) -> (masks, scores)`` supplies a segmentation model's beliefs; ``policy``
    (:func:`choose_action`) ranks them with the depth-aware bottom-up segments.
    A planned action the arm reports UNREACHABLE is replanned without that candidate, up
    to ``max_attempts`` times (nothing moved, so the before view still holds).
    """
    planner = planner or PlannerConfig()
    timings = {}
    t0 = time.monotonic()
    feedback("moving_out_of_view", 0.0)
    arm.move_out_of_view()
    feedback("capturing_before", 0.1)
    try:
        before = capture()
    except Exception as exc:  # noqa: BLE001 - any capture failure ends the episode cleanly
        return EpisodeResult(False, f"capture before failed: {exc}", CAPTURE_FAILED)
    timings["capture_before_s"] = time.monotonic() - t0

    feedback("planning", 0.2)
    t1 = time.monotonic()
    action = None
    explicit = start_point is not None and end_point is not None
    if explicit:
        s, e = tuple(map(float, start_point)), tuple(map(float, end_point))
        if not (np.all(np.isfinite(s)) and np.all(np.isfinite(e))):
            return EpisodeResult(False, "start/end points must be finite", "INVALID_GOAL")
        if action_pixel is None:
            pc = np.linalg.inv(before.camera_to_world) @ np.append(s, 1.0)
            k = before.intrinsics
            action_pixel = (k.fx * pc[0] / pc[2] + k.cx, k.fy * pc[1] / pc[2] + k.cy) if pc[2] > 0 else (-1.0, -1.0)
        pixel = tuple(map(float, action_pixel))
    masks, scores = ([], [])
    if not explicit and hypotheses is not None:
        masks, scores = hypotheses(before)
    failed: list[tuple] = []
    for _ in range(1 if explicit else max_attempts):
        if not explicit:
            try:
                action, source = choose_action(before, kind, rng, planner, masks, scores, exclude=failed,
                                               policy=policy)
            except ValueError as exc:
                return EpisodeResult(False, f"cannot plan on this view: {exc}", NO_CANDIDATE)
            if action is None:
                why = "no object candidate with a feasible action"
                return EpisodeResult(False, why + (f" the arm can reach ({len(failed)} unreachable)" if failed else ""),
                                     NO_CANDIDATE, timings=timings)
            if isinstance(action, PushAction):
                s, e, pixel = action.start_point, action.end_point, action.action_pixel
            else:
                assert isinstance(action, GraspAction)
                s, e, pixel = action.pick_point, action.place_point, action.action_pixel
            timings["candidate_source"] = source
        timings["plan_s"] = time.monotonic() - t1

        feedback("executing", 0.4)
        t2 = time.monotonic()
        motion = arm.execute_push(s, e) if kind == InteractionKind.PUSH else arm.execute_grasp(s, e)
        timings["execute_s"] = time.monotonic() - t2
        if motion.error_code != "UNREACHABLE" or action is None:
            break
        failed.append((source, action.candidate_id))  # nothing moved: plan again without that candidate
    if not motion.success:
        arm.move_out_of_view()
        return EpisodeResult(False, motion.message, motion.error_code, action=action, timings=timings)

    feedback("capturing_after", 0.8)
    try:
        after = capture()
    except Exception as exc:  # noqa: BLE001
        return EpisodeResult(False, f"capture after failed: {exc}", CAPTURE_FAILED, action=action, timings=timings)
    if after.shape != before.shape:
        return EpisodeResult(False, f"after image {after.shape} differs in size from before {before.shape}",
                             CAPTURE_FAILED, action=action, timings=timings)
    sample = InteractionSample(
        sample_id=sample_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}",
        kind=kind, before=before, after=after, action_pixel=pixel, start_point=tuple(s), end_point=tuple(e),
        outcome=InteractionOutcome.EXECUTED, message=motion.message,
    )
    timings["total_s"] = time.monotonic() - t0
    return EpisodeResult(True, motion.message, "", sample=sample, action=action, timings=timings)
