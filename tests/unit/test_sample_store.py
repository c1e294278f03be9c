import numpy as np
import pytest

from selfsup_perception.core.dataset.sample_store import CorruptSampleError, SampleStore
from selfsup_perception.core.types import InteractionKind, MaskLabel
from sample_factory import make_sample


def test_round_trip(tmp_path):
    store = SampleStore(tmp_path)
    s = make_sample()
    store.write_sample(s)
    back = store.read_sample("s1")
    np.testing.assert_array_equal(back.before.rgb, s.before.rgb)
    np.testing.assert_array_equal(back.after.depth, s.after.depth)  # NaN positions equal too
    assert back.action_pixel == (3.0, 4.0) and back.kind == InteractionKind.PUSH
    assert back.before.intrinsics == s.before.intrinsics
    assert back.ground_truth is None  # the learner's default read never sees ground truth
    gt = store.read_sample("s1", with_ground_truth=True).ground_truth
    assert gt["moved_instance"] == 2 and gt["instance_mask_before"].shape == (12, 16)


def test_interrupted_write_leaves_no_sample(tmp_path):
    store = SampleStore(tmp_path)
    store.write_sample(make_sample("a"))
    (store.samples_dir / ".b.npz.123.tmp").write_bytes(b"partial")  # a crash mid-write
    assert store.sample_ids() == ["a"]
    assert [s.sample_id for s in store.iter_samples()] == ["a"]


def test_corrupt_file_is_quarantined_not_lost(tmp_path):
    store = SampleStore(tmp_path)
    store.write_sample(make_sample("good"))
    (store.samples_dir / "bad.npz").write_bytes(b"not a zip file")
    with pytest.raises(CorruptSampleError, match="bad.npz is corrupt"):
        store.read_sample("bad")
    assert [s.sample_id for s in store.iter_samples()] == ["good"]
    assert (store.quarantine_dir / "bad.npz").read_bytes() == b"not a zip file"


def test_labels_and_resume(tmp_path):
    store = SampleStore(tmp_path)
    for i in range(3):
        store.write_sample(make_sample(f"s{i}", seed=i))
    mask = np.zeros((12, 16), bool)
    mask[2:5, 3:9] = True
    store.write_label("s1", MaskLabel(mask, False, True, "kept", "flow", {"mean_flow": 1.5}))
    assert store.unlabeled_ids("flow") == ["s0", "s2"]
    label = store.read_label("s1", "flow")
    np.testing.assert_array_equal(label.mask, mask)
    assert label.stats == {"mean_flow": 1.5} and label.kept and not label.is_negative


def test_bad_input_is_rejected_with_clear_errors(tmp_path):
    store = SampleStore(tmp_path)
    s = make_sample()
    s.after.depth = s.after.depth[:-1]
    with pytest.raises(ValueError, match="does not match rgb"):
        store.write_sample(s)
    with pytest.raises(ValueError, match="must match"):
        store.sample_path("../escape")
    with pytest.raises(FileNotFoundError, match="no sample 'missing'"):
        store.read_sample("missing")


def test_a_second_corrupt_file_of_the_same_name_does_not_overwrite_the_first(tmp_path):
    store = SampleStore(tmp_path)
    for content in (b"first", b"second"):
        (store.samples_dir / "bad.npz").write_bytes(content)
        assert list(store.iter_samples()) == []
    kept = sorted(p.read_bytes() for p in store.quarantine_dir.iterdir())
    assert kept == [b"first", b"second"]
