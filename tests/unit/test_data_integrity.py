"""Training data integrity: unique sample ids, labels written once, orphan temp files, bad items quarantined."""

import dataclasses
import os
import threading
import time

import numpy as np
import pytest
from sample_factory import make_sample

from selfsup_perception.core.dataset.sample_store import DuplicateSampleError, SampleStore
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.models.instance_segmentation import InstanceSegConfig
from selfsup_perception.core.learning.tasks.instance import InstanceTaskConfig
from selfsup_perception.core.learning.training.online import (
    OnlineInstanceTrainer,
    OnlineTrainingConfig,
    RoundInterrupted,
)
from selfsup_perception.core.types import MaskLabel

H, W = 48, 64


def test_a_sample_id_is_written_once(tmp_path):
    store = SampleStore(tmp_path)
    first = make_sample("a", seed=1)
    store.write_sample(first)
    store.write_sample(first)  # the same sample again: a no-op
    other = make_sample("a", h=24, w=32, seed=2)
    with pytest.raises(DuplicateSampleError, match="different sample with id 'a'"):
        store.write_sample(other)
    kept = store.read_sample("a")
    assert kept.before.rgb.shape == first.before.rgb.shape and np.array_equal(kept.before.rgb, first.before.rgb)


def test_a_label_is_written_once(tmp_path):
    store = SampleStore(tmp_path)
    store.write_sample(make_sample("a"))
    mask = np.zeros((12, 16), bool)
    mask[2:6, 2:6] = True
    positive = MaskLabel(mask, False, True, "kept", "flow")
    store.write_label("a", positive)
    store.write_label("a", positive)  # identical: no-op
    with pytest.raises(DuplicateSampleError, match="different 'flow' label"):
        store.write_label("a", MaskLabel(np.zeros((12, 16), bool), True, True, "negative", "flow"))
    assert not store.read_label("a", "flow").is_negative and store.read_label("a", "flow").mask.sum() == 16
    store.write_label("a", MaskLabel(np.zeros((12, 16), bool), True, True, "relabel", "flow"), overwrite=True)
    assert store.read_label("a", "flow").is_negative


def test_orphan_temp_files_are_removed_at_start_up(tmp_path):
    store = SampleStore(tmp_path)
    store.write_sample(make_sample("a"))
    (tmp_path / "labels" / "flow").mkdir(parents=True)
    old = [tmp_path / "samples" / ".b.npz.x1.tmp", tmp_path / "labels" / "flow" / ".a.npz.x2.tmp"]
    fresh = tmp_path / "samples" / ".c.npz.x3.tmp"  # another writer may be busy with this one
    for p in old + [fresh]:
        p.write_bytes(b"partial")
    for p in old:
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    reopened = SampleStore(tmp_path)
    assert reopened.orphans_removed == 2 and not any(p.exists() for p in old) and fresh.exists()
    assert reopened.sample_ids() == ["a"]


def labeled(root, n, bad=()):
    store = SampleStore(root)
    for i in range(n):
        s = make_sample(f"s{i}", h=H, w=W, seed=i)
        if f"s{i}" in bad:
            s = dataclasses.replace(s, action_pixel=(float("nan"), 4.0))
        store.write_sample(s)
        m = np.zeros((H, W), bool)
        m[2:9, 1:8] = True
        store.write_label(s.sample_id, MaskLabel(m, False, True, "test", "flow"))
    return store


def online(root, **kw):
    return OnlineInstanceTrainer(
        OnlineTrainingConfig(dataset_dir=str(root / "ds"), checkpoint_dir=str(root / "ck"), input_width=W,
                             input_height=H, batch_size=2, steps_per_round=2, min_samples=2, **kw),
        InstanceTaskConfig(mask_loss="bce", model=InstanceSegConfig(widths=(8, 8, 8, 8), decoder_channels=8,
                                                                    embedding_dim=4)))


def test_a_bad_item_is_quarantined_and_never_blocks_a_round(tmp_path):
    store = labeled(tmp_path / "ds", 4, bad=("s1",))
    # a label whose mask does not fit its sample (the 240x320 mask on a 480x640 sample)
    store.write_label("s3", MaskLabel(np.ones((H // 2, W // 2), bool), False, True, "x", "flow"), overwrite=True)
    trainer = online(tmp_path)
    path = trainer.train_round()
    assert path is not None and path.name == "v00001"
    assert len(trainer.dataset) == 2 and trainer.dataset.num_quarantined == 2
    assert sorted(p.name for p in (tmp_path / "ds" / "quarantine" / "labels" / "flow").iterdir()) == ["s1.npz", "s3.npz"]
    assert store.labeled_ids("flow") == ["s0", "s2"] and store.sample_ids()  # samples are kept
    assert trainer.train_round().name == "v00002"  # and the next round is not blocked either


def test_an_interrupted_round_saves_nothing(tmp_path):
    labeled(tmp_path / "ds", 3)
    trainer = online(tmp_path)
    stop = threading.Event()
    stop.set()
    with pytest.raises(RoundInterrupted):
        trainer.train_round(stop=stop)
    assert ckpt.list_versions(tmp_path / "ck", "instance_segmentation") == []
