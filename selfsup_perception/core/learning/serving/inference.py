"""Serving-side helpers (ROS-free): run a loaded model on a full-size image and return full-size results."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import cv2
import numpy as np
import torch

from selfsup_perception.core.evaluation.bottom_up import depth_bottom_up
from selfsup_perception.core.evaluation.hypotheses import combine_with_depth
from selfsup_perception.core.learning.device import autocast
from selfsup_perception.core.learning.serving.mask_refinement import MaskRefinementConfig, gray_image, refine_mask
from selfsup_perception.core.learning.models.instance_segmentation import (
    InferenceConfig,
    Instance,
    predict_instances,
)

OUTPUT_STRIDE = 4  # of the instance network's masks (InstanceSegConfig.output_stride default)


def model_device(model) -> torch.device:
    """The device of a model's parameters (CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def segment_instances(model, rgb: np.ndarray, input_size: tuple[int, int], *,
                      score_threshold: Optional[float] = None, max_instances: Optional[int] = None,
                      config: InferenceConfig = InferenceConfig(),
                      refinement: Optional[MaskRefinementConfig] = None) -> list[Instance]:
    """Instances of ``rgb`` (H, W, 3) uint8, computed at ``input_size`` = (width, height), masks at full size.

    The model was trained on images resized to ``input_size``; results are mapped back, by nearest
    neighbour, or with ``refinement`` by the edge-aware refinement of :mod:`.mask_refinement`.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise ValueError(f"rgb must be a non-empty (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    iw, ih = input_size
    small = rgb if (w, h) == (iw, ih) else cv2.resize(rgb, (iw, ih), interpolation=cv2.INTER_AREA)
    scale = (w * h) / (iw * ih)
    cfg = replace(config, min_area=max(int(config.min_area / scale), 1))
    with torch.no_grad(), autocast(model_device(model)):
        instances = predict_instances(model, small, score_threshold=score_threshold, max_instances=max_instances,
                                      config=cfg)
    if (w, h) == (iw, ih):
        return instances
    out = []
    gray = gray_image(rgb) if refinement is not None else None
    cell_px = OUTPUT_STRIDE * max(w / iw, h / ih)  # one cell of the network's output grid, in full-size pixels
    for inst in instances:
        if refinement is not None:
            mask = refine_mask(inst.mask, gray, cell_px, refinement)
        else:
            mask = cv2.resize(inst.mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        if mask.any():
            out.append(_instance(mask, inst.score))
    return out


def _instance(mask: np.ndarray, score: float) -> Instance:
    ys, xs = np.nonzero(mask)
    return Instance(mask=mask, score=float(score), box=(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())))


def segment_rgbd(model, frame, input_size: Optional[tuple[int, int]], *, score_threshold: float = 0.3,
                 max_instances: int = 20, refinement: Optional[MaskRefinementConfig] = None
                 ) -> tuple[list[Instance], str]:
    """Instances of one RGB-D frame (``RgbdFrame``): the model's instances combined with the depth-aware
    bottom-up segments (:func:`~selfsup_perception.core.evaluation.hypotheses.combine_with_depth`: depth
    separates objects from the table, the model splits objects that touch at one depth and adds objects depth
    does not see). ``model`` None: the depth segments alone (what a robot has before any model).

    Returns (instances, note): highest score first, at most ``max_instances`` with score >= ``score_threshold``;
    ``note`` says what depth contributed, or why nothing (e.g. no table plane in view: the model's instances
    alone). On the held-out scenes of novel objects this is what the demo reports as "+ depth-aware segments".
    """
    model_instances = [] if model is None else segment_instances(
        model, frame.rgb, input_size, score_threshold=score_threshold, max_instances=max_instances,
        refinement=refinement)
    depth = depth_bottom_up(frame)
    if not depth.instances:
        return model_instances, f"no depth-aware segments ({depth.reason or 'no object above the table'})"
    combined = [(m, s) for m, s in combine_with_depth(model_instances, depth.instances) if s >= score_threshold]
    out = [_instance(m, s) for m, s in combined[:max_instances] if m.any()]
    return out, f"combined with {len(depth.instances)} depth-aware segments"


def label_image(instances: list[Instance], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint16: 0 background, i + 1 for instance i (higher-scoring instances drawn last win)."""
    out = np.zeros(shape, dtype=np.uint16)
    for i in reversed(range(len(instances))):
        out[instances[i].mask] = i + 1
    return out


def segment_semantic(model, rgb: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 class ids of ``rgb``, predicted at ``input_size`` = (width, height) and upsampled.

    The image goes to the model's device (float16 autocast on CUDA); the classes come back to the CPU.
    """
    from selfsup_perception.core.learning.models.semantic_segmentation import predict

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise ValueError(f"rgb must be a non-empty (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, input_size, interpolation=cv2.INTER_AREA) if (w, h) != tuple(input_size) else rgb
    device = model_device(model)
    x = torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1).unsqueeze(0).to(device)  # (1, 3, h, w) uint8
    with torch.no_grad(), autocast(device):
        classes = predict(model, x)[0].cpu().numpy()
    return cv2.resize(classes.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
