"""rosbag2 recording and replay (MCAP and sqlite3) of interaction samples, with rclpy's serializer."""

import numpy as np
import pytest
from sample_factory import make_sample

from selfsup_perception.msg import InteractionSample
from selfsup_perception.ros.bag_io import BagReadError, BagRecorder, read_bag
from selfsup_perception.ros.conversions import sample_from_msg, sample_to_msg

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_samples_round_trip_through_a_bag(tmp_path, storage):
    samples = [make_sample(f"s{i}", seed=i) for i in range(3)]
    with BagRecorder(tmp_path / "bag", storage=storage) as bag:
        for i, s in enumerate(samples):
            bag.write("interaction/samples", sample_to_msg(s, depth_encoding="16UC1"), stamp_ns=1000 + i)
    assert (tmp_path / "bag" / "metadata.yaml").exists()
    back = list(read_bag(tmp_path / "bag", InteractionSample))
    assert [t for t, _ in back] == [1000, 1001, 1002]
    for s, (_, msg) in zip(samples, back):
        r = sample_from_msg(msg)
        assert r.sample_id == s.sample_id
        np.testing.assert_array_equal(r.before.rgb, s.before.rgb)
        # 16UC1 stores millimetres: metres round-trip to 1 mm, NaN to NaN
        np.testing.assert_allclose(r.after.depth, s.after.depth, atol=5e-4, equal_nan=True)


def test_corrupt_or_missing_bag_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no bag"):
        list(read_bag(tmp_path / "missing", InteractionSample))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9, storage_identifier: mcap")
    with pytest.raises(BagReadError, match="cannot read bag"):
        list(read_bag(bad, InteractionSample))


def test_replay_a_bag_into_a_labeled_dataset(tmp_path):
    from selfsup_perception.cli.replay_bag import main, replay
    from selfsup_perception.core.dataset.sample_store import SampleStore

    with BagRecorder(tmp_path / "bag") as bag:
        for i in range(2):
            bag.write("interaction/samples", sample_to_msg(make_sample(f"r{i}", seed=i)), stamp_ns=10 + i)
        bad = sample_to_msg(make_sample("bad", seed=5))
        bad.after.rgb.encoding = "yuv422"
        bag.write("interaction/samples", bad, stamp_ns=20)
    counts = replay(str(tmp_path / "bag"), str(tmp_path / "ds"), "frame_difference")
    assert counts == {"read": 3, "stored": 2, "skipped_existing": 0, "bad": 1, "labeled": 2,
                      "kept": counts["kept"], "unlabelable": 0}
    store = SampleStore(tmp_path / "ds")
    assert sorted(store.sample_ids()) == ["r0", "r1"] and sorted(store.labeled_ids("frame_difference")) == ["r0", "r1"]
    again = replay(str(tmp_path / "bag"), str(tmp_path / "ds"), "frame_difference")  # resumable: nothing twice
    assert again["stored"] == 0 and again["skipped_existing"] == 2 and again["labeled"] == 0
    assert main(["--bag", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2


# ============================================================================ errors a user can act on
def _table_sample(sample_id: str, seed: int):
    """A sample the flow labeler can label: a flat table in view, nothing moved (a negative example)."""
    s = make_sample(sample_id, h=48, w=64, seed=seed)
    for frame in (s.before, s.after):
        frame.depth = np.full((48, 64), 0.8, dtype=np.float32)
        frame.intrinsics = type(frame.intrinsics)(60.0, 60.0, 31.5, 23.5, 64, 48)
    s.after.rgb = s.before.rgb.copy()
    s.ground_truth = None
    return s


def _interaction_bag(path, samples, storage="mcap"):
    with BagRecorder(path, storage=storage) as bag:
        for i, s in enumerate(samples):
            bag.write("interaction/samples", sample_to_msg(s), stamp_ns=100 + i)
    return path


def test_a_sample_the_labeler_cannot_label_is_skipped_with_its_reason(tmp_path, capsys):
    from selfsup_perception.cli.replay_bag import main
    from selfsup_perception.core.dataset.sample_store import SampleStore

    no_table = make_sample("no_table", h=48, w=64, seed=1)  # random depth: no table plane in view
    bag = _interaction_bag(tmp_path / "bag", [_table_sample("t0", 0), no_table, _table_sample("t1", 2)])
    assert main([str(bag), "--out", str(tmp_path / "ds"), "--labeler", "flow"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"replayed {bag} (interactions): 3 samples read, 3 stored")
    assert "2 labeled (2 kept), 1 unlabelable" in line
    store = SampleStore(tmp_path / "ds")
    skipped = store.read_label("no_table", "flow")
    # the labeler says why instead of raising (issue 11): no table in view / not a supporting surface
    assert not skipped.kept and skipped.reason.startswith("skipped: no table"), skipped.reason
    assert store.read_label("t0", "flow").kept and store.read_label("t1", "flow").is_negative


def test_a_camera_only_bag_is_refused_in_interactions_mode_with_the_topics_found(tmp_path, capsys):
    from robot_bag_factory import write_robot_bag

    from selfsup_perception.cli.replay_bag import main
    from selfsup_perception.ros.bag_io import NoMatchingTopicError

    bag = write_robot_bag(tmp_path / "robot", n=2)
    with pytest.raises(NoMatchingTopicError) as err:
        list(read_bag(bag, InteractionSample))
    assert f"bag {bag} has no selfsup_perception/msg/InteractionSample topic; it has: " in str(err.value)
    assert "/cam/depth/image_raw [sensor_msgs/msg/Image] x2" in str(err.value)
    assert main([str(bag), "--out", str(tmp_path / "ds"), "--mode", "interactions"]) == 2
    assert "has no selfsup_perception/msg/InteractionSample topic" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()  # nothing created for a bag that cannot be used


def test_a_topic_not_in_the_bag_is_an_error(tmp_path):
    from selfsup_perception.ros.bag_io import NoMatchingTopicError

    bag = _interaction_bag(tmp_path / "bag", [make_sample("a")])
    with pytest.raises(NoMatchingTopicError, match=r"topic '/no_such_topic' is not in bag .*; it has: interaction/"
                                                   r"samples \[selfsup_perception/msg/InteractionSample\] x1"):
        list(read_bag(bag, InteractionSample, topic="/no_such_topic"))
    assert len(list(read_bag(bag, InteractionSample, topic="interaction/samples"))) == 1


def test_a_bag_with_nothing_usable_exits_non_zero_listing_topics_and_needs(tmp_path, capsys):
    from robot_bag_factory import write_robot_bag

    from selfsup_perception.cli.replay_bag import main

    bag = write_robot_bag(tmp_path / "robot", n=2, with_tf=False)
    assert main([str(bag), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "has nothing to replay: it needs either selfsup_perception/msg/InteractionSample messages" in err
    assert "Found: /cam/color/camera_info [sensor_msgs/msg/CameraInfo] x2" in err
    assert "no tf2_msgs/msg/TFMessage topic (/tf, /tf_static): camera poses are unknown" in err


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_legacy_schema_is_an_error_naming_the_problem(tmp_path, storage):
    from rosbags.rosbag2 import StoragePlugin, Writer

    from selfsup_perception.ros.bag_io import SchemaMismatchError

    writer = Writer(tmp_path / "bag", version=9,
                    storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
    writer.open()
    conn = writer.add_connection("interaction/samples", "selfsup_perception/msg/InteractionSample",
                                 msgdef="string sample_id\nuint8 kind\n", rihs01="RIHS01_" + "0" * 64)
    writer.write(conn, 1, b"\x00\x01\x00\x00\x02\x00\x00\x00a\x00\x00\x00\x01")
    writer.close()
    if storage == "mcap":  # read from the MCAP file alone: its schema text is compared field by field
        (tmp_path / "bag" / "metadata.yaml").unlink()
    expected = "fields ['sample_id', 'kind']" if storage == "mcap" else "with type hash RIHS01_000"
    with pytest.raises(SchemaMismatchError, match=r"topic /?interaction/samples carries "
                                                  r"selfsup_perception/msg/InteractionSample .*") as err:
        list(read_bag(tmp_path / "bag", InteractionSample))
    assert expected in str(err.value) and "different (older or foreign) definition" in str(err.value)


def test_nothing_is_written_into_the_bag_folder(tmp_path, capsys):
    from selfsup_perception.cli import train_offline
    from selfsup_perception.cli.replay_bag import main

    bag = _interaction_bag(tmp_path / "bag", [make_sample("a")])
    before = sorted(p.name for p in bag.iterdir())
    assert main([str(bag), "--out", str(bag / "dataset")]) == 2
    assert "is inside the bag folder" in capsys.readouterr().err
    assert train_offline.main(["--dataset", str(bag), "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    assert sorted(p.name for p in bag.iterdir()) == before  # no samples/ (or anything) created in the bag
    assert not (tmp_path / "run").exists()


def test_train_offline_pointed_at_a_bag_says_to_replay_it(tmp_path, caplog):
    from selfsup_perception.cli import train_offline

    bag = _interaction_bag(tmp_path / "bag", [make_sample("a")])
    assert train_offline.main(["--dataset", str(bag), "--out", str(tmp_path / "run")]) == 2
    assert (f"{bag} is a rosbag2 bag, not a dataset: replay it into a dataset first, e.g. "
            f"`python -m selfsup_perception.cli.replay_bag {bag} --out DATASET_DIR`") in caplog.text
    assert train_offline.main(["--task", "descriptors", "--dataset", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "is not a dataset for --task descriptors: it needs a registration PairStore" in caplog.text
