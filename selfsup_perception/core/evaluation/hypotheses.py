"""How well a segmentation model's hypotheses cover the objects in view (simulation ground truth)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from selfsup_perception.core.labeling.quality import mask_iou


def hypothesis_recall(hypotheses: Sequence[np.ndarray], instance_mask: np.ndarray, iou_threshold: float = 0.5,
                      min_area: int = 50) -> tuple[float, int]:
    """(fraction of ground-truth objects matched by some hypothesis with IoU >= threshold, number of objects).

    Objects smaller than ``min_area`` visible pixels are not counted. No objects -> recall 1.0.
    """
    ids = [i for i in np.unique(instance_mask) if i != 0 and (instance_mask == i).sum() >= min_area]
    if not ids:
        return 1.0, 0
    found = 0
    for i in ids:
        gt = instance_mask == i
        if any(mask_iou(h, gt) >= iou_threshold for h in hypotheses):
            found += 1
    return found / len(ids), len(ids)
