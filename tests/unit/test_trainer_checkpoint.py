"""Generic trainer: phases, NaN guard, atomic checkpoints, resume after a kill, inference loading."""

import json
import logging

import numpy as np
import pytest
import torch

from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.tasks.instance import (
    InstanceSegmentationTask,
    InstanceTaskConfig,
    collate_samples,
    synthetic_items,
)
from selfsup_perception.core.learning.models.instance_segmentation import InstanceSegConfig, InstanceSegNet
from selfsup_perception.core.learning.training.trainer import NonFiniteLossError, Trainer, TrainerConfig


class LinearTask:
    """y = x @ w_true; a model with BatchNorm so running statistics must survive a resume too."""

    name = "toy_linear"

    def __init__(self, nan_batches: bool = True):
        self.nan_batches = nan_batches  # batches with 'nan': True give a NaN loss

    def build_model(self) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))

    def model_config(self) -> dict:
        return {"in": 4}

    def compute_loss(self, model, batch):
        loss = torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
        if self.nan_batches and batch.get("nan", False):
            loss = loss * float("nan")
        return loss, {"mse": float(loss.detach())}


def toy_batches(n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    out = []
    for _ in range(n):
        x = torch.randn(16, 4, generator=g)
        out.append({"x": x, "y": x @ w})
    return out


def params_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_reduces_loss_and_records_phases():
    trainer = Trainer(LinearTask(), TrainerConfig(lr=0.1, warmup_steps=5, schedule="cosine", total_steps=100))
    records = trainer.train_steps(toy_batches(100), 100)
    assert [r["step"] for r in records] == list(range(1, 101))
    assert records[0]["lr"] == pytest.approx(0.02)  # warm-up: lr * 1/5
    assert records[-1]["lr"] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 94 / 95))))
    assert np.mean([r["loss"] for r in records[-5:]]) < 0.1 * np.mean([r["loss"] for r in records[:5]])
    assert {"loss", "lr", "grad_norm", "time_s", "mse"} <= records[0].keys()
    assert len(trainer.train_steps(toy_batches(3), 10)) == 3  # stops when the data runs out


def test_nan_guard_skips_and_stops(caplog):
    batches = toy_batches(10)
    batches[2]["nan"] = True
    trainer = Trainer(LinearTask(), TrainerConfig(max_nonfinite_steps=3))
    with caplog.at_level(logging.WARNING):
        records = trainer.train_steps(batches, 5)
    assert trainer.skipped_steps == 1 and "skipping step 2: loss is nan" in caplog.text
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(r["loss"]) for r in records)
    # every step NaN -> stops after max_nonfinite_steps with a clear error and unchanged weights
    trainer = Trainer(LinearTask(), TrainerConfig(max_nonfinite_steps=3))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="3 steps had a non-finite"):
        trainer.train_steps([{**b, "nan": True} for b in toy_batches(10)], 10)
    assert trainer.step == 0
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items() if "running" not in k and "num_batches" not in k)


def test_checkpoint_layout_and_metadata(tmp_path):
    trainer = Trainer(LinearTask(), TrainerConfig(dataset_size=123))
    trainer.train_steps(toy_batches(4), 4)
    path = trainer.save_checkpoint(tmp_path)
    assert path == tmp_path / "toy_linear" / "v00001"
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.safetensors", "optimizer.pt"]
    meta = json.loads((path / "meta.json").read_text())
    assert meta["task"] == "toy_linear" and meta["step"] == 4 and meta["version"] == 1
    assert meta["model_config"] == {"in": 4} and meta["dataset_size"] == 123 and "loss" in meta["metrics"]
    torch.load(path / "optimizer.pt", weights_only=True)  # no pickle needed
    assert trainer.save_checkpoint(tmp_path).name == "v00002"
    assert [v.version for v in ckpt.list_versions(tmp_path, "toy_linear")] == [1, 2]
    assert not list((tmp_path / "toy_linear").glob(".tmp-*"))


def test_resume_after_simulated_kill_loses_nothing(tmp_path, caplog):
    batches = toy_batches(20)
    reference = Trainer(LinearTask(), TrainerConfig(lr=0.02))
    reference.train_steps(batches, 20)

    first = Trainer(LinearTask(), TrainerConfig(lr=0.02, checkpoint_every=5, checkpoint_dir=str(tmp_path)))
    first.train_steps(batches[:12], 12)  # checkpoints at 5 and 10, then "killed" at step 12
    task_dir = tmp_path / "toy_linear"
    # the kill left a half-written temp version (dead pid) and a version whose weights are truncated
    tmp = task_dir / ".tmp-v00003-999999999-deadbeef"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"\x00" * 10)
    broken = task_dir / "v00003"
    broken.mkdir()
    good = (task_dir / "v00002" / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(good[: len(good) // 2])
    meta = json.loads((task_dir / "v00002" / "meta.json").read_text())
    (broken / "meta.json").write_text(json.dumps({**meta, "version": 3, "step": 12}))

    resumed = Trainer(LinearTask(), TrainerConfig(lr=0.02, seed=123))
    with caplog.at_level(logging.WARNING):
        info = resumed.resume(tmp_path)
    assert info is not None and info.version == 2 and resumed.step == 10
    assert "ignoring invalid checkpoint" in caplog.text and "v00003" in caplog.text
    resumed.train_steps(batches[10:], 10)
    assert resumed.step == 20
    assert params_equal(resumed.model, reference.model)
    # the next save skips past the broken version and removes the dead writer's temp dir
    assert resumed.save_checkpoint(tmp_path).name == "v00004"
    assert not tmp.exists()


def test_resume_without_checkpoints_returns_none(tmp_path):
    trainer = Trainer(LinearTask())
    assert trainer.resume(tmp_path) is None and trainer.step == 0


def test_instance_checkpoint_loads_for_inference(tmp_path):
    cfg = InstanceTaskConfig(model=InstanceSegConfig(widths=(8, 8, 16, 16), decoder_channels=8, embedding_dim=8))
    trainer = Trainer(InstanceSegmentationTask(cfg), TrainerConfig())
    items = synthetic_items(4, height=32, width=40)
    trainer.train_steps([collate_samples(items, rng=np.random.default_rng(0))], 1)
    path = trainer.save_checkpoint(tmp_path)
    model, meta = ckpt.load_model_for_inference(path)
    assert isinstance(model, InstanceSegNet) and not model.training and meta["step"] == 1
    assert params_equal(model, trainer.model)
    model2, _ = ckpt.load_model_for_inference(path / "model.safetensors")
    assert params_equal(model2, trainer.model)


def test_load_for_inference_errors_are_clear(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.load_model_for_inference(tmp_path / "nope")
    trainer = Trainer(LinearTask())
    path = trainer.save_checkpoint(tmp_path)
    build = lambda cfg: LinearTask().build_model()  # noqa: E731
    model, meta = ckpt.load_model_for_inference(path, build_model=build)
    assert meta["task"] == "toy_linear"
    with pytest.raises(ckpt.CheckpointError, match="no model builder known"):
        ckpt.load_model_for_inference(path)
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ckpt.CheckpointError, match="weights corrupt"):
        ckpt.load_model_for_inference(path, build_model=build)
    (path / "meta.json").write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="metadata corrupt"):
        ckpt.load_model_for_inference(path, build_model=build)
    (path / "meta.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match="metadata missing"):
        ckpt.load_model_for_inference(path, build_model=build)


def test_trainer_config_validation():
    with pytest.raises(ValueError, match="optimizer"):
        TrainerConfig(optimizer="rmsprop")
    with pytest.raises(TypeError, match="TrainingTask"):
        Trainer(object())  # type: ignore[arg-type]


def test_checkpoint_metadata_carries_what_inference_needs(tmp_path):
    """Input size, class names and normalisation travel in meta.json; serving needs no parameter for them."""
    from selfsup_perception.core.learning.models.backbone import IMAGE_MEAN, IMAGE_STD

    trainer = Trainer(LinearTask(), TrainerConfig(input_size=(96, 64), class_names=("table", "mug")))
    meta = ckpt.read_meta(trainer.save_checkpoint(tmp_path))
    assert meta["inference"] == {"input_width": 96, "input_height": 64, "class_names": ["table", "mug"],
                                 "normalization": {"scale": 255.0, "mean": IMAGE_MEAN, "std": IMAGE_STD}}
    assert ckpt.serving_input_size(meta) == (96, 64)
    assert ckpt.serving_class_names(meta) == ["table", "mug"]


def test_legacy_checkpoint_without_inference_block_gets_documented_defaults(tmp_path):
    meta = ckpt.read_meta(Trainer(LinearTask(), TrainerConfig()).save_checkpoint(tmp_path))
    assert "inference" not in meta
    assert ckpt.serving_input_size(meta) == ckpt.LEGACY_INPUT_SIZE
    assert ckpt.serving_class_names({"model_config": {"num_classes": 2}}) == ["class_0", "class_1"]


def test_online_trainer_records_its_input_size(tmp_path):
    from selfsup_perception.core.learning.training.factory import OnlineTrainerSettings, make_online_trainer

    online = make_online_trainer(OnlineTrainerSettings(task="descriptors", dataset_dir=str(tmp_path / "d"),
                                                       checkpoint_dir=str(tmp_path / "ck"), input_width=64,
                                                       input_height=48))
    path = online.trainer.save_checkpoint(tmp_path / "ck")
    assert ckpt.serving_input_size(ckpt.read_meta(path)) == (64, 48)
    assert ckpt.version_of(path) == 1 and ckpt.version_dir(tmp_path / "ck", "descriptors", 1) == path
