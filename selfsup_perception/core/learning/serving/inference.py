"""Serving-side helpers (ROS-free): run a loaded model on a full-size image and return full-size results."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import cv2
import numpy as np

from selfsup_perception.core.learning.models.instance_segmentation import (
    InferenceConfig,
    Instance,
    predict_instances,
)


def segment_instances(model, rgb: np.ndarray, input_size: tuple[int, int], *,
                      score_threshold: Optional[float] = None, max_instances: Optional[int] = None,
                      config: InferenceConfig = InferenceConfig()) -> list[Instance]:
    """Instances of ``rgb`` (H, W, 3) uint8, computed at ``input_size`` = (width, height), masks at full size.

    The model was trained on images resized to ``input_size``; results are mapped back.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise ValueError(f"rgb must be a non-empty (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    iw, ih = input_size
    small = rgb if (w, h) == (iw, ih) else cv2.resize(rgb, (iw, ih), interpolation=cv2.INTER_AREA)
    scale = (w * h) / (iw * ih)
    cfg = replace(config, min_area=max(int(config.min_area / scale), 1))
    instances = predict_instances(model, small, score_threshold=score_threshold, max_instances=max_instances,
                                  config=cfg)
    if (w, h) == (iw, ih):
        return instances
    out = []
    for inst in instances:
        mask = cv2.resize(inst.mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        out.append(Instance(mask=mask, score=inst.score, box=(int(xs.min()), int(ys.min()), int(xs.max()),
                                                               int(ys.max()))))
    return out


def label_image(instances: list[Instance], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint16: 0 background, i + 1 for instance i (higher-scoring instances drawn last win)."""
    out = np.zeros(shape, dtype=np.uint16)
    for i in reversed(range(len(instances))):
        out[instances[i].mask] = i + 1
    return out


def segment_semantic(model, rgb: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 class ids of ``rgb``, predicted at ``input_size`` = (width, height) and upsampled."""
    import torch

    from selfsup_perception.core.learning.models.semantic_segmentation import predict

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise ValueError(f"rgb must be a non-empty (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, input_size, interpolation=cv2.INTER_AREA) if (w, h) != tuple(input_size) else rgb
    with torch.no_grad():
        device = next(model.parameters()).device
        classes = predict(model, torch.from_numpy(small).permute(2, 0, 1).unsqueeze(0).to(device))[0].cpu().numpy()
    return cv2.resize(classes.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
