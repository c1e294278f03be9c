"""The online instance trainer with auxiliary tasks on one shared backbone (training/multitask.py), no ROS."""

import threading

import numpy as np
import pytest
import torch

from selfsup_perception.core.learning.models.backbone import backbones
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.tasks.descriptors import DescriptorNet
from selfsup_perception.core.learning.training.factory import OnlineTrainerSettings, make_online_trainer
from selfsup_perception.core.learning.training.multitask import (
    AuxiliaryConfig,
    OnlineSharedBackboneTrainer,
    parse_auxiliary_tasks,
)
from selfsup_perception.core.learning.training.online import RoundInterrupted
from selfsup_perception.core.registration.pair_store import PairStore
from promotion_factory import toy_store
from view_factory import add_plane_view


def _settings(tmp_path, **kw) -> OnlineTrainerSettings:
    base = dict(dataset_dir=str(tmp_path / "interactions"), checkpoint_dir=str(tmp_path / "ckpt"),
                input_width=64, input_height=48, batch_size=2, steps_per_round=4, min_samples=4, warmup_steps=0,
                auxiliary_tasks="descriptors", auxiliary_dataset_dir=str(tmp_path / "reg"),
                auxiliary_steps_per_round=2, pretraining_steps_per_round=3, auxiliary_batch_size=2,
                validation_fraction=0.25)
    base.update(kw)
    return OnlineTrainerSettings(**base)


def _state(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_auxiliary_task_names_and_settings_are_checked(tmp_path):
    assert parse_auxiliary_tasks("") == ()
    assert parse_auxiliary_tasks(" descriptors , region_consistency") == ("descriptors", "region_consistency")
    with pytest.raises(ValueError, match="unknown auxiliary tasks"):
        parse_auxiliary_tasks("descriptors,semantic")
    with pytest.raises(ValueError, match="repeat"):
        parse_auxiliary_tasks("descriptors,descriptors")
    with pytest.raises(ValueError, match="beside instance_segmentation"):
        _settings(tmp_path, task="descriptors")
    with pytest.raises(ValueError, match="must be >= 0"):
        _settings(tmp_path, auxiliary_steps_per_round=-1)
    with pytest.raises(ValueError, match=">= 1"):
        AuxiliaryConfig(tasks=("descriptors",), batch_size=0)
    assert type(make_online_trainer(_settings(tmp_path, auxiliary_tasks=""))).__name__ == "OnlineInstanceTrainer"


def test_camera_moves_pretrain_then_alternate_with_the_instance_task_and_resume(tmp_path):
    torch.set_num_threads(1)
    online = make_online_trainer(_settings(tmp_path))
    assert isinstance(online, OnlineSharedBackboneTrainer)
    desc = online.auxiliary["descriptors"].trainer
    assert isinstance(desc.model, DescriptorNet)
    assert desc.model.backbone is backbones(online.trainer.model)[0]  # one module, two heads
    assert online.resume() is None
    assert online.train_round() is None and online.last_auxiliary == {}  # no view pairs, no labels: nothing

    # 1. camera moves, no labels yet: the round pre-trains the shared backbone alone
    store = PairStore(tmp_path / "reg")
    for tx in (0.0, 0.1, 0.2):
        add_plane_view(store, tx, with_regions=False)
    assert len(store) == 3
    inst_before = _state(online.trainer.model)
    assert online.train_round() is None  # no instance version: too few labels
    aux = online.last_auxiliary["descriptors"]
    assert aux["version"] == 1 and aux["steps"] == 3 and aux["pretraining"] and aux["view_pairs"] == 3
    assert np.isfinite(aux["loss"]) and desc.step == 3 and online.trainer.step == 0
    inst_after = _state(online.trainer.model)
    moved = [k for k in inst_before if not torch.equal(inst_before[k], inst_after[k])]
    assert moved and all(k.startswith("backbone.") for k in moved)  # the instance net's backbone, not its heads
    assert ckpt.latest_version(tmp_path / "ckpt", "instance_segmentation") is None
    meta = ckpt.read_meta(aux["path"])
    assert meta["task"] == "descriptors" and meta["pretraining"] is True
    assert meta["shared_backbone"]["tasks"] == ["instance_segmentation", "descriptors"]
    model, _ = ckpt.load_model_for_inference(aux["path"])  # an ordinary descriptor checkpoint
    assert isinstance(model, DescriptorNet)

    # a restart now keeps the pre-trained backbone (no instance checkpoint overrides it)
    early = make_online_trainer(_settings(tmp_path))
    assert early.resume() is None and early.auxiliary["descriptors"].trainer.step == 3
    assert early.auxiliary["descriptors"].total_pretraining_steps == 3
    assert _same(_state(backbones(early.trainer.model)[0]), _state(backbones(online.trainer.model)[0]))

    # 2. labels arrive: instance steps alternate with descriptor steps; the gate judges the instance version
    toy_store(tmp_path / "interactions", n=16)
    path = online.train_round()
    assert path is not None and path.parent.name == "instance_segmentation" and online.version == 1
    assert online.trainer.step == 4 and desc.step == 3 + 2
    aux = online.last_auxiliary["descriptors"]
    assert aux["version"] == 2 and aux["steps"] == 2 and not aux["pretraining"] and aux["pretraining_steps"] == 3
    assert online.last_round["descriptors_steps"] == 2.0 and np.isfinite(online.last_round["descriptors_loss"])
    meta = ckpt.read_meta(path)
    assert isinstance(meta["promoted"], bool) and meta["validation"]  # the gate's decision, as without auxiliaries
    assert meta["shared_backbone"]["steps"] == {"instance_segmentation": 4, "descriptors": 5}
    assert online.last_decision is not None

    # 3. resume after a kill: same steps, one shared backbone, the instance checkpoint's raw weights
    restarted = make_online_trainer(_settings(tmp_path))
    assert restarted.resume() == 1
    assert restarted.trainer.step == 4 and restarted.auxiliary["descriptors"].trainer.step == 5
    shared = backbones(restarted.trainer.model)[0]
    assert restarted.auxiliary["descriptors"].trainer.model.backbone is shared
    assert _same(_state(shared), _state(backbones(online.trainer.model)[0]))
    assert _same(_state(restarted.trainer.serving_model), _state(online.trainer.serving_model))  # EMA too

    # 4. an interrupted round writes nothing
    stop = threading.Event()
    stop.set()
    with pytest.raises(RoundInterrupted):
        restarted.train_round(stop=stop)
    assert [v.version for v in ckpt.list_versions(tmp_path / "ckpt", "descriptors")] == [1, 2]
    assert [v.version for v in ckpt.list_versions(tmp_path / "ckpt", "instance_segmentation")] == [1]


def test_region_consistency_as_the_auxiliary_task(tmp_path):
    torch.set_num_threads(1)
    online = make_online_trainer(_settings(tmp_path, auxiliary_tasks="region_consistency"))
    store = PairStore(tmp_path / "reg")
    for tx in (0.0, 0.1):
        add_plane_view(store, tx, with_regions=True)
    assert online.train_round() is None
    aux = online.last_auxiliary["region_consistency"]
    assert aux["task"] == "semantic_segmentation" and aux["steps"] == 3 and np.isfinite(aux["loss"])
    sem = online.auxiliary["region_consistency"].trainer.model
    assert sem.backbone is backbones(online.trainer.model)[0]
