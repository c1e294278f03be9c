"""Standard robot bags without ROS: raw access (truncated MCAP, missing metadata), topic detection,
colour/depth pairing, TF poses, decoding and the errors a user acts on. Bags are real rosbag2 bags written
with ``rosbags`` (the writer of cli/record_sim_bag.py), read back through the same code as a robot's bag."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from robot_bag_factory import MS, T0, K, expected_pose, images, write_robot_bag

from selfsup_perception.cli.record_sim_bag import OPTICAL_FRAME, StandardBagWriter
from selfsup_perception.core.image_conversion import depth_to_encoding
from selfsup_perception.core.types import CameraIntrinsics
from selfsup_perception.ros.bag_files import BagReadError, RawBag, scan_mcap
from selfsup_perception.ros.robot_bag import (
    MissingFrameError,
    NoUsableTopicError,
    RobotBagOptions,
    detect_streams,
    read_views,
)

@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("colour,depth_encoding,compressed", [
    ("rgb8", "16UC1", False), ("bgr8", "32FC1", False), ("bgra8", "16UC1", False), ("rgb8", "32FC1", True)])
def test_views_have_decoded_images_and_interpolated_tf_poses(tmp_path, storage, colour, depth_encoding, compressed):
    bag = RawBag(write_robot_bag(tmp_path / "bag", storage, colour=colour, depth_encoding=depth_encoding,
                                 compressed=compressed))
    streams = detect_streams(bag)
    assert streams.depth_topic == "/cam/depth/image_raw" and streams.info_topic == "/cam/color/camera_info"
    assert set(streams.tf_topics) == {"/tf", "/tf_static"}
    results = list(read_views(bag, streams))
    assert len(results) == 5 and all(r.frame is not None for r in results), [r.reason for r in results]
    for i, r in enumerate(results):
        rgb, depth = images(i)
        np.testing.assert_array_equal(r.frame.rgb, rgb)
        tol = 5e-4 if depth_encoding == "16UC1" else 0.0  # millimetres
        np.testing.assert_allclose(r.frame.depth, depth, atol=tol + 1e-7, equal_nan=True)
        assert r.frame.intrinsics == K and r.frame.frame_id == OPTICAL_FRAME
        # the image stamps fall between the 10 Hz TF stamps: the pose is interpolated
        np.testing.assert_allclose(r.frame.camera_to_world, expected_pose(r.stamp_ns), atol=1e-9)


def test_mono_colour_becomes_grey_rgb(tmp_path):
    bag = RawBag(write_robot_bag(tmp_path / "bag", colour="mono8", n=2))
    frame = next(read_views(bag, detect_streams(bag))).frame
    np.testing.assert_array_equal(frame.rgb, np.repeat(images(0)[0][..., :1], 3, axis=2))


def test_compressed_depth_png_is_decoded(tmp_path):
    w = StandardBagWriter(tmp_path / "bag", "mcap")
    w.write("/tf_static", "tf2_msgs/msg/TFMessage", w.tf([("world", OPTICAL_FRAME, np.eye(4))], T0), T0)
    rgb, depth = images(0)
    mm = depth_to_encoding(depth, "16UC1")
    ok, png = cv2.imencode(".png", mm)
    data = struct.pack("<iff", 0, 0.0, 0.0) + png.tobytes()  # compressed_depth_image_transport's ConfigHeader
    w.write("/cam/color/image_raw", "sensor_msgs/msg/Image", w.image(rgb, "rgb8", T0, OPTICAL_FRAME), T0)
    w.write("/cam/depth/image_raw/compressedDepth", "sensor_msgs/msg/CompressedImage",
            w.types["sensor_msgs/msg/CompressedImage"](header=w.header(T0, OPTICAL_FRAME),
                                                       format="16UC1; compressedDepth png",
                                                       data=np.frombuffer(data, np.uint8)), T0)
    w.write("/cam/color/camera_info", "sensor_msgs/msg/CameraInfo", w.camera_info(K, T0, OPTICAL_FRAME), T0)
    w.close()
    bag = RawBag(tmp_path / "bag")
    streams = detect_streams(bag)
    assert streams.depth_topic == "/cam/depth/image_raw/compressedDepth"
    frame = next(read_views(bag, streams)).frame
    np.testing.assert_allclose(frame.depth, depth, atol=5e-4, equal_nan=True)


def test_pairing_tolerance_skips_colour_without_depth_with_its_reason(tmp_path):
    bag = RawBag(write_robot_bag(tmp_path / "bag", depth_offset_ns=30 * MS))
    results = list(read_views(bag, detect_streams(bag), RobotBagOptions(pair_tolerance_s=0.02)))
    assert len(results) == 5 and all(r.frame is None for r in results)
    assert all(r.reason == "no depth image within 20 ms" for r in results)
    results = list(read_views(bag, detect_streams(bag), RobotBagOptions(pair_tolerance_s=0.05)))
    assert all(r.frame is not None for r in results)


def test_one_bad_message_is_skipped_with_its_reason_and_reading_goes_on(tmp_path):
    bag = RawBag(write_robot_bag(tmp_path / "bag", bad_colour_at=2))
    results = list(read_views(bag, detect_streams(bag)))
    good = [r for r in results if r.frame is not None]
    bad = [r for r in results if r.frame is None]
    assert len(good) == 4 and len(bad) == 1
    assert bad[0].reason.startswith("undecodable image:")


def test_views_outside_the_tf_history_are_skipped_with_the_range(tmp_path):
    bag = RawBag(write_robot_bag(tmp_path / "bag", n=9))  # images run past the last TF stamp (2.4 s)
    results = list(read_views(bag, detect_streams(bag)))
    late = [r for r in results if r.frame is None]
    assert late and all(r.reason.startswith("no camera pose:") and "after the newest" in r.reason for r in late)
    assert all(r.stamp_ns > T0 + 2400 * MS for r in late)


def test_no_usable_topic_error_lists_what_was_found_and_what_is_needed(tmp_path):
    bag = RawBag(write_robot_bag(tmp_path / "bag", with_depth=False, with_tf=False))
    with pytest.raises(NoUsableTopicError) as err:
        detect_streams(bag)
    text = str(err.value)
    assert "no depth image topic" in text and "no tf2_msgs/msg/TFMessage topic" in text
    assert "/cam/color/image_raw [sensor_msgs/msg/Image] x5" in text  # what the bag has
    assert "Needed: a colour image" in text and "16UC1|32FC1" in text


def test_ambiguous_colour_topics_ask_for_an_option_and_the_option_resolves_them(tmp_path):
    bag = RawBag(write_robot_bag(tmp_path / "bag", extra_colour_topic=True))
    with pytest.raises(NoUsableTopicError, match=r"several colour image topics \(/cam/color/image_raw, "
                                                 r"/cam2/color/image_raw\): name one with --color-topic"):
        detect_streams(bag)
    streams = detect_streams(bag, RobotBagOptions(color_topic="/cam/color/image_raw"))
    assert streams.color_topic == "/cam/color/image_raw"
    with pytest.raises(NoUsableTopicError, match="colour image topic '/nope' is not in bag"):
        detect_streams(bag, RobotBagOptions(color_topic="/nope"))


def test_missing_camera_frame_is_a_clear_error(tmp_path):
    bag = RawBag(write_robot_bag(tmp_path / "bag"))
    with pytest.raises(MissingFrameError, match=r"camera frame 'head_camera' never appears in the bag's TF .*"
                                                r"TF frames: base_link, camera_color_optical_frame, camera_link, "
                                                r"hand, world"):
        list(read_views(bag, detect_streams(bag), RobotBagOptions(camera_frame="head_camera")))


# ============================================================================ raw bag access
def _messages(bag: RawBag) -> list[tuple[str, int, bytes]]:
    return [(t, s, raw) for t, _ty, s, raw in bag.messages(bag.topics)]


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_truncated_mcap_recovers_every_complete_message_before_the_cut(tmp_path, compression):
    w = StandardBagWriter(tmp_path / "bag", "mcap", zstd=compression == "zstd")
    rng = np.random.default_rng(0)
    for i in range(30):  # ~90 kB each: several 1 MB chunks
        img = cv2.GaussianBlur(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8), (3, 3), 0)
        w.write("/camera/image", "sensor_msgs/msg/Image", w.image(img, "rgb8", T0 + i * MS, "cam"), T0 + i * MS)
    w.close()
    intact = _messages(RawBag(tmp_path / "bag"))
    assert len(intact) == 30
    mcap = next((tmp_path / "bag").glob("*.mcap"))
    data = mcap.read_bytes()

    for fraction in (0.5, 0.8):
        cut = tmp_path / f"cut{fraction}"
        cut.mkdir()
        (cut / mcap.name).write_bytes(data[: int(fraction * len(data))])
        (cut / "metadata.yaml").write_text((tmp_path / "bag" / "metadata.yaml").read_text())
        bag = RawBag(cut)
        got = _messages(bag)
        assert 0 < len(got) < 30
        assert got == intact[: len(got)]  # exactly the messages before the cut, complete and in order
        # every message whose record lies wholly before the cut is recovered (the next one is cut)
        assert len(got) >= int(fraction * 30) - 2
        (trunc,) = bag.truncation
        assert trunc.recovered_messages == len(got)
        assert trunc.stopped_at_byte <= int(fraction * len(data))
        text = trunc.describe()
        assert f"recovered {len(got)} complete message(s) before the cut at byte" in text
        assert "the file ends inside the chunk that starts at byte" in text
    # only the footer and summary lost (killed while closing), and no metadata.yaml: everything is there
    no_footer = tmp_path / "no_footer"
    no_footer.mkdir()
    summary_start = struct.unpack_from("<Q", data, len(data) - 8 - 20)[0]
    (no_footer / mcap.name).write_bytes(data[:summary_start])
    bag = RawBag(no_footer)
    assert _messages(bag) == intact
    assert bag.truncation[0].recovered_messages == 30 and "no footer" in bag.truncation[0].reason


def test_scan_of_an_intact_mcap_reports_no_truncation(tmp_path):
    write_robot_bag(tmp_path / "bag", n=2)
    scan = scan_mcap(next((tmp_path / "bag").glob("*.mcap")))
    assert scan.truncation is None
    assert {c.topic: c.count for c in scan.channels.values()}["/cam/color/image_raw"] == 2


def test_a_single_mcap_file_without_metadata_is_read(tmp_path):
    write_robot_bag(tmp_path / "bag", n=3)
    mcap = next((tmp_path / "bag").glob("*.mcap"))
    bag = RawBag(mcap)
    assert bag.topics["/cam/color/image_raw"].count == 3 and not bag.truncation
    assert len(list(read_views(bag, detect_streams(bag)))) == 3


def test_sqlite_folder_without_metadata_names_the_missing_file(tmp_path):
    write_robot_bag(tmp_path / "bag", storage="sqlite3", n=1)
    (tmp_path / "bag" / "metadata.yaml").unlink()
    with pytest.raises(BagReadError, match=f"{tmp_path / 'bag' / 'metadata.yaml'} is missing: a sqlite3 bag cannot "
                                           f"be read without it"):
        RawBag(tmp_path / "bag")


def test_asking_for_no_topic_reads_nothing_and_other_bags_are_refused(tmp_path):
    bag = RawBag(write_robot_bag(tmp_path / "bag", n=2))
    assert list(bag.messages([])) == [] and list(bag.messages(["/not_there"])) == []
    (tmp_path / "old.bag").write_bytes(b"#ROSBAG V2.0\n")
    with pytest.raises(BagReadError, match="is a ROS 1 bag; convert it to rosbag2 first"):
        RawBag(tmp_path / "old.bag")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagReadError, match="is not a rosbag2 bag: no metadata.yaml, .mcap or .db3"):
        RawBag(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no bag at"):
        RawBag(tmp_path / "missing")


def test_replay_of_a_truncated_robot_bag_stores_the_views_before_the_cut_and_says_so(tmp_path, capsys):
    from selfsup_perception.cli.replay_bag import main

    write_robot_bag(tmp_path / "bag", n=6)
    mcap = next((tmp_path / "bag").glob("*.mcap"))
    data = mcap.read_bytes()
    cut = tmp_path / "crashed"
    cut.mkdir()
    (cut / mcap.name).write_bytes(data[: int(0.7 * len(data))])  # killed while recording: no metadata.yaml either
    assert main([str(cut), "--out", str(tmp_path / "views"), "--iou-low", "0.0"]) == 0
    line = capsys.readouterr().out.strip()
    images = int(line.split("(views): ")[1].split(" colour images")[0])
    assert 1 <= images < 6
    assert f"[{cut / mcap.name} is truncated (the file ends inside the chunk that starts at byte" in line
    assert "complete message(s) before the cut at byte" in line
    assert sorted(p.name for p in cut.iterdir()) == [mcap.name]  # nothing written next to the bag


def test_an_mcap_bag_with_metadata_of_a_newer_version_is_read_from_its_files(tmp_path):
    write_robot_bag(tmp_path / "bag", n=2)
    meta = tmp_path / "bag" / "metadata.yaml"
    meta.write_text(meta.read_text().replace("version: 9", "version: 11"))
    bag = RawBag(tmp_path / "bag")
    assert bag.topics["/cam/color/image_raw"].count == 2 and not bag.truncation
    assert len([r for r in read_views(bag, detect_streams(bag)) if r.frame is not None]) == 2


REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "ucn_tabletop"


@pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real RGB-D frames not found at {REALDATA}")
def test_real_rgbd_frames_survive_a_bag_round_trip_and_a_repeated_view_is_a_duplicate(tmp_path, capsys):
    """Real 640x480 RealSense-class frames (0 = no depth) as a robot would record them: bgr8 colour,
    16UC1 depth, the real calibration, a static camera in TF; the last image repeats the first."""
    import json

    from selfsup_perception.cli.replay_bag import main
    from selfsup_perception.core.registration.pair_store import PairStore

    params = json.loads((REALDATA / "camera_params.json").read_text())
    k = CameraIntrinsics(params["fx"], params["fy"], params["x_offset"], params["y_offset"], 640, 480)
    frames = [0, 1, 2, 0]
    w = StandardBagWriter(tmp_path / "bag", "sqlite3")
    w.write("/tf_static", "tf2_msgs/msg/TFMessage", w.tf([("base_link", OPTICAL_FRAME, np.eye(4))], T0), T0)
    for i, n in enumerate(frames):
        t = T0 + i * 500 * MS
        bgr = cv2.imread(str(REALDATA / f"{n:06d}-color.png"), cv2.IMREAD_COLOR)
        mm = cv2.imread(str(REALDATA / f"{n:06d}-depth.png"), cv2.IMREAD_UNCHANGED)
        w.write("/camera/color/image_raw", "sensor_msgs/msg/Image", w.image(bgr, "bgr8", t, OPTICAL_FRAME), t)
        w.write("/camera/depth/image_rect_raw", "sensor_msgs/msg/Image", w.image(mm, "16UC1", t, OPTICAL_FRAME), t)
        w.write("/camera/color/camera_info", "sensor_msgs/msg/CameraInfo", w.camera_info(k, t, OPTICAL_FRAME), t)
    w.close()
    assert main([str(tmp_path / "bag"), "--out", str(tmp_path / "views")]) == 0
    line = capsys.readouterr().out
    assert "4 colour images, 3 views stored, 1 duplicates, 0 skipped" in line
    assert "poses of 'camera_color_optical_frame' in 'base_link'" in line
    store = PairStore(tmp_path / "views")
    for view_id, n in zip(store.view_ids(), frames):
        view = store.read_view(view_id)
        mm = cv2.imread(str(REALDATA / f"{n:06d}-depth.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(view.rgb, cv2.imread(str(REALDATA / f"{n:06d}-color.png"))[..., ::-1])
        assert np.array_equal(np.isnan(view.depth), mm == 0)  # no reading stays no reading
        np.testing.assert_allclose(view.depth[mm > 0], mm[mm > 0] / 1000.0, atol=1e-6)
        assert view.intrinsics == k


def test_min_interval_thins_a_dense_image_stream(tmp_path, capsys):
    from selfsup_perception.cli.replay_bag import main

    write_robot_bag(tmp_path / "bag", n=6)  # images every 333 ms
    assert main([str(tmp_path / "bag"), "--out", str(tmp_path / "views"), "--min-interval-ms", "500",
                 "--iou-low", "0.0"]) == 0
    line = capsys.readouterr().out
    assert "6 colour images, 3 views stored, 0 duplicates, 3 skipped (within --min-interval-ms x3)" in line
