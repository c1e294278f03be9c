"""Class-agnostic COCO mask AP with pycocotools.

As in ``aeitel/self_deepmask`` (``pycocoTestDemo.py``): ``COCOeval(gt, dt, 'segm')`` with a
single category, RLE masks, top-100 proposals per image. Thresholds evaluated in one pass:
IoU 0.3 (the AP@0.3 of Pathak et al.) plus the standard 0.50:0.05:0.95; ``AP`` is the COCO
mean over 0.50:0.95 only (0.3 is excluded from it), area range 'all', maxDets 100.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

_IOU_THRESHOLDS = np.array([0.3] + [0.5 + 0.05 * i for i in range(10)])


def instance_masks_from_id_map(id_map: np.ndarray) -> list[np.ndarray]:
    """(H, W) integer instance map (0 = none) -> list of (H, W) bool masks, ids ascending."""
    if id_map.ndim != 2 or not np.issubdtype(id_map.dtype, np.integer):
        raise ValueError(f"instance id map must be a 2-D integer array, got {id_map.shape} {id_map.dtype}")
    return [id_map == i for i in np.unique(id_map) if i != 0]


def _gt_masks(gt: Any) -> list[np.ndarray]:
    if isinstance(gt, np.ndarray) and gt.ndim == 2 and np.issubdtype(gt.dtype, np.integer):
        return instance_masks_from_id_map(gt)
    return [np.asarray(m, dtype=bool) for m in gt]


def _pred(p: Any) -> tuple[np.ndarray, float]:
    if isinstance(p, dict):
        return np.asarray(p["mask"], dtype=bool), float(p["score"])
    if isinstance(p, tuple):
        return np.asarray(p[0], dtype=bool), float(p[1])
    return np.asarray(p.mask, dtype=bool), float(p.score)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def evaluate_instances(
    predictions: Sequence[Sequence[Any]],
    ground_truth: Sequence[Any],
    *,
    max_detections: int = 100,
) -> dict[str, float]:
    """Class-agnostic mask AP.

    Args:
        predictions: per image, a list of predictions, each an ``Instance`` (``.mask``, ``.score``),
            a dict {'mask', 'score'} or a (mask, score) tuple; masks (H, W) bool.
        ground_truth: per image, an (H, W) integer instance map (0 = none; e.g. the simulator's
            'instance_mask') or a list of (H, W) bool masks.
        max_detections: proposals kept per image (highest score), COCO maxDets.
    Returns:
        {'AP30', 'AP50', 'AP75', 'AP'} in [0, 1] (AP = mean over IoU 0.50:0.95), plus
        'num_images', 'num_gt', 'num_predictions'. No predictions at all gives AP 0.
    Raises:
        ValueError: mismatched lengths or shapes, or no ground-truth instance at all.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} prediction lists for {len(ground_truth)} images")
    images, annotations, results = [], [], []
    ann_id = 1
    for img_id, (preds, gt) in enumerate(zip(predictions, ground_truth), start=1):
        masks = _gt_masks(gt)
        shape = masks[0].shape if masks else (gt.shape if isinstance(gt, np.ndarray) and gt.ndim == 2 else None)
        for m in masks:
            if m.shape != shape:
                raise ValueError(f"image {img_id}: ground-truth masks differ in shape")
            if not m.any():
                continue
            rle = _rle(m)
            annotations.append(
                {"id": ann_id, "image_id": img_id, "category_id": 1, "segmentation": rle,
                 "area": float(mask_utils.area(rle)), "bbox": list(mask_utils.toBbox(rle)), "iscrowd": 0}
            )
            ann_id += 1
        parsed = sorted((_pred(p) for p in preds), key=lambda ms: -ms[1])[:max_detections]
        for m, s in parsed:
            if shape is not None and m.shape != shape:
                raise ValueError(f"image {img_id}: prediction mask {m.shape} does not match ground truth {shape}")
            if shape is None:
                shape = m.shape
            results.append({"image_id": img_id, "category_id": 1, "segmentation": _rle(m), "score": s})
        h, w = shape if shape is not None else (1, 1)
        images.append({"id": img_id, "height": int(h), "width": int(w)})
    if not annotations:
        raise ValueError("no ground-truth instances: AP is undefined")
    out = {"num_images": float(len(images)), "num_gt": float(len(annotations)), "num_predictions": float(len(results))}
    if not results:
        return {"AP30": 0.0, "AP50": 0.0, "AP75": 0.0, "AP": 0.0, **out}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.params.iouThrs = _IOU_THRESHOLDS
        ev.params.maxDets = [1, 10, max_detections]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]  # (T, R, K, A, M); area 'all' = 0, maxDets index -1

    def ap(t_indices: list[int]) -> float:
        p = precision[t_indices, :, 0, 0, -1]
        p = p[p > -1]
        return float(p.mean()) if p.size else 0.0

    return {"AP30": ap([0]), "AP50": ap([1]), "AP75": ap([6]), "AP": ap(list(range(1, 11))), **out}
