"""One interaction episode against the simulator directly (no ROS): planning, retries, errors."""

import numpy as np
import pytest

from selfsup_perception.core.interaction.episode import NO_CANDIDATE, run_episode
from selfsup_perception.core.types import InteractionKind
from selfsup_perception.robot.arm_backend import MotionResult
from selfsup_perception.sim.tabletop import CameraConfig, SimConfig, TabletopSim

pytestmark = pytest.mark.sim


class SimArm:
    """The simulator behind the ArmBackend call shape, refusing pushes that start in ``refuse`` (x ranges)."""

    name = "sim-direct"

    def __init__(self, sim, refuse=()):
        self.sim, self.refuse, self.calls = sim, refuse, []

    def execute_push(self, start, end, **_):
        self.calls.append((tuple(start), tuple(end)))
        if any(lo <= start[0] <= hi for lo, hi in self.refuse):
            return MotionResult.failure("UNREACHABLE", "refused by the test")
        return MotionResult.from_status(*self.sim.execute_push(start, end))

    def execute_grasp(self, pick, place, **_):
        return MotionResult.from_status(*self.sim.execute_grasp(pick, place))

    def move_out_of_view(self, **_):
        self.sim.move_arm_home()
        return MotionResult.ok()

    def is_reachable(self, xyz):
        return True


@pytest.fixture(scope="module")
def sim():
    with TabletopSim(SimConfig(camera=CameraConfig(width=160, height=120))) as s:
        yield s


def test_an_unreachable_candidate_is_replanned_without_it(sim):
    sim.reset_scene(3)
    arm = SimArm(sim)
    first = run_episode(sim.render, arm, InteractionKind.PUSH, np.random.default_rng(0), max_attempts=1)
    assert first.success
    sim.reset_scene(3)
    x = first.action.start_point[0]
    arm = SimArm(sim, refuse=[(x - 1e-6, x + 1e-6)])  # the first choice is now unreachable
    result = run_episode(sim.render, arm, InteractionKind.PUSH, np.random.default_rng(0), max_attempts=3)
    assert result.success, result.message
    assert len(arm.calls) == 2 and result.action.candidate_id != first.action.candidate_id
    assert result.sample.before.shape == (120, 160)


def test_no_feasible_action_is_a_clear_error(sim):
    sim.reset_scene(3)
    arm = SimArm(sim, refuse=[(-10.0, 10.0)])
    result = run_episode(sim.render, arm, InteractionKind.PUSH, np.random.default_rng(0), max_attempts=5)
    assert not result.success and result.error_code == NO_CANDIDATE
    assert "unreachable" in result.message
    assert len(arm.calls) == len(sim.objects)  # each candidate tried once


def test_model_hypotheses_without_a_feasible_push_fall_back_to_geometry(sim):
    sim.reset_scene(3)
    empty = np.zeros((120, 160), bool)
    result = run_episode(sim.render, SimArm(sim), InteractionKind.PUSH, np.random.default_rng(0),
                         hypotheses=lambda frame: ([empty], [0.9]))
    assert result.success and result.timings["candidate_source"] == "geometry"


def _half(mask):
    vs, us = np.nonzero(mask)
    out = mask.copy()
    out[:, : int(np.median(us))] = False
    return out


@pytest.mark.parametrize("policy", ["uncertain", "confident"])
def test_push_selection_tests_the_hypothesis_depth_and_model_disagree_on(sim, policy):
    sim.reset_scene(3)
    _, gt = sim.render_with_ground_truth()
    ids = [int(i) for i in np.unique(gt["instance_mask"]) if i and (gt["instance_mask"] == i).sum() > 20]
    assert len(ids) >= 2
    doubted = ids[0]  # the model sees only half of this object; the others it gets right
    masks = [_half(gt["instance_mask"] == i) if i == doubted else gt["instance_mask"] == i for i in ids]
    result = run_episode(sim.render, SimArm(sim), InteractionKind.PUSH, np.random.default_rng(0),
                         hypotheses=lambda frame: (masks, [0.9] * len(masks)), policy=policy)
    assert result.success and result.timings["candidate_source"] == "model"
    u, v = (int(round(c)) for c in result.sample.action_pixel)
    pushed = int(gt["instance_mask"][v, u])
    assert (pushed == doubted) == (policy == "uncertain"), (pushed, doubted)


def test_before_a_model_the_depth_segments_are_pushed(sim):
    sim.reset_scene(3)
    _, gt = sim.render_with_ground_truth()
    result = run_episode(sim.render, SimArm(sim), InteractionKind.PUSH, np.random.default_rng(0), policy="uncertain")
    assert result.success and result.timings["candidate_source"] == "depth"
    u, v = (int(round(c)) for c in result.sample.action_pixel)
    assert gt["instance_mask"][v, u] > 0  # on an object


def test_an_unreachable_hypothesis_is_replanned_without_it_under_a_random_policy(sim):
    sim.reset_scene(3)
    first = run_episode(sim.render, SimArm(sim), InteractionKind.PUSH, np.random.default_rng(0), max_attempts=1,
                        policy="random")
    assert first.success
    sim.reset_scene(3)
    x = first.action.start_point[0]
    arm = SimArm(sim, refuse=[(x - 1e-6, x + 1e-6)])
    result = run_episode(sim.render, arm, InteractionKind.PUSH, np.random.default_rng(0), max_attempts=3,
                         policy="random")
    assert result.success, result.message
    assert len(arm.calls) == 2 and result.action.candidate_id != first.action.candidate_id
