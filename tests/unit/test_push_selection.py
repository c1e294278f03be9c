"""Push selection: which hypothesis a push tests (uncertain / random / confident), first hypotheses from depth."""

import numpy as np
import pytest

from selfsup_perception.core.interaction.selection import (
    POLICIES,
    hypothesis_candidates,
    iou_matrix,
    rank_hypotheses,
    select_masks,
)

H, W = 40, 60


def box(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


# three objects as the depth segments see them: A and B agree with the model, C is two objects merged
A, B, C = box(2, 2, 12, 12), box(20, 2, 30, 12), box(35, 20, 55, 30)
C_LEFT, C_RIGHT = box(35, 20, 45, 30), box(45, 20, 55, 30)


def test_iou_matrix_against_a_plain_reference():
    masks_a, masks_b = [A, C, np.zeros((H, W), bool)], [A, C_LEFT, B]
    got = iou_matrix(masks_a, masks_b)
    for i, a in enumerate(masks_a):
        for j, b in enumerate(masks_b):
            union = (a | b).sum()
            assert got[i, j] == pytest.approx((a & b).sum() / union if union else 0.0)
    assert iou_matrix([], masks_b).shape == (0, 3)


def test_confidence_is_agreement_of_depth_and_model():
    depth = [(A, 0.9), (B, 0.9), (C, 0.9)]
    model = [(A, 0.8), (box(20, 2, 29, 12), 0.6), (C_LEFT, 0.7), (C_RIGHT, 0.7)]
    hyps = hypothesis_candidates(depth, model)
    by_source = [(h.source, round(h.confidence, 3)) for h in hyps]
    # A: the model's mask is the same (IoU 1, score 0.8); B: IoU 0.9 x 0.6; C: each half IoU 0.5 x 0.7
    assert by_source[:3] == [("depth", 0.8), ("depth", 0.54), ("depth", 0.35)]
    # model masks that duplicate a depth segment (IoU >= 0.5) are folded into it; none is left here
    assert len(hyps) == 3
    # a model mask no depth segment supports (a blotch on the table) is a hypothesis of confidence 0
    hyps = hypothesis_candidates(depth, model + [(box(0, 30, 8, 38), 0.9)])
    assert hyps[-1].source == "model" and hyps[-1].confidence == 0.0 and hyps[-1].uncertainty == 1.0


def test_policies_order_by_uncertainty():
    depth = [(A, 0.9), (B, 0.9), (C, 0.9)]
    model = [(A, 0.8), (box(20, 2, 29, 12), 0.6), (C_LEFT, 0.7), (C_RIGHT, 0.7)]
    hyps = hypothesis_candidates(depth, model)
    rng = np.random.default_rng(0)
    assert rank_hypotheses(hyps, "uncertain", rng) == [2, 1, 0]  # the merged segment the model splits first
    assert rank_hypotheses(hyps, "confident", rng) == [0, 1, 2]
    orders = {tuple(rank_hypotheses(hyps, "random", np.random.default_rng(s))) for s in range(30)}
    assert len(orders) > 3  # random is random (and reproducible per seed)
    assert rank_hypotheses(hyps, "random", np.random.default_rng(5)) == \
        rank_hypotheses(hyps, "random", np.random.default_rng(5))
    with pytest.raises(ValueError, match="unknown push selection policy"):
        rank_hypotheses(hyps, "greedy", rng)


def test_before_a_model_exists_the_depth_segments_are_the_hypotheses():
    depth = [(A, 0.9), (B, 0.5), (C, 0.7)]
    for policy in POLICIES:
        ranked = select_masks(depth, [], policy, np.random.default_rng(1))
        assert sorted(h.source for h in ranked) == ["depth"] * 3
        assert all(h.confidence == 0.0 for h in ranked)  # no model: nothing is believed yet
    # every policy breaks the ties with the same draw: before a model they choose alike
    firsts = {policy: select_masks(depth, [], policy, np.random.default_rng(7))[0].mask.sum() for policy in POLICIES}
    assert len(set(firsts.values())) == 1


def test_small_masks_and_shape_mismatch():
    tiny = box(0, 0, 2, 2)
    assert len(hypothesis_candidates([(A, 1.0), (tiny, 1.0)], [], min_area=10)) == 1
    with pytest.raises(ValueError, match="differ in shape"):
        hypothesis_candidates([(A, 1.0)], [(np.ones((5, 5), bool), 0.5)])


def test_the_interaction_node_refuses_an_unknown_policy():
    from selfsup_perception.nodes.interaction_node import InteractionParams

    assert InteractionParams().push_selection == "uncertain"
    assert InteractionParams(push_selection="none").push_selection == "none"
    with pytest.raises(ValueError, match="push_selection must be"):
        InteractionParams(push_selection="greedy")
