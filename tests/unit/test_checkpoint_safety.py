"""Checkpoint schema, metadata-only listing, retention with pins, and the bounded model cache."""

import json

import pytest
import torch

from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.serving.model_registry import ModelRegistry, model_nbytes
from selfsup_perception.core.learning.tasks.instance import InstanceSegmentationTask, InstanceTaskConfig
from selfsup_perception.core.learning.models.instance_segmentation import InstanceSegConfig

TINY = InstanceTaskConfig(model=InstanceSegConfig(widths=(8, 8, 8, 8), decoder_channels=8, embedding_dim=4))


def save_instance(root, n=1, seed=0):
    torch.manual_seed(seed)
    task = InstanceSegmentationTask(TINY)
    return [ckpt.save_checkpoint(root, task=task.name, model=task.build_model(), model_config=task.model_config(),
                                 step=i) for i in range(n)]


def good_meta(root):
    return json.loads((save_instance(root)[0] / ckpt.META_FILE).read_text())


@pytest.mark.parametrize("mutate, expected", [
    (lambda m: 42, "must be a JSON object"),
    (lambda m: {**m, "model_config": 42}, "model_config must be an object"),
    (lambda m: {**m, "model_config": {**m["model_config"], "model": {**m["model_config"]["model"], "widths": [-8, 8, 8, 8]}}},
     "widths = -8 must be a positive integer"),
    (lambda m: {**m, "model_config": {**m["model_config"], "model": {**m["model_config"]["model"], "embedding_dim": "x"}}},
     "embedding_dim = 'x' must be a positive integer"),
    (lambda m: {**m, "version": None}, "version = None must be an integer >= 1"),
    (lambda m: {**m, "step": -1}, "step = -1"),
    (lambda m: {**m, "inference": {"input_width": 0, "std": [1, 0, 1]}}, "inference.input_width"),
    (lambda m: {k: v for k, v in m.items() if k != "model_config"}, "lacks 'model_config'"),
])
def test_meta_schema_refuses_wrong_types_and_ranges(tmp_path, mutate, expected):
    with pytest.raises(ckpt.CheckpointError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        ckpt.validate_meta(mutate(good_meta(tmp_path)))


def test_descriptors_task_without_its_config_is_a_checkpoint_error_not_a_key_error(tmp_path):
    version = save_instance(tmp_path)[0]
    meta = json.loads((version / ckpt.META_FILE).read_text())
    meta["task"] = "descriptors"
    (version / ckpt.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match="cannot build the model.*KeyError"):
        ckpt.load_model_for_inference(version)


def test_list_versions_reads_metadata_only(tmp_path, monkeypatch):
    save_instance(tmp_path, n=3)
    (tmp_path / "instance_segmentation" / "v00002" / ckpt.MODEL_FILE).write_bytes(b"\x00" * 7)  # corrupt header

    def no_weights(*a, **k):
        raise AssertionError("list_versions must not read weights")

    monkeypatch.setattr(ckpt, "load_file", no_weights)
    assert [v.version for v in ckpt.list_versions(tmp_path, "instance_segmentation")] == [1, 3]


def test_retention_keeps_the_newest_and_the_pinned(tmp_path):
    versions = save_instance(tmp_path, n=6)
    ckpt.pin_version(versions[1], "served")
    ckpt.pin_version(versions[0], "promoted")
    assert ckpt.prune_versions(tmp_path, "instance_segmentation", keep_last=2) == [3, 4]
    assert [v.version for v in ckpt.list_versions(tmp_path, "instance_segmentation")] == [1, 2, 5, 6]
    ckpt.unpin_version(versions[1], "served")
    ckpt.unpin_version(versions[0], "served")  # a promoted pin is not a served pin: it stays
    assert ckpt.prune_versions(tmp_path, "instance_segmentation", keep_last=2) == [2]
    assert ckpt.prune_versions(tmp_path, "instance_segmentation", keep_last=0) == []  # 0 keeps all
    assert not list((tmp_path / "instance_segmentation").glob(".tmp-*"))
    # numbering continues after pruning
    assert save_instance(tmp_path)[0].name == "v00007"


def test_model_cache_is_bounded_in_count_and_bytes_and_never_evicts_the_active_model(tmp_path):
    save_instance(tmp_path, n=8)
    reg = ModelRegistry(tmp_path, max_cached=2)
    active = reg.activate("instance_segmentation", 1)  # the oldest entry is the active one
    for v in range(2, 9):
        reg.get("instance_segmentation", f"v{v}")
    stats = reg.cache_stats()
    assert stats["cached"] == 2 and stats["evicted"] == 5
    assert reg.active("instance_segmentation") is active
    one = model_nbytes(active.model)
    reg2 = ModelRegistry(tmp_path, max_cached=10, max_cache_bytes=int(2.5 * one))
    reg2.activate("instance_segmentation", 8)
    for v in range(1, 8):
        reg2.get("instance_segmentation", str(v))
    assert reg2.cache_stats()["bytes"] <= 2.5 * one and reg2.active_names()["instance_segmentation"] == "instance_segmentation/v8"


def test_newest_loadable_version_is_served_and_skipped_ones_have_reasons(tmp_path):
    versions = save_instance(tmp_path, n=3)
    meta = json.loads((versions[2] / ckpt.META_FILE).read_text())
    meta["model_config"]["model"]["unexpected_key"] = 3  # builds fail: InstanceSegConfig has no such field
    (versions[2] / ckpt.META_FILE).write_text(json.dumps(meta))
    (versions[1] / ckpt.MODEL_FILE).write_bytes(b"truncated")
    reg = ModelRegistry(tmp_path)
    loaded, skipped = reg.activate_newest_loadable("instance_segmentation")
    assert loaded.version == 1
    assert [v for v, _ in skipped] == [3, 2]
    assert "unexpected_key" in skipped[0][1] and "corrupt" in skipped[1][1]
