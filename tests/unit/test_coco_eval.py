"""Class-agnostic COCO mask AP (pycocotools) on hand-built cases."""

import numpy as np
import pytest

from selfsup_perception.core.evaluation import evaluate_instances, instance_masks_from_id_map
from selfsup_perception.core.learning.models.instance_segmentation import Instance


def scene() -> np.ndarray:
    ids = np.zeros((30, 40), np.uint16)
    ids[2:10, 2:10] = 1
    ids[15:25, 20:36] = 2
    return ids


def test_perfect_predictions_score_one():
    ids = scene()
    preds = [[Instance(mask=m, score=0.9, box=(0, 0, 0, 0)) for m in instance_masks_from_id_map(ids)]]
    r = evaluate_instances(preds, [ids])
    assert r["AP30"] == pytest.approx(1.0) and r["AP50"] == pytest.approx(1.0)
    assert r["AP75"] == pytest.approx(1.0) and r["AP"] == pytest.approx(1.0)
    assert r["num_gt"] == 2 and r["num_predictions"] == 2


def test_empty_predictions_score_zero():
    r = evaluate_instances([[], []], [scene(), scene()])
    assert r["AP30"] == 0.0 and r["AP50"] == 0.0 and r["AP"] == 0.0


def test_half_overlap_counts_at_iou_half_only():
    ids = scene()
    half = np.zeros_like(ids, dtype=bool)
    half[2:10, 2:6] = True  # covers half of object 1: IoU exactly 0.5
    r = evaluate_instances([[{"mask": half, "score": 0.8}]], [[ids == 1]])
    assert r["AP30"] == pytest.approx(1.0) and r["AP50"] == pytest.approx(1.0)
    assert r["AP75"] == 0.0
    assert r["AP"] == pytest.approx(0.1)  # matched at 0.50 only, of the ten thresholds 0.50:0.95


def test_one_of_two_objects_found_gives_recall_half():
    ids = scene()
    r = evaluate_instances([[(ids == 2, 0.7)]], [ids])
    # precision 1 for recall <= 0.5: 51 of COCO's 101 recall points
    assert r["AP50"] == pytest.approx(51 / 101)


def test_false_positive_ranked_first_lowers_ap_and_ranking_matters():
    ids = scene()
    fp = np.zeros_like(ids, dtype=bool)
    fp[26:29, 0:5] = True
    good = [(ids == 1, 0.9), (ids == 2, 0.8), (fp, 0.1)]
    bad = [(ids == 1, 0.5), (ids == 2, 0.4), (fp, 0.95)]
    assert evaluate_instances([good], [ids])["AP50"] == pytest.approx(1.0)
    assert evaluate_instances([bad], [ids])["AP50"] < 0.8


def test_input_validation():
    with pytest.raises(ValueError, match="prediction lists"):
        evaluate_instances([[]], [scene(), scene()])
    with pytest.raises(ValueError, match="no ground-truth"):
        evaluate_instances([[]], [np.zeros((5, 5), np.uint16)])
    with pytest.raises(ValueError, match="does not match"):
        evaluate_instances([[(np.ones((3, 3), bool), 0.5)]], [scene()])
