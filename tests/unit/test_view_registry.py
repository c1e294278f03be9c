"""ViewRegistry: duplicate filter, IoU-window pair selection, crash-safe storage, correspondences (no ROS)."""

import numpy as np
from view_factory import K, plane_view

from selfsup_perception.core.registration import view_overlap
from selfsup_perception.core.registration.pair_store import PairStore
from selfsup_perception.core.registration.view_registry import (
    ViewRegistry,
    ViewRegistryConfig,
    pose_matches,
    subsample_correspondences,
)

CONFIG = ViewRegistryConfig(overlap_stride=1, region_size=(16, 12))


def test_pairs_are_the_views_whose_overlap_lies_in_the_window(tmp_path):
    registry = ViewRegistry(PairStore(tmp_path), CONFIG)
    first = registry.add_view(plane_view(0.0))
    assert first.view_id is not None and first.pairs == [] and first.compared == 0
    near = registry.add_view(plane_view(0.2))  # overlap ~0.6: a pair
    far = registry.add_view(plane_view(1.5))  # no overlap with either
    expected = view_overlap(np.ones((24, 32), np.float32), K, plane_view(0.0).camera_to_world,
                            np.ones((24, 32), np.float32), K, plane_view(0.2).camera_to_world, stride=1)
    assert [p.view_a for p in near.pairs] == [first.view_id]
    assert abs(near.pairs[0].iou - expected) < 0.05 and 0.3 <= near.pairs[0].iou <= 0.9
    assert far.pairs == []
    assert {p.pair_id for p in PairStore(tmp_path).pairs()} == {near.pairs[0].pair_id}


def test_a_camera_that_did_not_move_gives_a_duplicate_not_a_view(tmp_path):
    registry = ViewRegistry(PairStore(tmp_path), CONFIG)
    first = registry.add_view(plane_view(0.0))
    again = registry.add_view(plane_view(0.001))
    assert again.is_duplicate and again.duplicate_of == first.view_id and again.duplicate_iou > 0.97
    assert len(registry) == 1 and PairStore(tmp_path).registered_view_ids() == [first.view_id]


def test_a_restarted_registry_knows_the_stored_views(tmp_path):
    registry = ViewRegistry(PairStore(tmp_path), CONFIG)
    registry.add_view(plane_view(0.0))
    registry.add_view(plane_view(0.2))
    restarted = ViewRegistry(PairStore(tmp_path), CONFIG)
    assert restarted.load_registered() == [] and len(restarted) == 2
    assert restarted.add_view(plane_view(0.0)).is_duplicate  # compared against what is on disk


def test_pair_correspondences_are_subsampled_and_consistent(tmp_path):
    registry = ViewRegistry(PairStore(tmp_path), ViewRegistryConfig(overlap_stride=1, max_correspondences=50,
                                                                    compute_regions=False))
    registry.add_view(plane_view(0.0))
    frame_b = plane_view(0.2)
    pair = registry.add_view(frame_b).pairs[0]
    frame_a, pa, pb = registry.pair_correspondences(pair, frame_b, np.random.default_rng(0))
    assert len(pa) == len(pb) == 50
    # a plane 1 m away, cameras 0.2 m apart along x: u_b = u_a - 0.2 * fx
    np.testing.assert_allclose(pb[:, 0], pa[:, 0] - 0.2 * K.fx, atol=0.51)
    np.testing.assert_allclose(pb[:, 1], pa[:, 1], atol=0.51)


def test_subsample_keeps_order_and_pose_check():
    a, b = np.arange(20).reshape(10, 2), np.arange(20).reshape(10, 2) + 100
    sa, sb = subsample_correspondences(a, b, 4, np.random.default_rng(1))
    assert len(sa) == 4 and np.all(np.diff(sa[:, 0]) > 0) and np.array_equal(sb - 100, sa)
    frame = plane_view(0.0)
    moved = frame.camera_to_world.copy()
    moved[0, 3] += 0.004
    assert pose_matches(frame, moved, 0.005) and not pose_matches(frame, moved, 0.003)
