"""The ROS-free transform buffer: chaining, interpolation, static links and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from selfsup_perception.core.geometry.transform_buffer import (
    ExtrapolationError,
    TransformBuffer,
    UnknownFrameError,
    matrix_from_translation_quaternion,
    quaternion_from_matrix,
    slerp,
)

SECOND = 1_000_000_000


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _pose(rotation: np.ndarray, translation) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = translation
    return matrix


def _random_pose(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return matrix_from_translation_quaternion(rng.normal(size=3), q)


def test_chain_through_tree_matches_matrix_products():
    rng = np.random.default_rng(0)
    T_world_base, T_base_link, T_link_cam, T_world_table = (_random_pose(rng) for _ in range(4))
    buffer = TransformBuffer()
    buffer.set_transform("world", "base", T_world_base, 5 * SECOND)
    buffer.set_transform("base", "link", T_base_link, 5 * SECOND)
    buffer.set_transform("link", "camera", T_link_cam, 5 * SECOND)
    buffer.set_transform("world", "table", T_world_table, 0, static=True)

    T_world_cam = T_world_base @ T_base_link @ T_link_cam
    np.testing.assert_allclose(buffer.lookup("world", "camera", 5 * SECOND), T_world_cam, atol=1e-12)
    # Across branches: camera seen from the table, and the inverse direction.
    T_table_cam = np.linalg.inv(T_world_table) @ T_world_cam
    np.testing.assert_allclose(buffer.lookup("table", "camera", 5 * SECOND), T_table_cam, atol=1e-12)
    np.testing.assert_allclose(buffer.lookup("camera", "table", 5 * SECOND), np.linalg.inv(T_table_cam), atol=1e-12)
    # Down the tree only (source is an ancestor of target).
    np.testing.assert_allclose(
        buffer.lookup("camera", "base", 5 * SECOND), np.linalg.inv(T_base_link @ T_link_cam), atol=1e-12
    )
    np.testing.assert_allclose(buffer.lookup("camera", "camera", 5 * SECOND), np.eye(4))
    assert buffer.frames() == ["base", "camera", "link", "table", "world"]
    assert buffer.parent_of("camera") == "link" and buffer.parent_of("world") is None


def test_interpolates_translation_linearly_and_rotation_by_slerp():
    buffer = TransformBuffer()
    buffer.set_transform("world", "camera", _pose(_rot_z(0.0), [0.0, 0.0, 1.0]), 10 * SECOND)
    buffer.set_transform("world", "camera", _pose(_rot_z(np.pi / 2), [2.0, 0.0, 1.0]), 12 * SECOND)

    quarter = buffer.lookup("world", "camera", 10 * SECOND + SECOND // 2)
    np.testing.assert_allclose(quarter[:3, 3], [0.5, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(quarter[:3, :3], _rot_z(np.pi / 8), atol=1e-12)  # constant angular speed
    middle = buffer.lookup("world", "camera", 11 * SECOND)
    np.testing.assert_allclose(middle[:3, :3], _rot_z(np.pi / 4), atol=1e-12)
    np.testing.assert_allclose(buffer.lookup("world", "camera", 12 * SECOND)[:3, 3], [2.0, 0.0, 1.0])
    # None: the latest available time.
    np.testing.assert_allclose(buffer.lookup("world", "camera", None)[:3, :3], _rot_z(np.pi / 2), atol=1e-12)


def test_slerp_takes_the_shorter_arc_and_keeps_unit_norm():
    q0 = quaternion_from_matrix(_rot_x(0.1))
    q1 = -quaternion_from_matrix(_rot_x(0.3))  # same rotation, opposite hemisphere
    q = slerp(q0, q1, 0.5)
    assert np.linalg.norm(q) == pytest.approx(1.0)
    np.testing.assert_allclose(matrix_from_translation_quaternion([0, 0, 0], q)[:3, :3], _rot_x(0.2), atol=1e-12)


def test_quaternion_round_trip_on_random_rotations_including_half_turns():
    rng = np.random.default_rng(1)
    rotations = [_random_pose(rng)[:3, :3] for _ in range(50)]
    rotations += [np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])]
    for rotation in rotations:
        back = matrix_from_translation_quaternion([0, 0, 0], quaternion_from_matrix(rotation))[:3, :3]
        np.testing.assert_allclose(back, rotation, atol=1e-12)


def test_chain_interpolates_each_link_at_the_same_stamp():
    buffer = TransformBuffer()
    buffer.set_transform("world", "base", _pose(np.eye(3), [0.0, 0.0, 0.0]), 0)
    buffer.set_transform("world", "base", _pose(np.eye(3), [1.0, 0.0, 0.0]), 2 * SECOND)
    buffer.set_transform("base", "camera", _pose(np.eye(3), [0.0, 0.0, 0.0]), SECOND)
    buffer.set_transform("base", "camera", _pose(np.eye(3), [0.0, 4.0, 0.0]), 3 * SECOND)
    np.testing.assert_allclose(buffer.lookup("world", "camera", 2 * SECOND)[:3, 3], [1.0, 2.0, 0.0])
    # Latest common time: min of the links' newest stamps (2 s).
    np.testing.assert_allclose(buffer.lookup("world", "camera", None)[:3, 3], [1.0, 2.0, 0.0])


def test_static_transforms_are_valid_at_all_times():
    buffer = TransformBuffer(cache_time_s=1.0)
    buffer.set_transform("base", "camera_optical", _pose(_rot_x(-np.pi / 2), [0.1, 0.0, 0.5]), 0, static=True)
    buffer.set_transform("world", "base", _pose(np.eye(3), [1.0, 0.0, 0.0]), 100 * SECOND)
    buffer.set_transform("world", "base", _pose(np.eye(3), [2.0, 0.0, 0.0]), 101 * SECOND)
    T = buffer.lookup("world", "camera_optical", 100 * SECOND + SECOND // 4)
    np.testing.assert_allclose(T[:3, 3], [1.35, 0.0, 0.5], atol=1e-12)
    # Static only: any stamp, including None and far in the future.
    np.testing.assert_allclose(buffer.lookup("base", "camera_optical", 10**15)[:3, 3], [0.1, 0.0, 0.5])
    np.testing.assert_allclose(buffer.lookup("base", "camera_optical", None)[:3, 3], [0.1, 0.0, 0.5])


def test_cache_time_prunes_old_history():
    buffer = TransformBuffer(cache_time_s=2.0)
    for second in range(10):
        buffer.set_transform("world", "camera", _pose(np.eye(3), [float(second), 0.0, 0.0]), second * SECOND)
    np.testing.assert_allclose(buffer.lookup("world", "camera", 7 * SECOND + SECOND // 2)[:3, 3], [7.5, 0.0, 0.0])
    with pytest.raises(ExtrapolationError, match="before the oldest"):
        buffer.lookup("world", "camera", 5 * SECOND)


def test_out_of_order_inserts_and_same_stamp_overwrite():
    buffer = TransformBuffer()
    buffer.set_transform("world", "camera", _pose(np.eye(3), [2.0, 0.0, 0.0]), 2 * SECOND)
    buffer.set_transform("world", "camera", _pose(np.eye(3), [0.0, 0.0, 0.0]), 0)
    buffer.set_transform("world", "camera", _pose(np.eye(3), [9.0, 0.0, 0.0]), SECOND)
    buffer.set_transform("world", "camera", _pose(np.eye(3), [1.0, 0.0, 0.0]), SECOND)  # replaces 9.0
    np.testing.assert_allclose(buffer.lookup("world", "camera", SECOND // 2)[:3, 3], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(buffer.lookup("world", "camera", 3 * SECOND // 2)[:3, 3], [1.5, 0.0, 0.0])


def test_leading_slash_is_ignored_like_tf2():
    buffer = TransformBuffer()
    buffer.set_transform("/world", "/camera", _pose(np.eye(3), [1.0, 2.0, 3.0]), 0, static=True)
    np.testing.assert_allclose(buffer.lookup("world", "/camera", 0)[:3, 3], [1.0, 2.0, 3.0])


def test_unknown_frame_error_names_the_frame_and_the_known_frames():
    buffer = TransformBuffer()
    buffer.set_transform("world", "base", np.eye(4), 0, static=True)
    with pytest.raises(UnknownFrameError, match=r"frame 'camera_link' does not exist \(known frames: base, world\)"):
        buffer.lookup("world", "camera_link", 0)
    assert issubclass(UnknownFrameError, LookupError)
    assert not buffer.can_transform("world", "camera_link", 0)


def test_unconnected_trees_are_an_unknown_frame_error():
    buffer = TransformBuffer()
    buffer.set_transform("world", "base", np.eye(4), 0, static=True)
    buffer.set_transform("odom", "camera", np.eye(4), 0, static=True)
    with pytest.raises(UnknownFrameError, match="'world' and 'camera' are not connected: 'camera' has root 'odom'"):
        buffer.lookup("world", "camera", 0)


def test_extrapolation_error_names_frames_stamp_and_available_range():
    buffer = TransformBuffer()
    buffer.set_transform("world", "camera", np.eye(4), 10 * SECOND)
    buffer.set_transform("world", "camera", np.eye(4), 11 * SECOND)
    with pytest.raises(ExtrapolationError) as error:
        buffer.lookup("world", "camera", 12 * SECOND)
    message = str(error.value)
    assert "'world' -> 'camera'" in message
    assert "12000000000 ns (12.000000 s)" in message
    assert "after the newest" in message
    assert "available 10000000000 ns (10.000000 s) .. 11000000000 ns (11.000000 s)" in message
    assert issubclass(ExtrapolationError, LookupError)


def test_latest_common_time_error_when_histories_do_not_overlap():
    buffer = TransformBuffer()
    buffer.set_transform("world", "base", np.eye(4), 0)
    buffer.set_transform("base", "camera", np.eye(4), 5 * SECOND)
    with pytest.raises(ExtrapolationError, match="histories do not overlap"):
        buffer.lookup("world", "camera", None)


def test_bad_transforms_are_refused():
    buffer = TransformBuffer()
    with pytest.raises(ValueError, match="must be 4x4"):
        buffer.set_transform("world", "camera", np.eye(3), 0)
    with pytest.raises(ValueError, match="not a proper rotation"):
        buffer.set_transform("world", "camera", np.diag([1.0, 1.0, -1.0, 1.0]), 0)
    with pytest.raises(ValueError, match="non-finite"):
        buffer.set_transform("world", "camera", np.full((4, 4), np.nan), 0)
    with pytest.raises(ValueError, match="to itself"):
        buffer.set_transform("world", "world", np.eye(4), 0)
    buffer.set_transform("world", "base", np.eye(4), 0)
    with pytest.raises(ValueError, match="would make a loop"):
        buffer.set_transform("base", "world", np.eye(4), 0)
    with pytest.raises(ValueError, match="cache_time_s must be positive"):
        TransformBuffer(cache_time_s=0.0)
