"""Object candidates and push/grasp planning on a synthetic top-down tabletop (table z = 0)."""

import numpy as np
import pytest

from selfsup_perception.core.interaction import (
    PlannerConfig,
    TablePlaneConfig,
    candidates_from_masks,
    evaluate_push,
    find_object_candidates,
    fit_table_plane,
    plan_grasp,
    plan_push,
)
from selfsup_perception.core.types import CameraIntrinsics, RgbdFrame

K = CameraIntrinsics(fx=200.0, fy=200.0, cx=99.5, cy=79.5, width=200, height=160)
CAM_XY, CAM_Z = (0.55, 0.0), 1.0


def _t_wc() -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = np.diag([1.0, -1.0, -1.0])  # looking straight down: optical x -> world x, y -> -y
    t[:3, 3] = [CAM_XY[0], CAM_XY[1], CAM_Z]
    return t


def _scene(boxes):
    """Depth of a table z = 0 with boxes (cx, cy, half_x, half_y, height) seen from 1 m above."""
    v, u = np.mgrid[0:K.height, 0:K.width].astype(np.float64)
    depth = np.full((K.height, K.width), CAM_Z, np.float64)
    masks = []
    for cx, cy, hx, hy, hz in boxes:
        z = CAM_Z - hz
        x = CAM_XY[0] + (u - K.cx) / K.fx * z
        y = CAM_XY[1] - (v - K.cy) / K.fy * z
        m = (np.abs(x - cx) <= hx) & (np.abs(y - cy) <= hy)
        depth[m] = z
        masks.append(m)
    frame = RgbdFrame(rgb=np.zeros((K.height, K.width, 3), np.uint8), depth=depth.astype(np.float32),
                      intrinsics=K, camera_to_world=_t_wc())
    plane = fit_table_plane(frame, TablePlaneConfig(), np.random.default_rng(0))
    return frame, plane, masks


CFG = PlannerConfig()


def test_candidates_match_boxes():
    frame, plane, masks = _scene([(0.45, 0.0, 0.03, 0.03, 0.05), (0.65, 0.1, 0.025, 0.04, 0.08)])
    cands = find_object_candidates(frame, plane, CFG)
    assert len(cands) == 2
    by_x = sorted(cands, key=lambda c: c.centroid_world[0])
    np.testing.assert_allclose(by_x[0].centroid_world, [0.45, 0.0, 0.05], atol=0.004)
    np.testing.assert_allclose(by_x[1].centroid_world, [0.65, 0.1, 0.08], atol=0.004)
    assert abs(by_x[1].top_height - 0.08) < 0.003
    assert (by_x[0].mask == masks[0]).all()


def test_push_never_into_neighbour_and_corridor_check():
    # B sits right in front of A along +x: pushing A along +x is infeasible, along -x feasible.
    # Gap 6 cm: A's front edge 0.53 + push 0.06 + clearance 0.01 reaches B's edge 0.59.
    cfg = PlannerConfig(clearance=0.01)
    frame, plane, _ = _scene([(0.50, 0.0, 0.03, 0.03, 0.05), (0.62, 0.0, 0.03, 0.03, 0.05)])
    cands = sorted(find_object_candidates(frame, plane, cfg), key=lambda c: c.centroid_world[0])
    a, b = cands
    assert evaluate_push(a, b.points_world[:, :2], np.array([1.0, 0.0]), cfg) is None
    res = evaluate_push(a, b.points_world[:, :2], np.array([-1.0, 0.0]), cfg)
    assert res is not None
    start, contact, end, _ = res
    # start behind the back edge (x = 0.53) by behind_margin, end push_distance past the contact
    np.testing.assert_allclose(contact, [0.53, 0.0], atol=0.004)
    np.testing.assert_allclose(start, [0.53 + cfg.behind_margin, 0.0], atol=0.004)
    np.testing.assert_allclose(end, [0.53 - cfg.push_distance, 0.0], atol=0.004)
    push = plan_push(frame, cands, np.random.default_rng(0), cfg, candidate_id=a.candidate_id)
    d = np.array(push.direction)
    # the swept corridor of A must not contain any point of B
    assert evaluate_push(a, b.points_world[:, :2], d, cfg) is not None
    assert d[0] < 0.9  # never straight into B


def test_push_keeps_object_on_table_near_edge():
    frame, plane, _ = _scene([(0.55, 0.21, 0.025, 0.025, 0.05)])
    cands = find_object_candidates(frame, plane, CFG)
    for seed in range(5):
        push = plan_push(frame, cands, np.random.default_rng(seed), CFG)
        assert push is not None
        d = np.array(push.direction)
        moved = cands[0].points_world[:, :2] + CFG.push_distance * d
        assert moved[:, 1].max() <= CFG.workspace_y[1] - CFG.edge_margin + 1e-9
        assert moved[:, 0].min() >= CFG.workspace_x[0] + CFG.edge_margin - 1e-9
        assert d[1] < 0.6  # mostly away from the near edge at y = 0.25
    # the straight push towards the edge is rejected
    assert evaluate_push(cands[0], np.zeros((0, 2)), np.array([0.0, 1.0]), CFG) is None


def test_push_is_deterministic_and_action_pixel_on_object():
    frame, plane, _ = _scene([(0.45, -0.1, 0.03, 0.03, 0.05), (0.62, 0.08, 0.03, 0.02, 0.06),
                              (0.5, 0.12, 0.02, 0.02, 0.04)])
    cands = find_object_candidates(frame, plane, CFG)
    p1 = plan_push(frame, cands, np.random.default_rng(11), CFG)
    p2 = plan_push(frame, cands, np.random.default_rng(11), CFG)
    assert p1 == p2
    cand = next(c for c in cands if c.candidate_id == p1.candidate_id)
    u, v = p1.action_pixel
    assert cand.mask[int(v), int(u)]
    assert p1.start_point[2] == CFG.contact_height
    length = np.linalg.norm(np.subtract(p1.end_point, p1.start_point))
    assert abs(length - (CFG.behind_margin + CFG.push_distance)) < 1e-6


def test_no_candidates_no_push():
    frame, plane, _ = _scene([])
    assert find_object_candidates(frame, plane, CFG) == []
    assert plan_push(frame, [], np.random.default_rng(0), CFG) is None


def test_candidates_from_masks_and_grasp():
    frame, plane, masks = _scene([(0.45, 0.0, 0.03, 0.03, 0.05), (0.65, 0.1, 0.025, 0.04, 0.08)])
    table_only = np.zeros_like(masks[0])
    table_only[:5, :5] = True  # a hypothesis on the table: dropped
    cands = candidates_from_masks(frame, plane, [masks[0], table_only, masks[1]], scores=[0.2, 0.9, 0.7])
    assert [c.candidate_id for c in cands] == [1, 3]
    assert [c.score for c in cands] == [0.2, 0.7]
    grasp = plan_grasp(frame, cands, np.random.default_rng(0), CFG)
    assert grasp.candidate_id == 3  # highest score
    np.testing.assert_allclose(grasp.pick_point, [0.65, 0.1, 0.08], atol=0.005)
    place = np.array(grasp.place_point[:2])
    for c in cands:
        assert np.min(np.linalg.norm(c.points_world[:, :2] - place, axis=1)) > CFG.place_clearance
    assert CFG.workspace_x[0] <= place[0] <= CFG.workspace_x[1]
    assert CFG.workspace_y[0] <= place[1] <= CFG.workspace_y[1]
    with pytest.raises(ValueError, match="scores"):
        candidates_from_masks(frame, plane, masks, scores=[1.0])
    with pytest.raises(ValueError, match="shape"):
        candidates_from_masks(frame, plane, [np.zeros((3, 3), bool)])
