"""The simulated tabletop: real pybullet physics and rendering at small resolution."""

import numpy as np
import pytest

from selfsup_perception.core.geometry.camera import depth_to_world_points
from selfsup_perception.core.types import quaternion_to_matrix
from selfsup_perception.sim.tabletop import (
    SEMANTIC_CLASSES,
    CameraConfig,
    SimConfig,
    TabletopSim,
    look_at,
    make_object_set,
)

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def sim():
    s = TabletopSim(SimConfig(seed=0, camera=CameraConfig(width=160, height=120)))
    yield s
    s.close()


def test_push_moves_the_pushed_object_and_leaves_the_others(sim):
    sim.reset_scene(seed=3, split="train", clutter="low")
    poses = sim.object_poses()
    target = sim.objects[0]
    pos = poses[target.instance_id][0]
    others = [o.instance_id for o in sim.objects[1:]]
    # push along -x through the object's centre, starting behind it
    start = pos + np.array([0.5 * target.model.size[0] + 0.04, 0, 0])
    ok, message = sim.execute_push(start, pos - np.array([0.05, 0, 0]))
    assert ok, message
    after = sim.object_poses()
    moved = np.linalg.norm(after[target.instance_id][0][:2] - pos[:2])
    assert moved > 0.03, f"pushed object moved only {moved:.3f} m"
    for i in others:
        assert np.linalg.norm(after[i][0] - poses[i][0]) < 0.005


def test_unreachable_push_is_refused(sim):
    sim.reset_scene(seed=1)
    ok, message = sim.execute_push((2.0, 0.0, 0.02), (2.1, 0.0, 0.02))
    assert not ok and "unreachable" in message


def test_depth_back_projects_onto_object_surfaces(sim):
    sim.reset_scene(seed=5, clutter="medium")
    frame, gt = sim.render_with_ground_truth()
    world = depth_to_world_points(frame.depth, frame.intrinsics, frame.camera_to_world)
    table = gt["semantic_mask"] == SEMANTIC_CLASSES.index("table")
    assert np.nanmax(np.abs(world[table][:, 2])) < 0.003  # table top is z = 0 (TinyRenderer depth quantisation)
    for obj in sim.objects:
        m = gt["instance_mask"] == obj.instance_id
        if m.sum() < 20:
            continue
        pos, orn = gt["object_poses"][obj.instance_id]
        local = (world[m] - pos) @ quaternion_to_matrix(orn)  # points in the object frame
        half = np.array(obj.model.size) / 2
        if obj.model.category == "capsule":
            half = np.array([half[0], half[1], half[1]])[[2, 1, 0]]  # capsule is rotated onto its side
        inside = np.all(np.abs(local) <= half + 0.006, axis=1)
        assert inside.mean() > 0.95, f"{obj.model.category}: {inside.mean():.2f} of points on the object"


def test_same_seed_same_images():
    cfg = SimConfig(seed=7, camera=CameraConfig(width=96, height=72))
    with TabletopSim(cfg) as a, TabletopSim(cfg) as b:
        a.reset_scene(11, clutter="medium")
        b.reset_scene(11, clutter="medium")
        np.testing.assert_array_equal(a.render().rgb, b.render().rgb)


def test_appearance_variant_is_pixel_aligned(sim):
    sim.reset_scene(seed=2)
    frame0, gt0 = sim.render_with_ground_truth()
    sim.set_appearance(TabletopSim.random_appearance(np.random.default_rng(4)))
    frame1, gt1 = sim.render_with_ground_truth()
    np.testing.assert_array_equal(gt0["instance_mask"], gt1["instance_mask"])
    assert np.abs(frame0.rgb.astype(int) - frame1.rgb.astype(int)).mean() > 10
    sim.set_appearance(type(sim.appearance)())


def test_camera_moves_around_a_static_scene(sim):
    sim.reset_scene(seed=2)
    eye = np.array([0.55, 0.6, 0.6])
    sim.set_camera_pose(look_at(eye, np.array([0.55, 0.0, 0.0])))
    frame = sim.render()
    np.testing.assert_allclose(frame.camera_to_world[:3, 3], eye)
    assert frame.camera_to_world[:3, 2] @ (np.array([0.55, 0, 0]) - eye) > 0  # optical axis towards the table
    sim.set_camera_pose(look_at(np.array(sim.config.camera.eye), np.array(sim.config.camera.target)))


def test_objects_leaving_the_table_are_reset(sim):
    sim.reset_scene(seed=4)
    body = sim.objects[0].body_id
    sim._p.resetBasePositionAndOrientation(body, [2.0, 2.0, -0.5], [0, 0, 0, 1], physicsClientId=sim._client)
    assert sim.reset_fallen_objects() == [sim.objects[0].instance_id]
    pos = sim.object_poses()[sim.objects[0].instance_id][0]
    assert 0.3 < pos[0] < 0.8 and abs(pos[1]) < 0.3 and pos[2] > 0


def test_train_and_test_object_sets_are_disjoint():
    train, test = make_object_set("train"), make_object_set("test")
    assert not {(m.size, m.rgb) for m in train} & {(m.size, m.rgb) for m in test}
    with pytest.raises(ValueError, match="split"):
        make_object_set("val")


def test_planned_grasp_moves_the_grasped_object_only(sim):
    from selfsup_perception.core.interaction import PlannerConfig, find_object_candidates, fit_table_plane, plan_grasp

    sim.reset_scene(seed=1)
    frame = sim.render()
    plane = fit_table_plane(frame, rng=np.random.default_rng(0))
    candidates = find_object_candidates(frame, plane)
    # the arm's base stands on the table at the origin: it is not an object to interact with
    assert len(candidates) == len(sim.objects)
    grasp = plan_grasp(frame, candidates, np.random.default_rng(1), PlannerConfig())
    before = sim.object_poses()
    ok, message = sim.execute_grasp(grasp.pick_point, grasp.place_point)
    assert ok and "grasped and moved object" in message, message
    after = sim.object_poses()
    moved = {i: np.linalg.norm(after[i][0][:2] - before[i][0][:2]) for i in before}
    held = int(message.rsplit(" ", 1)[1])
    assert moved[held] > 0.05
    assert np.linalg.norm(after[held][0][:2] - np.array(grasp.place_point[:2])) < 0.05  # released at the place
    assert all(d < 0.005 for i, d in moved.items() if i != held)
