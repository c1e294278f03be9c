"""Registration node over real DDS with the simulated world and the camera capture node (160x120)."""

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import wait_for, wait_future
from std_srvs.srv import Trigger

from selfsup_perception.core.geometry.camera import depth_to_world_points
from selfsup_perception.core.registration import view_overlap
from selfsup_perception.core.registration.pair_store import PairStore
from selfsup_perception.msg import RegisteredViewPair
from selfsup_perception.nodes.camera_capture_node import CameraCaptureNode
from selfsup_perception.nodes.registration_node import RegistrationNode
from selfsup_perception.nodes.sim_world_node import SimWorldNode
from selfsup_perception.ros.conversions import view_msg_to_frame
from selfsup_perception.sim.multiview import ring_camera_poses

pytestmark = [pytest.mark.ros, pytest.mark.sim]
SMALL = [Parameter("width", value=160), Parameter("height", value=120), Parameter("publish_rate_hz", value=10.0)]


def _world_points(frame, pixels):
    """World points of integer (u, v) pixels of a frame, from its depth and pose."""
    pts = depth_to_world_points(frame.depth, frame.intrinsics, frame.camera_to_world)  # (H, W, 3)
    return pts[pixels[:, 1], pixels[:, 0]]


def test_collection_in_sim_publishes_geometrically_correct_pairs(spinner, tmp_path):
    spinner.add(SimWorldNode(parameter_overrides=SMALL))
    spinner.add(CameraCaptureNode())
    reg = spinner.add(RegistrationNode(parameter_overrides=[
        Parameter("dataset_dir", value=str(tmp_path / "reg")), Parameter("drive_sim_camera", value=True),
        Parameter("views_per_collection", value=4), Parameter("ring_azimuth_deg", value=[-40.0, 40.0]),
        Parameter("max_correspondences", value=2000)]))
    client = spinner.add(rclpy.create_node("registration_client"))
    received = []
    client.create_subscription(RegisteredViewPair, "registration/view_pairs", received.append,
                               QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE))
    collect = client.create_client(Trigger, "registration/collect")
    assert collect.wait_for_service(timeout_sec=10)
    res = wait_future(collect.call_async(Trigger.Request()), 10)
    assert res.success and res.message == "queued collection 1 of 4 views"
    assert wait_for(lambda: reg.stats["collections"] == 1, 25), reg.stats
    assert reg.stats["views"] == 4 and reg.stats["failed_views"] == 0, (reg.stats, reg.last_error)
    assert wait_for(lambda: len(received) == reg.stats["pairs"], 5)
    assert len(received) >= 3  # a narrow arc: most of the 6 pairs overlap by 0.3-0.9

    commanded = ring_camera_poses(reg.params.ring_config(4), np.random.default_rng([0, 1]))
    for msg in received:
        assert 0.3 <= msg.overlap_iou <= 0.9
        fa, fb = view_msg_to_frame(msg.view_a), view_msg_to_frame(msg.view_b)
        # the views were taken where the node drove the camera
        for f in (fa, fb):
            assert min(np.linalg.norm(f.camera_to_world[:3, 3] - t[:3, 3]) for t in commanded) < 0.005
        # the published IoU is the view overlap of the published views
        iou = view_overlap(fa.depth, fa.intrinsics, fa.camera_to_world, fb.depth, fb.intrinsics, fb.camera_to_world,
                           stride=4)
        assert msg.overlap_iou == pytest.approx(iou, abs=1e-6)
        # correspondences: subsampled to the cap, and the same world point seen from both views
        n = msg.num_correspondences
        assert 100 <= n <= 2000 and len(msg.pixels_a) == len(msg.pixels_b) == 2 * n
        pa = np.asarray(msg.pixels_a, dtype=np.int64).reshape(n, 2)
        pb = np.rint(np.asarray(msg.pixels_b, dtype=np.float64).reshape(n, 2)).astype(np.int64)
        err = np.linalg.norm(_world_points(fa, pa) - _world_points(fb, pb), axis=1)
        assert np.median(err) < 0.005 and np.quantile(err, 0.95) < 0.02, (np.median(err), np.quantile(err, 0.95))
        # a wrong match (pixels of A against a shuffled B) would be far off: the check has teeth
        shuffled = np.linalg.norm(_world_points(fa, pa) - _world_points(fb, pb[::-1]), axis=1)
        assert np.median(shuffled) > 0.05

    store = PairStore(tmp_path / "reg")
    assert store.registered_view_ids() == [f"view_{i:06d}" for i in range(1, 5)]
    assert sorted(p.pair_id for p in store.pairs()) == sorted(m.pair_id for m in received)
    frame, regions = store.read_view("view_000001", with_regions=True)
    assert frame.shape == (120, 160) and regions.shape == (120, 160) and 5 <= regions.max() + 1 <= 200


def test_failed_captures_give_a_clear_error_and_the_node_keeps_serving(spinner, tmp_path):
    spinner.add(CameraCaptureNode(parameter_overrides=[Parameter("rgb_topic", value="nowhere/rgb")]))
    reg = spinner.add(RegistrationNode(parameter_overrides=[
        Parameter("dataset_dir", value=str(tmp_path / "reg")), Parameter("views_per_collection", value=2),
        Parameter("capture_timeout_s", value=0.5)]))
    client = spinner.add(rclpy.create_node("registration_client"))
    collect = client.create_client(Trigger, "registration/collect")
    assert collect.wait_for_service(timeout_sec=10)
    assert wait_future(collect.call_async(Trigger.Request()), 10).success
    assert wait_for(lambda: reg.stats["collections"] == 1, 15), reg.stats
    assert reg.stats["failed_views"] == 2 and reg.stats["views"] == 0
    assert "view 2/2 of collection 1: capture_view failed: no synchronised rgb/depth/camera_info within 0.5 s" \
        in reg.last_error and "nowhere/rgb" in reg.last_error
    # still serving, and the next answer carries the error
    res = wait_future(collect.call_async(Trigger.Request()), 10)
    assert res.success and res.message.startswith("queued collection 2 of 2 views (last error: view 2/2")
    # an invalid parameter change is refused with the reason; the node keeps its value
    result = reg.set_parameters([Parameter("iou_low", value=0.95)])[0]
    assert not result.successful and "iou_low <= iou_high" in result.reason
    assert reg.get_parameter("iou_low").value == 0.3
    assert wait_for(lambda: reg.stats["collections"] == 2, 15)
    assert PairStore(tmp_path / "reg").view_ids() == []


def test_views_stored_before_a_crash_are_registered_on_start(spinner, tmp_path):
    from selfsup_perception.sim.multiview import MultiViewConfig, capture_scene

    views = capture_scene(0, clutter="low", config=MultiViewConfig(num_views=2, azimuth_deg=(-20.0, 20.0)))
    store = PairStore(tmp_path / "reg")
    store.write_view("view_000001", views[0].frame)
    store.register_view("view_000001")
    store.write_view("view_000002", views[1].frame)  # crashed before its pairs were indexed
    reg = spinner.add(RegistrationNode(parameter_overrides=[Parameter("dataset_dir", value=str(tmp_path / "reg"))]))
    # (the pair is published too, possibly before any subscriber has been discovered: check the store)
    assert wait_for(lambda: reg.stats["views"] == 1 and reg.idle(), 10), reg.last_error
    assert reg.stats["pairs"] == 1 and reg.last_error == ""
    reopened = PairStore(tmp_path / "reg")
    assert reopened.unregistered_view_ids() == []
    [pair] = reopened.pairs()
    assert (pair.view_a, pair.view_b) == ("view_000001", "view_000002") and 0.3 <= pair.iou <= 0.9
