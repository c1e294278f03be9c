"""How the online trainer uses its labels: point labels from discarded pushes, photometric jitter."""

import numpy as np
import pytest

from selfsup_perception.core.learning.training.online import LabeledDataset, OnlineTrainingConfig, point_label_evidence
from selfsup_perception.core.types import InteractionOutcome, MaskLabel

from tests.promotion_factory import H, W, toy_store


def _discarded(reason, stats, labeler="flow", provenance=None):
    return MaskLabel(np.zeros((H, W), bool), False, False, reason, labeler, stats, provenance or {})


def test_point_label_evidence_rules():
    moved = _discarded("mask too large: 9000 px > 7680 px", {"area": 9000.0, "moving_area": 9500.0})
    assert point_label_evidence(moved) == "a moving segment under the action pixel"
    depth = _discarded("flow saw no motion but the depth changed at 40 % of the pixels near the action pixel: ...",
                       {"area": 0.0, "changed_near_action": 0.4})
    assert point_label_evidence(depth) == "the depth near the action pixel changed"
    # the labeler's own threshold, from the label's provenance, wins over the default
    assert point_label_evidence(_discarded("...", {"area": 0.0, "changed_near_action": 0.4},
                                           provenance={"config": {"negative_max_changed_fraction": 0.5}})) == ""
    nothing = [
        _discarded("no moving segment at the action pixel (800 px moved elsewhere)", {"area": 0.0,
                                                                                       "changed_near_action": 0.01}),
        _discarded("skipped: no table plane in view", {"skipped": True}),
        _discarded("large camera motion: 30.0 px > 20.0 px (poses)", {"area": 500.0}),
        _discarded("mask too small", {"area": 50.0}, labeler="grasp_outcome"),
        MaskLabel(np.ones((H, W), bool), False, True, "kept", "flow", {"area": 500.0}),  # kept: a mask label
        MaskLabel(np.zeros((H, W), bool), True, True, "nothing moved", "flow", {"area": 0.0}),
    ]
    assert [point_label_evidence(x) for x in nothing] == [""] * len(nothing)
    assert point_label_evidence(moved, InteractionOutcome.FAILED) == ""


def test_dataset_trains_on_point_labels_but_never_counts_or_validates_them(tmp_path):
    store, ids = toy_store(tmp_path / "data", n=16, seed=3)
    rng = np.random.default_rng(0)
    discarded = [sid for sid in ids if not store.read_label(sid, "flow").is_negative][:6]
    for k, sid in enumerate(discarded):
        mask = store.read_label(sid, "flow").mask
        stats = {"area": float(mask.sum())} if k % 2 == 0 else {"area": 0.0, "changed_near_action": 0.01}
        store.write_label(sid, MaskLabel(mask, False, False, "rotation: ...", "flow", stats), overwrite=True)
    plain = LabeledDataset(store, "flow", (W, H))
    plain.refresh()
    with_points = LabeledDataset(store, "flow", (W, H), point_labels=True)
    with_points.refresh()
    assert len(plain) == len(with_points) == 10 and plain.num_point == 0
    points = [it for it in with_points.items if it.get("is_point")]
    assert with_points.num_point == len(points) == 3  # the 3 with a moving segment; the others had no evidence
    assert {it["sample_id"] for it in points} == set(discarded[0::2])
    assert all(not it["mask"].any() and not it["is_negative"] for it in points)
    assert with_points.refresh() == 0  # nothing is read twice
    batch = next(with_points.batches(13, rng))
    assert batch["is_point"].sum() == 3 and not batch["mask"][batch["is_point"]].any()
    # with a validation split, point labels of held-out keys stay out of training and out of validation
    split = LabeledDataset(store, "flow", (W, H), validation_fraction=0.5, point_labels=True)
    split.refresh()
    assert all(not it.get("is_point") for it in split.validation)
    assert split.num_point == sum(bool(it.get("is_point")) for it in split.items) <= 3


def _all_differ(a, b):
    return all(not np.array_equal(x, y) for x, y in zip(a, b))


def test_online_batches_jitter_colours_by_default(tmp_path):
    store, _ = toy_store(tmp_path / "data", n=8, seed=5)
    ds = LabeledDataset(store, "flow", (W, H))
    ds.refresh()
    plain = next(ds.batches(4, np.random.default_rng(1)))
    jittered = next(ds.batches(4, np.random.default_rng(1), color_jitter=OnlineTrainingConfig().color_jitter))
    assert OnlineTrainingConfig().color_jitter == 0.25 and OnlineTrainingConfig().point_labels
    # the same items (drawn before collation); flips keep an image's colour histogram, the jitter changes it
    values = [np.sort(b["rgb"].numpy().reshape(len(b["rgb"]), -1), axis=1) for b in (plain, jittered)]
    assert _all_differ(values[0], values[1])
    with pytest.raises(ValueError, match="color_jitter"):
        OnlineTrainingConfig(color_jitter=1.0)


def test_point_labels_do_not_start_the_validation_quota_early(tmp_path):
    """The quota waits for ``reserve_after`` training *labels*; a point label is not one (found by the e2e test:
    1 label + 1 point sent every later positive to validation and the trainer never became ready)."""
    store, ids = toy_store(tmp_path / "data", n=12, seed=6)
    positives = [sid for sid in ids if not store.read_label(sid, "flow").is_negative]
    first = positives[0]
    mask = store.read_label(first, "flow").mask
    store.write_label(first, MaskLabel(mask, False, False, "rotation: ...", "flow", {"area": float(mask.sum())}),
                      overwrite=True)
    ds = LabeledDataset(store, "flow", (W, H), validation_fraction=1e-9, min_validation_positives=2, reserve_after=2,
                        point_labels=True)
    ds.refresh()
    assert ds.num_point == 1
    labels = [it["sample_id"] for it in ds.items if not it.get("is_point")]
    assert labels[:2] == [sid for sid in ids if sid != first][:2]  # the first two labels trained, then the quota
    assert sum(not it["is_negative"] for it in ds.validation) == 2
