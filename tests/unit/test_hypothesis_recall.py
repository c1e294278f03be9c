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


def _box(x0, y0, x1, y1, shape=(40, 60)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_the_model_splits_a_depth_segment_that_merges_two_touching_objects():
    from selfsup_perception.core.evaluation.hypotheses import combine_with_depth

    merged, lone = _box(30, 10, 50, 20), _box(2, 2, 12, 12)  # depth: two touching objects as one, and one alone
    left, right = _box(30, 10, 40, 20), _box(40, 10, 50, 20)
    out = combine_with_depth([(left, 0.8), (right, 0.6)], [(merged, 0.9), (lone, 0.7)])
    masks = [m for m, _ in out]
    assert len(out) == 3 and any(np.array_equal(m, left) for m in masks) and any(np.array_equal(m, right) for m in masks)
    assert any(np.array_equal(m, lone) for m in masks)  # the model saw nothing there: depth's segment stays
    assert [round(s, 2) for _, s in out] == [0.72, 0.7, 0.54]  # model score x segment score; sorted


def test_depth_segments_stay_where_the_model_agrees_or_only_cuts_a_piece():
    from selfsup_perception.core.evaluation.hypotheses import combine_with_depth

    seg = _box(30, 10, 50, 20)
    # the model's mask matches the segment: one object, depth's mask and score
    assert [(m.sum(), s) for m, s in combine_with_depth([(_box(30, 10, 49, 20), 0.9)], [(seg, 0.8)])] == [(200, 0.8)]
    # one piece inside is not a split
    assert len(combine_with_depth([(_box(30, 10, 36, 20), 0.9)], [(seg, 0.8)])) == 1
    # a model mask away from every segment is an object depth missed, at half its score
    out = combine_with_depth([(_box(0, 30, 8, 38), 0.6)], [(seg, 0.8)])
    assert [s for _, s in out] == [0.8, 0.3]
    assert combine_with_depth([], []) == []
