"""report.json of the demo: the keys other tools read, computed from checkpoints and the promotion ledger."""

import json

import pytest
import torch

from selfsup_perception.cli.demo_report import build_report, promotion_table, versions_to_evaluate
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.serving.promotions import PromotionLedger

TASK = "instance_segmentation"


def ap(v):
    return {"AP30": v + 0.1, "AP50": v, "AP75": v / 2, "AP": v / 3}


def test_report_lists_every_version_with_gate_and_ap(tmp_path):
    model = torch.nn.Linear(2, 1)
    for i, (promoted, score) in enumerate([(True, 0.3), (False, 0.2), (True, 0.5), (False, 0.1)], start=1):
        ckpt.save_checkpoint(tmp_path, task=TASK, model=model, model_config={}, step=20 * i, dataset_size=4 + i,
                             extra_meta={"promoted": promoted, "validation": {"score": score}})
        if promoted:
            PromotionLedger.load(tmp_path, TASK).record_promotion(i, "test")
    ledger = PromotionLedger.load(tmp_path, TASK)
    ledger.rollback(1, "test")
    versions = [{"version": v.version, "meta": v.meta} for v in ckpt.list_versions(tmp_path, TASK)]
    evaluated = {1: ap(0.20), 3: ap(0.17), 4: ap(0.30)}
    report = build_report(versions, evaluated, PromotionLedger.load(tmp_path, TASK).events, 1, ap(0.14),
                          eval_scenes=12, seed=10_000)
    report = json.loads(json.dumps(report))  # what other tools read back
    assert set(report) >= {"versions", "served_version", "served_ap50", "bottom_up_ap50"}
    rows = report["versions"]
    assert [r["version"] for r in rows] == [1, 2, 3, 4]
    assert set(rows[0]) == {"version", "step", "labels", "validation", "promoted", "ap30", "ap50", "ap75",
                            "ap50_with_depth"}
    assert [r["promoted"] for r in rows] == [True, False, True, False]
    assert rows[1]["ap50"] is None and rows[2]["ap50"] == pytest.approx(0.17)
    assert rows[2]["labels"] == 7 and rows[2]["step"] == 60 and rows[2]["validation"] == {"score": 0.5}
    assert report["served_version"] == 1 and report["served_ap50"] == pytest.approx(0.20)
    assert report["bottom_up_ap50"] == pytest.approx(0.14)
    # served AP: v1 0.20 -> v3 0.17 (promotion, a drop of 0.03) -> v1 (rollback, not a promotion)
    assert [s["version"] for s in report["served_sequence"]] == [1, 3, 1]
    assert report["max_served_ap50_drop"] == pytest.approx(0.03)
    table = promotion_table(report)
    assert "served at the end: v1" in table and "candidate" in table


def test_report_carries_both_baselines_and_the_served_version_with_depth(tmp_path):
    model = torch.nn.Linear(2, 1)
    for i in (1, 2):
        ckpt.save_checkpoint(tmp_path, task=TASK, model=model, model_config={}, step=20 * i,
                             extra_meta={"promoted": True, "validation": {"score": 0.1 * i}})
        PromotionLedger.load(tmp_path, TASK).record_promotion(i, "test")
    versions = [{"version": v.version, "meta": v.meta} for v in ckpt.list_versions(tmp_path, TASK)]
    report = build_report(versions, {1: ap(0.10), 2: ap(0.15)}, PromotionLedger.load(tmp_path, TASK).events, 2,
                          ap(0.80), eval_scenes=12, seed=0, with_depth={1: ap(0.82), 2: ap(0.79)},
                          baselines={"colour": ap(0.14), "depth": ap(0.80)})
    report = json.loads(json.dumps(report))
    assert report["bottom_up_colour_ap50"] == pytest.approx(0.14) and report["bottom_up_depth_ap50"] == 0.8
    assert report["served_with_depth_ap50"] == pytest.approx(0.79)
    assert report["max_served_ap50_drop"] == 0.0  # 0.10 -> 0.15
    assert report["max_served_with_depth_ap50_drop"] == pytest.approx(0.03)  # 0.82 -> 0.79
    assert [r["ap50_with_depth"] for r in report["versions"]] == [0.82, 0.79]
    assert "with depth 0.790" in promotion_table(report)


def test_versions_to_evaluate_include_every_promoted_and_the_served_one():
    assert versions_to_evaluate(list(range(1, 21)), [3, 7, 8], 7, max_spread=3) == [1, 3, 7, 8, 11, 20]
    assert versions_to_evaluate([], [], None) == []


def test_camera_move_summary_reads_the_pair_store_and_the_auxiliary_checkpoints(tmp_path):
    from view_factory import add_plane_view

    from selfsup_perception.cli.demo_report import camera_move_summary, camera_move_text
    from selfsup_perception.core.registration.pair_store import PairStore

    store = PairStore(tmp_path / "reg")
    for tx in (0.0, 0.1, 0.2):
        add_plane_view(store, tx, with_regions=False)
    model = torch.nn.Linear(2, 1)
    for step, pre in ((20, True), (40, True), (50, False)):
        ckpt.save_checkpoint(tmp_path / "ck", task="descriptors", model=model, model_config={}, step=step,
                             extra_meta={"pretraining": pre, "pretraining_steps": min(step, 40), "view_pairs": 3})
    ckpt.save_checkpoint(tmp_path / "ck", task=TASK, model=model, model_config={}, step=20,
                         extra_meta={"shared_backbone": {"tasks": [TASK, "descriptors"],
                                                         "steps": {TASK: 20, "descriptors": 50}}})
    records = [{"scene": 0, "views_added": 2, "seconds": 10.0}, {"scene": 3, "views_added": 1, "seconds": 5.5}]
    s = camera_move_summary(records, tmp_path / "reg", tmp_path / "ck", ["descriptors"])
    assert (s["scenes"], s["views"], s["view_pairs"], s["seconds"]) == (2, 3, 3, 15.5)
    assert s["auxiliary"]["descriptors"] == {"versions": 3, "steps": 50, "pretraining_steps": 40, "view_pairs": 3}
    assert s["instance_first_version"] == 1
    assert s["instance_first_version_backbone_steps"] == {TASK: 20, "descriptors": 50}
    json.dumps(s)  # report.json
    assert "50 steps on the shared backbone (40 before enough labels existed)" in camera_move_text(s)
