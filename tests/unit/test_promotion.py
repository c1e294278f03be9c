"""Promotion gate: deterministic split on self-labels, validation scores, decisions, the ledger, EMA and replay."""

import json

import numpy as np
import pytest
import torch
from promotion_factory import H, W, corrupt_training_labels, toy_store, validation_ids

from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.serving.promotions import (
    PromotionError,
    PromotionLedger,
    is_promoted,
    served_version,
)
from selfsup_perception.core.learning.tasks.instance import (
    InstanceSegmentationTask,
    InstanceTaskConfig,
    collate_samples,
    synthetic_items,
)
from selfsup_perception.core.learning.training.online import (
    LabeledDataset,
    OnlineInstanceTrainer,
    OnlineTrainingConfig,
)
from selfsup_perception.core.learning.training.promotion import (
    PromotionConfig,
    PromotionGate,
    ValidationScores,
    is_validation,
    validation_scores,
)
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig

TASK = "instance_segmentation"


# ----------------------------------------------------------------------------- split


def test_split_is_deterministic_and_holds_out_about_the_fraction():
    keys = [f"sample-{i}" for i in range(4000)]
    first = [is_validation(k, 0.2) for k in keys]
    assert first == [is_validation(k, 0.2) for k in keys]  # same answer every time (and after a restart)
    assert 0.18 < np.mean(first) < 0.22
    # growing the fraction only moves labels into validation, never out
    assert all(is_validation(k, 0.3) for k, v in zip(keys, first) if v)
    assert not any(is_validation(k, 0.0) for k in keys)
    with pytest.raises(ValueError, match="validation fraction"):
        is_validation("x", 1.0)


def test_validation_holds_the_robots_labels_not_ground_truth(tmp_path):
    store, ids = toy_store(tmp_path / "ds", n=24)
    ds = LabeledDataset(store, "flow", (W, H), validation_fraction=0.3)
    assert ds.refresh() == 24
    held_out = {it["sample_id"] for it in ds.validation}
    assert held_out == {s for s in ids if is_validation(s, 0.3)} and held_out
    assert not held_out & {it["sample_id"] for it in ds.items}  # never trained on
    for it in ds.validation:
        label = store.read_label(it["sample_id"], "flow")
        assert np.array_equal(it["mask"], label.mask)  # the label itself (the store also holds ground truth)
        assert "gt_instances" not in it
    # labels arriving later keep their side of the split
    assert ds.refresh() == 0 and len(ds) + len(ds.validation) == 24


# ---------------------------------------------------------------------------- scores


def _train(trainer, items, steps, seed=0):
    rng = np.random.default_rng(seed)
    batches = (collate_samples([items[i] for i in rng.choice(len(items), 8, replace=False)], rng=rng)
               for _ in range(steps))
    trainer.train_steps(batches, steps)


def test_validation_scores_rank_a_trained_model_above_an_untrained_one():
    torch.set_num_threads(1)
    train = synthetic_items(24, height=H, width=W, seed=0, label_noise=0.0)
    val = synthetic_items(8, height=H, width=W, seed=1, negative_fraction=0.0, label_noise=0.0)
    trainer = Trainer(InstanceSegmentationTask(InstanceTaskConfig(mask_loss="bce")), TrainerConfig(lr=3e-3))
    before = validation_scores(trainer.model, val)
    _train(trainer, train, 40)
    after = validation_scores(trainer.model, val)
    assert before.num_positive == after.num_positive == 8 and before.num_negative == 0
    assert after.mask_iou > before.mask_iou + 0.2 and after.score > before.score + 0.2
    assert trainer.model.training  # measuring does not leave the model in eval mode
    assert ValidationScores.from_dict(after.as_dict()) == after
    assert after.as_dict()["score"] == pytest.approx(0.5 * (after.mask_iou + after.ap50))


def test_ap_on_self_labels_ignores_predictions_on_unlabelled_objects(monkeypatch):
    """A perfect prediction of the labelled object plus one of another (unlabelled) object still scores AP 1."""
    from selfsup_perception.core.learning.training import promotion

    label = np.zeros((H, W), bool)
    label[10:20, 10:20] = True
    other = np.zeros((H, W), bool)
    other[30:40, 40:50] = True

    class Inst:
        def __init__(self, mask, score):
            self.mask, self.score = mask, score

    # the instances a model would predict: the other object scores higher than the labelled one
    monkeypatch.setattr(promotion, "predict_instances", lambda net, rgb, config: [Inst(other, 0.9), Inst(label, 0.8)])
    item = {"rgb": np.zeros((H, W, 3), np.uint8), "mask": label, "action_pixel": (15.0, 15.0), "is_negative": False}
    assert validation_scores(InstanceSegmentationTask().build_model(), [item]).ap50 == pytest.approx(1.0, abs=0.02)
    # a wrong prediction on the labelled object (a third of it) ranked first is a false positive
    half = label.copy()
    half[13:20] = False  # IoU 0.3 with the label
    monkeypatch.setattr(promotion, "predict_instances", lambda net, rgb, config: [Inst(half, 0.9), Inst(label, 0.8)])
    assert validation_scores(InstanceSegmentationTask().build_model(), [item]).ap50 < 0.6


# ------------------------------------------------------------------------------ gate


def s(iou, ap, pos=5):
    return ValidationScores(iou, ap, 0.0, pos, 1)


@pytest.mark.parametrize("candidate, served, promoted, why", [
    (s(0.5, 0.5), None, True, "first promoted version"),
    (s(0.02, 0.0), None, False, "< min_score"),
    (s(0.9, 0.9, pos=1), None, False, "1 positive validation labels, 2 needed"),
    (s(0.60, 0.50), s(0.50, 0.50), True, "promoted: score 0.550 > served 0.500"),
    (s(0.505, 0.50), s(0.50, 0.50), False, "does not beat the served 0.500 by 0.01"),
    (s(0.40, 0.50, pos=20), s(0.50, 0.50), False, "mask_iou 0.400 fell below the served 0.500 by more than 0.050"),
    (s(0.90, 0.20), s(0.50, 0.50), False, "ap50 0.200 fell below the served 0.500 by more than 0.200"),
    # on 5 labels a mask_iou 0.1 lower is within one label's worth: the better score wins
    (s(0.60, 0.90), s(0.70, 0.50), True, "promoted: score 0.750 > served 0.600"),
    (ValidationScores(0.7, 0.8, 1.0, 5, 2), ValidationScores(0.6, 0.8, 0.0, 5, 2), False,
     "sees an object at 1.00 of the pushes that moved nothing (served: 0.00)"),
])
def test_gate_decisions(candidate, served, promoted, why):
    decision = PromotionGate(PromotionConfig()).decide(candidate, served)
    assert decision.promoted is promoted and why in decision.reason


def test_first_version_rule_against_the_depth_aware_segments():
    depth = s(0.95, 1.0)  # what the depth-aware segments score on the same self-labels (simple world: ~0.99)
    default = PromotionGate(PromotionConfig()).decide(s(0.5, 0.5), None, depth)
    assert default.promoted and "depth-aware segments: 0.975" in default.reason and default.bottom_up == depth
    strict = PromotionGate(PromotionConfig(first_version_bar="bottom_up"))
    refused = strict.decide(s(0.5, 0.5), None, depth)
    assert not refused.promoted and "does not beat the depth-aware segments' 0.975" in refused.reason
    assert strict.decide(s(0.5, 0.5), None, s(0.3, 0.4)).promoted  # a world where depth is weak
    assert strict.decide(s(0.5, 0.5), None, None).promoted  # no depth on the labels: min_score alone
    assert not strict.decide(s(0.02, 0.0), None, s(0.0, 0.0)).promoted  # and min_score always holds
    # once a version is served, a candidate is judged against it alone
    assert not PromotionGate(PromotionConfig()).decide(s(0.5, 0.5), s(0.6, 0.6), s(0.1, 0.1)).promoted


def test_hypothesis_scores_measure_fixed_masks_like_a_model():
    from selfsup_perception.core.learning.training.promotion import hypothesis_scores

    label = np.zeros((H, W), bool)
    label[10:20, 10:20] = True
    other = np.zeros((H, W), bool)
    other[30:40, 40:50] = True
    rgb = np.zeros((H, W, 3), np.uint8)
    pos = {"rgb": rgb, "mask": label, "action_pixel": (9.0, 15.0), "is_negative": False,  # just outside: snapped
           "hypotheses": [(other, 0.9), (label, 0.8)]}
    neg = {"rgb": rgb, "mask": np.zeros((H, W), bool), "action_pixel": (45.0, 35.0), "is_negative": True,
           "hypotheses": [(other, 0.9)]}
    got = hypothesis_scores([pos, neg])
    assert got.mask_iou == pytest.approx(1.0) and got.ap50 == pytest.approx(1.0, abs=0.02)
    assert got.negative_hit == 1.0 and (got.num_positive, got.num_negative) == (1, 1)
    assert hypothesis_scores([dict(pos, hypotheses=[])]).mask_iou == 0.0  # nothing at the action pixel
    assert hypothesis_scores([{k: v for k, v in pos.items() if k != "hypotheses"}]) is None


def test_validation_items_carry_the_depth_aware_segments(tmp_path):
    store, ids = toy_store(tmp_path / "ds", n=12)
    ds = LabeledDataset(store, "flow", (W, H), validation_fraction=0.3, bottom_up_hypotheses=True)
    ds.refresh()
    assert ds.validation and all(isinstance(it["hypotheses"], list) for it in ds.validation)
    assert all("hypotheses" not in it for it in ds.items)  # only the held-out labels need them


def test_promotion_config_rejects_bad_values():
    for bad in ({"validation_fraction": 0.0}, {"margin": -0.1}, {"min_validation_positives": 0},
                {"overlap_to_count": 0.0}, {"first_version_bar": "colour"}):
        with pytest.raises(ValueError):
            PromotionConfig(**bad)


# ---------------------------------------------------------------------------- ledger


def _versions(root, n):
    model = torch.nn.Linear(2, 1)
    for i in range(n):
        ckpt.save_checkpoint(root, task=TASK, model=model, model_config={}, step=i + 1,
                             extra_meta={"promoted": False, "validation": {}})


def test_ledger_records_promotions_and_rolls_back_atomically(tmp_path):
    _versions(tmp_path, 4)
    ledger = PromotionLedger.load(tmp_path, TASK)
    assert not ledger.exists and served_version(tmp_path, TASK) is None  # all candidates: nothing to serve
    with pytest.raises(PromotionError, match="nothing to roll back"):
        ledger.rollback()
    for v in (1, 2, 4):
        ledger.record_promotion(v, "test", {"score": 0.1 * v})
    assert served_version(tmp_path, TASK) == 4 and is_promoted(tmp_path, TASK, 2) and not is_promoted(tmp_path, TASK, 3)
    with pytest.raises(PromotionError, match="v3 is not an earlier promoted version"):
        ledger.rollback(3)
    assert ledger.rollback(-1, "regression seen by an operator") == (4, 2)
    reloaded = PromotionLedger.load(tmp_path, TASK)  # what a restarted node sees
    assert reloaded.served == 2 and reloaded.events[-1]["event"] == "rolled_back"
    assert reloaded.events[-1]["previous"] == 4 and reloaded.promoted_versions() == [1, 2, 4]
    assert reloaded.rollback(1) == (2, 1)
    with pytest.raises(PromotionError, match="no earlier one"):
        PromotionLedger.load(tmp_path, TASK).rollback()
    data = json.loads((tmp_path / TASK / "promotions.json").read_text())
    assert data["served"] == 1 and not list((tmp_path / TASK).glob(".*.tmp"))


def test_ledger_recovers_a_promotion_written_to_meta_before_a_crash(tmp_path):
    _versions(tmp_path, 1)
    PromotionLedger.load(tmp_path, TASK).record_promotion(1, "test")
    # v2 was promoted (meta.json written) but the process died before the ledger was updated
    ckpt.save_checkpoint(tmp_path, task=TASK, model=torch.nn.Linear(2, 1), model_config={}, step=2,
                         extra_meta={"promoted": True, "validation": {"score": 0.5}})
    assert served_version(tmp_path, TASK) == 2
    assert PromotionLedger.load(tmp_path, TASK).last_event(2)["reason"] == "recovered from meta.json"


def test_without_a_ledger_versions_not_marked_as_candidates_are_served(tmp_path):
    model = torch.nn.Linear(2, 1)
    ckpt.save_checkpoint(tmp_path, task=TASK, model=model, model_config={}, step=1)  # e.g. an offline run
    ckpt.save_checkpoint(tmp_path, task=TASK, model=model, model_config={}, step=2, extra_meta={"promoted": False})
    assert served_version(tmp_path, TASK) == 1


def test_extra_meta_cannot_overwrite_checkpoint_fields(tmp_path):
    with pytest.raises(ValueError, match="may not replace"):
        ckpt.save_checkpoint(tmp_path, task=TASK, model=torch.nn.Linear(2, 1), model_config={}, step=1,
                             extra_meta={"step": 5})


# ----------------------------------------------------------------- online rounds


def online_config(tmp_path, **kw):
    return OnlineTrainingConfig(dataset_dir=str(tmp_path / "ds"), checkpoint_dir=str(tmp_path / "ck"),
                                input_width=W, input_height=H, batch_size=8, min_samples=4, **kw)


def test_online_rounds_promote_better_versions_and_keep_worse_ones_as_candidates(tmp_path):
    torch.set_num_threads(1)
    store, ids = toy_store(tmp_path / "ds", n=24)
    cfg = online_config(tmp_path, steps_per_round=40, promotion=PromotionConfig(validation_fraction=0.3))
    online = OnlineInstanceTrainer(cfg, InstanceTaskConfig(mask_loss="bce"),
                                   TrainerConfig(lr=3e-3, warmup_steps=5, ema_decay=0.9))
    path = online.train_round()
    meta = ckpt.read_meta(path)
    assert meta["promoted"] is True and "first promoted version" in meta["promotion_reason"]
    held_out = validation_ids(store, 0.3)
    assert held_out >= {s for s in ids if is_validation(s, 0.3)}  # the hash's share, plus the quota if needed
    positives = sum(not store.read_label(s, "flow").is_negative for s in held_out)
    assert meta["validation"]["num_positive"] == positives >= 2 and meta["validation"]["score"] > 0.2
    assert served_version(cfg.checkpoint_dir, TASK) == 1
    served_score = meta["validation"]["score"]
    # the robot's training labels go bad (e.g. a broken labeler); validation labels stay right
    corrupt_training_labels(store, ids, 0.3)
    restarted = OnlineInstanceTrainer(cfg, InstanceTaskConfig(mask_loss="bce"),
                                      TrainerConfig(lr=3e-2, warmup_steps=0, ema_decay=0.5))
    assert restarted.resume() == 1
    for _ in range(2):
        meta = ckpt.read_meta(restarted.train_round())
        assert meta["promoted"] is False and "kept as candidate" in meta["promotion_reason"]
        assert meta["validation"]["score"] < served_score
        assert meta["served_validation"]["score"] == pytest.approx(served_score, abs=1e-6)
    assert served_version(cfg.checkpoint_dir, TASK) == 1  # the worse versions are never served
    assert [v.version for v in ckpt.list_versions(cfg.checkpoint_dir, TASK)] == [1, 2, 3]  # kept as candidates


def test_ema_weights_are_checkpointed_served_and_resumed(tmp_path):
    torch.set_num_threads(1)
    train = synthetic_items(8, height=H, width=W, seed=0)
    trainer = Trainer(InstanceSegmentationTask(), TrainerConfig(lr=1e-2, ema_decay=0.8))
    _train(trainer, train, 6)
    raw = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    ema = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].dtype.is_floating_point)
    path = trainer.save_checkpoint(tmp_path)
    model, meta = ckpt.load_model_for_inference(path)
    assert meta["ema_decay"] == 0.8
    assert all(torch.equal(model.state_dict()[k], ema[k]) for k in ema)  # what is served is the EMA
    resumed = Trainer(InstanceSegmentationTask(), TrainerConfig(lr=1e-2, ema_decay=0.8, seed=1))
    resumed.resume(tmp_path)
    assert all(torch.equal(resumed.model.state_dict()[k], raw[k]) for k in raw)  # training continues from raw
    assert all(torch.equal(resumed.ema.state_dict()[k], ema[k]) for k in ema)


def test_ema_matches_a_reference_average():
    """EMA of one parameter against the plain formula e <- d e + (1 - d) w with d = min(decay, (1+t)/(10+t))."""
    class Task:
        name = "toy"

        def build_model(self):
            return torch.nn.Linear(1, 1, bias=False)

        def model_config(self):
            return {}

        def compute_loss(self, model, batch):
            return ((model(batch["x"]) - 1.0) ** 2).mean(), {}

    trainer = Trainer(Task(), TrainerConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0,
                                            warmup_steps=0, ema_decay=0.9))
    e = float(trainer.model.weight.detach())
    for t in range(1, 8):
        trainer.train_steps([{"x": torch.ones(4, 1)}], 1)
        d = min(0.9, (1 + t) / (10 + t))
        e = d * e + (1 - d) * float(trainer.model.weight.detach())
        assert float(trainer.ema.weight.detach()) == pytest.approx(e, rel=1e-6)


def test_cyclic_schedule_warms_up_and_decays_every_round():
    trainer = Trainer(InstanceSegmentationTask(), TrainerConfig(lr=1.0, warmup_steps=2, schedule="cyclic_cosine",
                                                                total_steps=10, min_lr_ratio=0.1))
    lrs = [trainer.lr_at(s) for s in range(20)]
    assert lrs[:10] == lrs[10:]  # every cycle (round) is the same
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[2] == pytest.approx(1.0) and lrs[9] < 0.2


# ---------------------------------------------------------------------------- replay


def test_quota_holds_out_enough_positives_when_the_hash_would_not(tmp_path):
    store, ids = toy_store(tmp_path / "ds", n=12)
    by_hash = {s for s in ids if is_validation(s, 0.01)}
    ds = LabeledDataset(store, "flow", (W, H), validation_fraction=0.01, min_validation_positives=2, reserve_after=4)
    ds.refresh()
    held_out = [it for it in ds.validation]
    assert sum(not it["is_negative"] for it in held_out) >= 2 and len(held_out) >= len(by_hash)
    train_ids = [it["sample_id"] for it in ds.items]
    assert len(train_ids) >= 4 and sorted(train_ids)[:4] == sorted(ids)[:4]  # the first labels train
    # deterministic: a restart reads the labels in id order again and gives the same split
    again = LabeledDataset(store, "flow", (W, H), validation_fraction=0.01, min_validation_positives=2,
                           reserve_after=4)
    again.refresh()
    assert [it["sample_id"] for it in again.validation] == [it["sample_id"] for it in held_out]


def test_replay_balances_new_and_old_positives_and_negatives(tmp_path):
    store, ids = toy_store(tmp_path / "ds", n=30)
    ds = LabeledDataset(store, "flow", (W, H))
    ds.refresh()
    # a second batch of labels arrives: the newest refresh
    store2, new_ids = toy_store(tmp_path / "ds", n=6, seed=7)
    assert ds.refresh() == 6
    rng = np.random.default_rng(0)
    drawn = [ds._draw(rng, new_fraction=0.5, negative_fraction=0.25) for _ in range(4000)]
    items = [ds.items[i] for i in drawn]
    neg_share = np.mean([it["is_negative"] for it in items])
    new_share = np.mean([it["sample_id"] in set(new_ids) for it in items])
    natural_new = 6 / 36
    assert abs(neg_share - 0.25) < 0.03
    assert new_share > 2 * natural_new  # new labels are replayed far more than uniformly
    batch = next(ds.batches(8, rng))
    assert batch["rgb"].shape == (8, 3, H, W)


def test_recording_a_promotion_after_its_meta_was_written_records_it_once(tmp_path):
    """The trainer writes meta.json (promoted) first, then the ledger: one event, not a recovered one too."""
    _versions(tmp_path, 1)
    PromotionLedger.load(tmp_path, TASK).record_promotion(1, "test")
    ckpt.save_checkpoint(tmp_path, task=TASK, model=torch.nn.Linear(2, 1), model_config={}, step=2,
                         extra_meta={"promoted": True, "validation": {"score": 0.5}})
    PromotionLedger.load(tmp_path, TASK).record_promotion(2, "beat v1", {"score": 0.5})
    events = PromotionLedger.load(tmp_path, TASK).events
    assert [(e["version"], e["reason"], e["previous"]) for e in events] == [(1, "test", None), (2, "beat v1", 1)]


def test_online_settings_build_the_schedule_and_refuse_bad_values():
    from selfsup_perception.core.learning.training.factory import OnlineTrainerSettings

    tc = OnlineTrainerSettings(lr_schedule="cyclic_cosine", steps_per_round=20, warmup_steps=5).trainer_config()
    assert (tc.schedule, tc.total_steps, tc.warmup_steps, tc.ema_decay) == ("cyclic_cosine", 20, 5, 0.99)
    for bad in ({"lr_schedule": "sawtooth"}, {"ema_decay": 1.0}, {"validation_fraction": 0.0}):
        with pytest.raises(ValueError):
            OnlineTrainerSettings(**bad)


def test_an_unreadable_ledger_serves_nothing_with_the_reason(tmp_path):
    from selfsup_perception.core.learning.serving.model_registry import ModelNotAvailableError, ModelRegistry

    _versions(tmp_path, 1)
    (tmp_path / TASK / "promotions.json").write_text("{not json")
    with pytest.raises(ModelNotAvailableError, match="promotion ledger .* is unreadable"):
        ModelRegistry(tmp_path).served_version(TASK)
    assert not ModelRegistry(tmp_path).is_promoted(TASK, 1)
