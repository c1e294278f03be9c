"""Object hypotheses: how well a model's cover the objects in view (simulation ground truth), and a
model's instances combined with the depth-aware bottom-up segments (:func:`combine_with_depth`)."""

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


def combine_with_depth(model_instances: Sequence, depth_segments: Sequence[tuple[np.ndarray, float]], *,
                       min_inside: float = 0.8, min_part: float = 0.15, max_part: float = 0.8,
                       free_overlap: float = 0.1, free_weight: float = 0.5) -> list[tuple[np.ndarray, float]]:
    """Object hypotheses from a model's instances and the depth-aware bottom-up segments of the same image.

    Depth separates objects from the table far better than colour (issue 11) but merges touching
    objects at the same depth; a model learned from pushes can tell them apart. So:

    * a depth segment D stays one object unless the model splits it: two or more model instances lie
      mostly inside D (``min_inside`` of their area), each between ``min_part`` and ``max_part`` of D
      (a part of it, not the whole) -> those instances clipped to D, scored
      ``model score * D's score``;
    * otherwise D, with its own score;
    * a model instance that overlaps no depth segment (IoU <= ``free_overlap`` with each) is an object
      depth did not see (flat, or without valid depth): kept with ``free_weight * model score``.

    ``model_instances``: Instances (``.mask``, ``.score``) or (mask, score) pairs; masks (H, W) bool of one
    shape. Returns (mask, score) pairs, highest score first.
    """
    model = [(np.asarray(m.mask if hasattr(m, "mask") else m[0], bool),
              float(m.score if hasattr(m, "score") else m[1])) for m in model_instances]
    depth = [(np.asarray(m, bool), float(s)) for m, s in depth_segments]
    out: list[tuple[np.ndarray, float]] = []
    for d, sd in depth:
        area = int(d.sum())
        if not area:
            continue
        parts = []
        for m, sm in model:
            inter = int(np.logical_and(m, d).sum())
            am = int(m.sum())
            if am and inter >= min_inside * am and min_part * area <= inter <= max_part * area:
                parts.append((np.logical_and(m, d), sm))
        if len(parts) >= 2:
            out.extend((p, sm * sd) for p, sm in parts)
        else:
            out.append((d, sd))
    for m, sm in model:
        am = int(m.sum())
        if not am:
            continue
        if all(mask_iou(m, d) <= free_overlap for d, _ in depth):
            out.append((m, free_weight * sm))
    out.sort(key=lambda t: -t[1])
    return out
