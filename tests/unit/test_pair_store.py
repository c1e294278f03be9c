"""PairStore (views + view-pair index on disk) and the online RegConsist pre-training round on it."""

import json

import numpy as np
import pytest
import torch

from selfsup_perception.core.learning.serving.checkpoints import load_model_for_inference
from selfsup_perception.core.learning.models.semantic_segmentation import SemanticSegConfig, SemanticSegNet
from selfsup_perception.core.learning.training.online_region_consistency import (
    OnlineRegionConsistencyConfig,
    OnlineRegionConsistencyTrainer,
)
from selfsup_perception.core.learning.tasks.region_consistency import (
    RegionConsistencyConfig,
    RegionConsistencyDataConfig,
)
from selfsup_perception.core.learning.training.trainer import TrainerConfig
from selfsup_perception.core.registration import FelzenszwalbConfig, PixelPairSamplerConfig
from selfsup_perception.core.registration.pair_store import CorruptViewError, PairStore, StoredPair, pair_id_of
from view_factory import H, K, W, plane_view
from view_factory import add_plane_view as _add_view


def test_view_round_trip_with_regions(tmp_path):
    store = PairStore(tmp_path)
    frame = plane_view(0.1, stamp=2.5)
    regions = np.arange(12 * 16).reshape(12, 16) % 5
    vid = store.next_view_id()
    assert vid == "view_000001"
    store.write_view(vid, frame, regions)
    back, back_regions = store.read_view(vid, with_regions=True)
    np.testing.assert_array_equal(back.rgb, frame.rgb)
    np.testing.assert_array_equal(back.depth, frame.depth)  # NaN positions equal too
    np.testing.assert_array_equal(back.camera_to_world, frame.camera_to_world)
    assert back.intrinsics == K and back.stamp == 2.5 and back.frame_id == "cam"
    np.testing.assert_array_equal(back_regions, regions)
    assert store.read_view(vid, with_regions=False).shape == (H, W)
    assert store.next_view_id() == "view_000002"
    with pytest.raises(ValueError, match="integer map"):
        store.write_view("view_000002", frame, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="becomes a file name"):
        store.write_view("../escape", frame)


def test_pairs_persist_and_a_crash_before_registration_is_resumable(tmp_path):
    store = PairStore(tmp_path)
    for i in range(3):
        store.write_view(f"view_{i + 1:06d}", plane_view(0.1 * i))
    store.register_view("view_000001")
    store.register_view("view_000002", [StoredPair(pair_id_of("view_000001", "view_000002"),
                                                   "view_000001", "view_000002", 0.83)])
    # view 3 was written but the process died before its pairs were indexed
    (store.views_dir / ".view_000004.npz.123.tmp").write_bytes(b"partial")  # and a write was interrupted
    reopened = PairStore(tmp_path)
    assert reopened.view_ids() == ["view_000001", "view_000002", "view_000003"]
    assert reopened.registered_view_ids() == ["view_000001", "view_000002"]
    assert reopened.unregistered_view_ids() == ["view_000003"]
    assert reopened.pairs() == [StoredPair("view_000001__view_000002", "view_000001", "view_000002", 0.83)]
    reopened.register_view("view_000003", [StoredPair("view_000002__view_000003", "view_000002", "view_000003", 0.7)])
    assert [p.iou for p in PairStore(tmp_path).pairs()] == [0.83, 0.7]
    assert PairStore(tmp_path).unregistered_view_ids() == []
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".pairs.json*"))


def test_register_view_rejects_bad_pairs(tmp_path):
    store = PairStore(tmp_path)
    store.write_view("view_000001", plane_view(0.0))
    with pytest.raises(FileNotFoundError, match="must be stored before"):
        store.register_view("view_000009")
    with pytest.raises(ValueError, match="does not involve view_000001"):
        store.register_view("view_000001", [StoredPair("x", "view_000002", "view_000003", 0.5)])
    with pytest.raises(ValueError, match="outside"):
        store.register_view("view_000001", [StoredPair("x", "view_000002", "view_000001", 1.5)])
    assert store.registered_view_ids() == [] and PairStore(tmp_path).pairs() == []


def test_corrupt_view_and_index_are_quarantined_not_lost(tmp_path):
    store = PairStore(tmp_path)
    store.write_view("view_000001", plane_view(0.0))
    store.register_view("view_000001")
    (store.views_dir / "view_000002.npz").write_bytes(b"not a zip file")
    with pytest.raises(CorruptViewError, match="view_000002.npz is corrupt"):
        store.read_view("view_000002")
    assert store.load_view_or_quarantine("view_000002") is None
    assert (store.quarantine_dir / "view_000002.npz").read_bytes() == b"not a zip file"
    assert store.next_view_id() == "view_000003"  # a quarantined id is never reused
    store.index_path.write_text('{"format": 1, "registered_views": ["view_0')  # truncated index
    reopened = PairStore(tmp_path)
    assert reopened.index_was_corrupt
    assert reopened.unregistered_view_ids() == ["view_000001"]  # registered again by the node
    assert (reopened.quarantine_dir / "pairs.json").exists()
    assert reopened.pairs() == []


# ----------------------------------------------------------------------------- online pre-training
def _online(tmp_path, steps=2):
    cfg = OnlineRegionConsistencyConfig(
        dataset_dir=str(tmp_path / "reg"), checkpoint_dir=str(tmp_path / "ckpt"), input_width=W, input_height=H,
        batch_size=2, steps_per_round=steps, min_pairs=1,
        data=RegionConsistencyDataConfig(sampler=PixelPairSamplerConfig(num_pairs=64),
                                         felzenszwalb=FelzenszwalbConfig(scale=100, sigma=0.5, min_size=10)))
    task = RegionConsistencyConfig(model=SemanticSegConfig(widths=(8, 8, 16, 16), aspp_channels=16,
                                                           low_level_channels=8, decoder_channels=16,
                                                           projector_hidden=32, projector_dim=16))
    return OnlineRegionConsistencyTrainer(cfg, task, TrainerConfig(lr=1e-3, warmup_steps=0, seed=0))


def test_online_round_trains_checkpoints_and_resumes(tmp_path):
    torch.set_num_threads(1)
    online = _online(tmp_path)
    assert online.train_round() is None  # no pairs yet
    store = PairStore(tmp_path / "reg")
    _add_view(store, 0.0, with_regions=True)
    _add_view(store, 0.1, with_regions=False)  # 3 px shift: IoU (32-3)/(32+3) = 0.83
    assert [round(p.iou, 2) for p in store.pairs()] == [0.83]
    path = online.train_round()
    assert path is not None and path.name == "v00001" and path.parent.name == "semantic_segmentation"
    assert online.version == 1 and online.trainer.step == 2 and len(online.dataset) == 1
    assert online.last_round["steps"] == 2 and np.isfinite(online.last_round["loss"])
    assert online.last_round["barlow_twins"] > 0
    model, meta = load_model_for_inference(path)  # the registry rebuilds SemanticSegNet from meta
    assert isinstance(model, SemanticSegNet) and meta["task"] == "semantic_segmentation"
    assert meta["step"] == 2 and meta["dataset_size"] == 1
    logits = model(torch.zeros(1, 3, H, W))
    assert logits.shape == (1, 8, H, W)

    _add_view(store, 0.2, with_regions=False)  # pairs with both older views (IoU 0.83 and 0.68)
    assert len(store) == 3
    assert online.train_round().name == "v00002"
    assert len(online.dataset) == 3 and online.trainer.step == 4
    assert len(online.dataset.views) == 3  # each view loaded once

    restarted = _online(tmp_path)
    assert restarted.resume() == 2 and restarted.trainer.step == 4
    w_old = dict(online.trainer.model.state_dict())
    for k, v in restarted.trainer.model.state_dict().items():
        torch.testing.assert_close(v, w_old[k])
    assert restarted.train_round().name == "v00003" and restarted.trainer.step == 6


def test_online_dataset_skips_a_pair_whose_view_is_corrupt(tmp_path):
    online = _online(tmp_path)
    store = PairStore(tmp_path / "reg")
    _add_view(store, 0.0, with_regions=False)
    vid = _add_view(store, 0.1, with_regions=False)
    store.view_path(vid).write_bytes(b"garbage")
    assert online.dataset.refresh() == 0
    assert online.dataset.num_unusable == 1 and (store.quarantine_dir / f"{vid}.npz").exists()
    assert online.train_round() is None
    assert json.loads(store.index_path.read_text())["pairs"][0]["view_b"] == vid  # the index is left alone
