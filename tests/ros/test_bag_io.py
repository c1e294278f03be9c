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
                      "kept": counts["kept"]}
    store = SampleStore(tmp_path / "ds")
    assert sorted(store.sample_ids()) == ["r0", "r1"] and sorted(store.labeled_ids("frame_difference")) == ["r0", "r1"]
    again = replay(str(tmp_path / "bag"), str(tmp_path / "ds"), "frame_difference")  # resumable: nothing twice
    assert again["stored"] == 0 and again["skipped_existing"] == 2 and again["labeled"] == 0
    assert main(["--bag", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
