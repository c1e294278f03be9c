import numpy as np

from selfsup_perception.core.evaluation.hypotheses import hypothesis_recall


def test_recall_counts_objects_matched_at_iou_half():
    gt = np.zeros((20, 20), np.uint16)
    gt[0:10, 0:10] = 1
    gt[12:20, 12:20] = 2
    good = gt == 1
    shifted = np.roll(gt == 2, 5, axis=1)  # IoU 3/13 with object 2
    assert hypothesis_recall([good, shifted], gt, min_area=10) == (0.5, 2)
    assert hypothesis_recall([], gt, min_area=10) == (0.0, 2)
    assert hypothesis_recall([gt == 1, gt == 2], gt, min_area=10) == (1.0, 2)
    assert hypothesis_recall([good], np.zeros((20, 20), np.uint16)) == (1.0, 0)
