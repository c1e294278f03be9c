"""One backbone for all the self-supervision: a pre-trained backbone starts the instance network.

Round trip through real checkpoints (safetensors + meta.json), refusal of a backbone built for
another config, the instance trainer (and the online trainer's factory, and train_offline)
starting from it, and the provenance written into meta.json.
"""

import json

import numpy as np
import pytest
import torch

from selfsup_perception.core.learning.models.backbone import (
    Backbone,
    BackboneConfig,
    BackboneMismatchError,
    backbone_weights,
    backbones,
    load_backbone_weights,
)
from selfsup_perception.core.learning.models.descriptor_net import DescriptorNet, DescriptorNetConfig
from selfsup_perception.core.learning.models.instance_segmentation import InstanceSegConfig, InstanceSegNet
from selfsup_perception.core.learning.models.semantic_segmentation import SemanticSegConfig, SemanticSegNet
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.tasks.backbone_transfer import read_pretrained_backbone
from selfsup_perception.core.learning.tasks.instance import (
    InstanceSegmentationTask,
    InstanceTaskConfig,
    collate_samples,
    synthetic_items,
)
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig

WIDTHS = (8, 8, 12, 12)  # tiny networks: the tests take seconds


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights and BatchNorm statistics that differ from any fresh initialisation (as after pre-training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.dtype.is_floating_point:
                v.add_(torch.randn(v.shape, generator=g) * 0.1)
    return model


def semantic_checkpoint(tmp_path, widths=WIDTHS, seed=1):
    """A region-consistency-style checkpoint (task semantic_segmentation) as the pre-training run writes it."""
    torch.manual_seed(seed)
    config = SemanticSegConfig(widths=widths, aspp_channels=8, low_level_channels=8, decoder_channels=8,
                               projector_hidden=8, projector_dim=8)
    model = perturbed(SemanticSegNet(config), seed)
    path = ckpt.save_checkpoint(tmp_path / "pre", task="semantic_segmentation", model=model,
                                model_config=config.to_dict(), step=250,
                                extra_meta={"initialization": {"backbone": "random"}})
    return path, model


def instance_task(pretrained: str = "", **model_kw) -> InstanceSegmentationTask:
    return InstanceSegmentationTask(InstanceTaskConfig(
        model=InstanceSegConfig(widths=WIDTHS, decoder_channels=8, embedding_dim=4, **model_kw),
        pretrained_backbone=pretrained))


def test_backbone_weights_round_trip_through_a_checkpoint(tmp_path):
    path, source = semantic_checkpoint(tmp_path)
    pre = read_pretrained_backbone(path)
    assert pre.config == InstanceSegConfig(widths=WIDTHS).backbone_config() == source.config.backbone_config()
    assert same_state(pre.state, source.backbone.state_dict())  # weights and BatchNorm statistics
    assert pre.source["task"] == "semantic_segmentation" and pre.source["version"] == 1 and pre.source["step"] == 250

    torch.manual_seed(0)
    fresh = instance_task().build_model()
    torch.manual_seed(0)
    model = instance_task(str(path)).build_model()
    assert same_state(model.backbone.state_dict(), source.backbone.state_dict())
    assert not same_state(fresh.backbone.state_dict(), model.backbone.state_dict())
    # the heads are not touched: same random weights as a random-init build with the same seed
    heads = lambda m: {k: v for k, v in m.state_dict().items() if not k.startswith("backbone.")}  # noqa: E731
    assert same_state(heads(fresh), heads(model))
    # a task directory means its newest valid version
    assert same_state(instance_task(str(path.parent)).build_model().backbone.state_dict(),
                      source.backbone.state_dict())


def test_export_import_between_models_and_into_both_co_teaching_networks():
    torch.manual_seed(0)
    desc = perturbed(DescriptorNet(DescriptorNetConfig(
        descriptor_dim=4, head_channels=8, backbone=InstanceSegConfig(widths=WIDTHS).backbone_config())), 3)
    config, state = backbone_weights(desc)
    task = InstanceSegmentationTask(InstanceTaskConfig(model=InstanceSegConfig(widths=WIDTHS), co_teaching=True))
    pair = task.build_model()
    assert load_backbone_weights(pair, config, state) == 2
    for bb in backbones(pair):
        assert same_state(bb.state_dict(), desc.backbone.state_dict())


def test_incompatible_backbone_is_refused_and_the_model_unchanged(tmp_path):
    path, _ = semantic_checkpoint(tmp_path, widths=(8, 8, 12, 16))
    with pytest.raises(BackboneMismatchError, match=r"widths: \(8, 8, 12, 16\) vs \(8, 8, 12, 12\)"):
        instance_task(str(path)).build_model()
    path_rgb, _ = semantic_checkpoint(tmp_path / "rgb")
    with pytest.raises(BackboneMismatchError, match="in_channels: 3 vs 4"):  # an RGB backbone, an RGB-D network
        instance_task(str(path_rgb), use_depth=True).build_model()

    torch.manual_seed(0)
    model = InstanceSegNet(InstanceSegConfig(widths=WIDTHS))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    other = Backbone(BackboneConfig(widths=WIDTHS, dilate_last=False))
    with pytest.raises(BackboneMismatchError, match="dilate_last: False vs True"):
        load_backbone_weights(model, other.config, other.state_dict())
    state = Backbone(model.config.backbone_config()).state_dict()
    del state["stem.0.weight"]  # same config, incomplete weights
    with pytest.raises(BackboneMismatchError, match="missing"):
        load_backbone_weights(model, model.config.backbone_config(), state)
    assert same_state(model.state_dict(), before)


def test_missing_or_headless_source_gives_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint at"):
        instance_task(str(tmp_path / "nothing")).build_model()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no checkpoint at"):
        instance_task(str(tmp_path / "empty")).build_model()


def batches(items, n, seed=0):
    rng = np.random.default_rng(seed)
    return [collate_samples([items[j] for j in rng.choice(len(items), 4, replace=False)], rng=rng) for _ in range(n)]


def test_instance_trainer_starts_from_the_pretrained_backbone_and_records_provenance(tmp_path):
    path, source = semantic_checkpoint(tmp_path)
    items = synthetic_items(8, height=32, width=40, seed=0)
    trainer = Trainer(instance_task(str(path)), TrainerConfig(lr=1e-3, warmup_steps=0, log_every=0, ema_decay=0.9))
    assert same_state(trainer.model.backbone.state_dict(), source.backbone.state_dict())
    assert same_state(trainer.serving_model.backbone.state_dict(), source.backbone.state_dict())  # the EMA too
    assert len(trainer.train_steps(batches(items, 3), 3)) == 3
    # default fine-tuning (FineTuneConfig): the backbone's weights are held for the first 100 steps, its
    # BatchNorm statistics follow the new images; the heads learn
    params = dict(trainer.model.backbone.named_parameters())
    assert all(torch.equal(v, source.backbone.state_dict()[k]) for k, v in params.items())
    assert not torch.equal(trainer.model.backbone.stem[1].running_mean, source.backbone.stem[1].running_mean)
    out = trainer.save_checkpoint(tmp_path / "ft")
    meta = json.loads((out / "meta.json").read_text())
    init = meta["initialization"]
    assert init["backbone"] == "pretrained"
    assert init["source"]["path"] == str(path.resolve()) and init["source"]["task"] == "semantic_segmentation"
    assert init["source"]["version"] == 1 and init["source"]["step"] == 250
    assert len(init["source"]["sha256"]) == 64
    assert init["source"]["initialization"] == {"backbone": "random"}  # the chain of provenance
    assert BackboneConfig.from_dict(init["backbone_config"]) == InstanceSegConfig(widths=WIDTHS).backbone_config()
    ckpt.validate_version(out, "instance_segmentation", load_weights=True)
    model, _ = ckpt.load_model_for_inference(out)  # serving needs nothing new
    assert isinstance(model, InstanceSegNet)

    # a restarted trainer keeps the provenance of the weights it resumes, whatever its own setting
    again = Trainer(instance_task(""), TrainerConfig(lr=1e-3, warmup_steps=0, log_every=0, ema_decay=0.9))
    assert again.resume(tmp_path / "ft") is not None
    meta2 = json.loads((again.save_checkpoint(tmp_path / "ft") / "meta.json").read_text())
    assert meta2["initialization"] == init

    scratch = Trainer(instance_task(""), TrainerConfig(log_every=0))
    meta3 = json.loads((scratch.save_checkpoint(tmp_path / "scratch") / "meta.json").read_text())
    assert meta3["initialization"] == {"backbone": "random"}


def test_online_trainer_factory_passes_the_pretrained_backbone(tmp_path):
    from selfsup_perception.core.learning.training.factory import OnlineTrainerSettings, make_online_trainer

    torch.manual_seed(2)
    source = perturbed(SemanticSegNet(SemanticSegConfig()), 2)  # default widths = the instance network's
    path = ckpt.save_checkpoint(tmp_path / "ckpt", task="semantic_segmentation", model=source,
                                model_config=source.config.to_dict(), step=10)
    online = make_online_trainer(OnlineTrainerSettings(
        dataset_dir=str(tmp_path / "data"), checkpoint_dir=str(tmp_path / "ckpt"),
        pretrained_backbone=str(path.parent)))
    assert same_state(online.trainer.model.backbone.state_dict(), source.backbone.state_dict())
    assert online.trainer.task.initialization()["source"]["version"] == 1
    # the node's trainer fine-tunes it with the measured default: backbone held still for the first 100 steps
    groups = {g["name"]: g for g in online.trainer.optimizer.param_groups}
    assert groups["backbone"]["frozen_steps"] == 100 and groups["backbone"]["lr_scale"] == 1.0
    assert groups["heads"]["frozen_steps"] == 0
    # the node's settings reach the trainer: freeze length, point labels, colour jitter
    online = make_online_trainer(OnlineTrainerSettings(
        dataset_dir=str(tmp_path / "data"), checkpoint_dir=str(tmp_path / "ckpt2"), pretrained_backbone=str(path.parent),
        freeze_backbone_steps=7, point_labels=False, color_jitter=0.0))
    groups = {g["name"]: g for g in online.trainer.optimizer.param_groups}
    assert groups["backbone"]["frozen_steps"] == 7
    assert online.config.point_labels is False and online.config.color_jitter == 0.0
    with pytest.raises(ValueError, match="color_jitter"):
        OnlineTrainerSettings(color_jitter=1.5)
    with pytest.raises(ValueError, match="freeze_backbone_steps"):
        OnlineTrainerSettings(freeze_backbone_steps=-1)


def test_train_offline_refuses_an_incompatible_backbone(tmp_path, caplog):
    from selfsup_perception.cli.train_offline import main

    path, _ = semantic_checkpoint(tmp_path, widths=(8, 8, 12, 16))
    rc = main(["--synthetic", "6", "--out", str(tmp_path / "run"), "--steps", "1", "--batch-size", "2",
               "--widths", *map(str, WIDTHS), "--pretrained-backbone", str(path), "--no-eval", "--device", "cpu",
               "--threads", "1"])
    assert rc == 2
    assert "widths" in caplog.text and not (tmp_path / "run" / "checkpoints").exists()

    ok, _ = semantic_checkpoint(tmp_path / "ok")
    rc = main(["--synthetic", "6", "--out", str(tmp_path / "run2"), "--steps", "2", "--batch-size", "2",
               "--widths", *map(str, WIDTHS), "--pretrained-backbone", str(ok), "--no-eval", "--device", "cpu",
               "--threads", "1", "--checkpoint-every", "0"])
    assert rc == 0
    meta = ckpt.latest_version(tmp_path / "run2" / "checkpoints", "instance_segmentation").meta
    assert meta["initialization"]["source"]["path"] == str(ok.resolve())


def test_instance_and_descriptor_heads_train_one_shared_backbone(tmp_path):
    from selfsup_perception.core.learning.models.backbone import share_backbone
    from selfsup_perception.core.learning.tasks.descriptors import DescriptorTask, DescriptorTaskConfig
    from selfsup_perception.core.learning.training.multitask import SharedBackboneTrainers

    inst = instance_task()
    desc = DescriptorTask(DescriptorTaskConfig(mode="identical", num_keypoints=8, model=DescriptorNetConfig(
        descriptor_dim=4, head_channels=8, backbone=inst.config.model.backbone_config())))
    shared = SharedBackboneTrainers([inst, desc], TrainerConfig(lr=1e-2, warmup_steps=0, log_every=0))
    m_inst, m_desc = shared.trainers["instance_segmentation"].model, shared.trainers["descriptors"].model
    assert m_desc.backbone is m_inst.backbone
    before_inst = {k: v.clone() for k, v in m_inst.state_dict().items()}
    rgb = torch.from_numpy(np.stack([it["rgb"] for it in synthetic_items(4, height=48, width=64, seed=1)]))
    desc_batches = iter([{"rgb_a": rgb.permute(0, 3, 1, 2).contiguous()}] * 2)
    turns = shared.train_alternating({"descriptors": desc_batches}, {"descriptors": 2})
    assert [t["task"] for t in turns] == ["descriptors"] and turns[0]["steps"] == 2
    after = m_inst.state_dict()
    # the descriptor steps moved the instance network's backbone, not its heads
    assert not torch.equal(after["backbone.stem.0.weight"], before_inst["backbone.stem.0.weight"])
    assert all(torch.equal(after[k], v) for k, v in before_inst.items() if not k.startswith("backbone."))
    items = synthetic_items(8, height=48, width=64, seed=0)
    turns = shared.train_alternating({"instance_segmentation": iter(batches(items, 1)), "descriptors": desc_batches},
                                     {"instance_segmentation": 1, "descriptors": 1})
    assert [(t["task"], t["steps"]) for t in turns] == [("instance_segmentation", 1), ("descriptors", 0)]  # ran out
    paths = shared.save_checkpoints(tmp_path)
    for name, path in paths.items():
        model, meta = ckpt.load_model_for_inference(path)  # ordinary checkpoints, served as before
        assert meta["shared_backbone"] == {"tasks": ["instance_segmentation", "descriptors"]}
        assert same_state(model.backbone.state_dict(), m_inst.backbone.state_dict())

    other = DescriptorNet(DescriptorNetConfig(descriptor_dim=4, head_channels=8))  # default widths 32/64/96/128
    with pytest.raises(BackboneMismatchError, match="widths"):
        share_backbone(m_inst, other)


# --------------------------------------------------------------------------- fine-tuning a pre-trained backbone


def test_fine_tune_config_refuses_bad_values():
    from selfsup_perception.core.learning.tasks.backbone_transfer import FineTuneConfig

    with pytest.raises(ValueError, match="backbone_lr_scale"):
        FineTuneConfig(backbone_lr_scale=-0.1)
    with pytest.raises(ValueError, match="freeze_backbone_steps"):
        FineTuneConfig(freeze_backbone_steps=-1)
    with pytest.raises(ValueError, match="transfer_stages"):
        FineTuneConfig(transfer_stages=-2)


def test_backbone_lr_scale_and_frozen_steps_reach_the_optimizer(tmp_path):
    from selfsup_perception.core.learning.tasks.backbone_transfer import FineTuneConfig

    path, source = semantic_checkpoint(tmp_path)
    task = InstanceSegmentationTask(InstanceTaskConfig(
        model=InstanceSegConfig(widths=WIDTHS, decoder_channels=8, embedding_dim=4), pretrained_backbone=str(path),
        fine_tune=FineTuneConfig(backbone_lr_scale=0.1, freeze_backbone_steps=2)))
    trainer = Trainer(task, TrainerConfig(lr=1e-2, warmup_steps=0, log_every=0))
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    n_backbone = sum(p.numel() for p in trainer.model.backbone.parameters())
    assert sum(p.numel() for p in groups["backbone"]["params"]) == n_backbone
    assert sum(p.numel() for g in groups.values() for p in g["params"]) == sum(
        p.numel() for p in trainer.model.parameters())  # every parameter, once
    items = synthetic_items(8, height=32, width=40, seed=0)
    heads = lambda m: {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("backbone.")}  # noqa: E731
    conv = lambda m: m.backbone.stem[0].weight.detach().clone()  # noqa: E731
    heads0 = heads(trainer.model)
    trainer.train_steps(batches(items, 2), 2)
    # frozen: the backbone's weights are the pre-trained ones, the heads learnt
    assert torch.equal(conv(trainer.model), source.backbone.stem[0].weight)
    assert groups["backbone"]["lr"] == 0.0 and groups["heads"]["lr"] == pytest.approx(1e-2)
    assert not same_state(heads(trainer.model), heads0)
    trainer.train_steps(batches(items, 1, seed=1), 1)
    assert groups["backbone"]["lr"] == pytest.approx(1e-3)  # 0.1 x the heads'
    assert not torch.equal(conv(trainer.model), source.backbone.stem[0].weight)

    # a checkpoint of this trainer resumes into one with other groups: weights load, the optimizer starts fresh
    trainer.save_checkpoint(tmp_path / "ft")
    again = Trainer(instance_task(""), TrainerConfig(lr=1e-2, warmup_steps=0, log_every=0))
    assert again.resume(tmp_path / "ft") is not None and again.step == 3
    assert same_state(again.model.state_dict(), trainer.model.state_dict())


def test_random_weights_train_with_one_group_whatever_the_fine_tune_settings():
    from selfsup_perception.core.learning.tasks.backbone_transfer import FineTuneConfig

    task = InstanceSegmentationTask(InstanceTaskConfig(
        model=InstanceSegConfig(widths=WIDTHS, decoder_channels=8, embedding_dim=4),
        fine_tune=FineTuneConfig(backbone_lr_scale=0.0, freeze_backbone_steps=100)))
    trainer = Trainer(task, TrainerConfig(lr=1e-2, warmup_steps=0, log_every=0))
    assert len(trainer.optimizer.param_groups) == 1
    before = trainer.model.backbone.stem[0].weight.detach().clone()
    trainer.train_steps(batches(synthetic_items(8, height=32, width=40, seed=0), 1), 1)
    assert not torch.equal(trainer.model.backbone.stem[0].weight, before)


def test_transfer_stages_keeps_the_later_stages_random(tmp_path):
    from selfsup_perception.core.learning.tasks.backbone_transfer import FineTuneConfig

    path, source = semantic_checkpoint(tmp_path)

    def build(pretrained, stages):
        torch.manual_seed(0)
        task = InstanceSegmentationTask(InstanceTaskConfig(
            model=InstanceSegConfig(widths=WIDTHS, decoder_channels=8, embedding_dim=4), pretrained_backbone=pretrained,
            fine_tune=FineTuneConfig(transfer_stages=stages), co_teaching=True))
        return task.build_model(), task.initialization()

    fresh, _ = build("", -1)
    model, init = build(str(path), 1)
    assert init["transferred"] == ["stem", "stages.0"]
    src = source.backbone.state_dict()
    for net, ref in ((model.net_a, fresh.net_a), (model.net_b, fresh.net_b)):  # both co-teaching networks
        state, rand = net.backbone.state_dict(), ref.backbone.state_dict()
        for k, v in state.items():
            expected = src[k] if k.startswith(("stem.", "stages.0.")) else rand[k]
            assert torch.equal(v, expected), k
    _, init_all = build(str(path), -1)
    assert init_all["transferred"] == ["stem", "stages.0", "stages.1", "stages.2"]
    _, init_stem = build(str(path), 0)
    assert init_stem["transferred"] == ["stem"]
