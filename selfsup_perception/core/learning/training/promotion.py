"""The promotion gate: a new model version is served only if it beats the served one on held-out self-labels.

Everything here is measured on the robot's *own* labels (the labeler's masks), never on
simulator ground truth, so it works unchanged on a robot:

* **Split.** :func:`is_validation` puts a label in the held-out validation set by a hash of
  its key (``split_by`` 'scene': the scene/episode id when the label records one, else the
  sample id; 'sample': the sample id): the split is deterministic, survives restarts, never
  moves a label between sets as the dataset grows, and (by scene) keeps pushes of one scene
  on one side.
* **Scores** (:func:`validation_scores`), on the validation labels at the training input size:

  - ``mask_iou``: mean IoU between the point-conditioned mask queried at the action pixel
    (snapped into the label, as in training) and the labelled mask, over positive labels;
  - ``ap50``: COCO AP@0.5 of the model's instances against the labelled masks, one labelled
    object per image. Other objects in the image are unlabelled, so predictions that lie
    mostly outside the labelled mask (less than ``overlap_to_count`` of their area inside)
    are not counted either way; predictions on the labelled object that do not match it are
    false positives;
  - ``negative_hit``: fraction of negative labels (a push that moved nothing) where a
    predicted instance covers the action pixel (not part of the score: a rule, below);
  - ``score`` = (mask_iou + ap50) / 2.
* **Gate** (:class:`PromotionGate`): with nothing served yet, a candidate is promoted when its
  score reaches ``min_score`` (and, with ``first_version_bar`` 'bottom_up', beats the depth-aware
  bottom-up segments on the same labels by ``margin``: :func:`hypothesis_scores`; on the simple world
  those score ~0.99 on flow self-labels, so that bar would serve nothing in a 36-push demo and is
  off by default); otherwise when its score beats the served version's score on
  the *same* validation labels (re-measured now: the set grows) by ``margin``, neither
  ``mask_iou`` nor ``ap50`` falls by more than ``max(max_metric_drop, 1 / positives)``, and
  ``negative_hit`` does not rise by more than ``max(max_metric_drop, 1 / negatives)`` (one
  label's worth: on a handful of labels a finer veto would veto noise) (the validation AP cannot see false objects on
  the background; a negative label is background the robot has tested). With fewer than
  ``min_validation_positives`` positive validation labels nothing is promoted (no evidence).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from selfsup_perception.core.evaluation.coco_eval import evaluate_instances
from selfsup_perception.core.learning.models.instance_segmentation import (
    InferenceConfig,
    inference_net,
    predict_instances,
)


def is_validation(key: str, fraction: float) -> bool:
    """Deterministic split: True for about ``fraction`` of all keys (SHA-256 of ``key``)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return h / 2.0**64 < fraction


@dataclass(frozen=True)
class ValidationScores:
    mask_iou: float
    ap50: float
    negative_hit: float
    num_positive: int
    num_negative: int

    @property
    def score(self) -> float:
        return 0.5 * (self.mask_iou + self.ap50)

    def as_dict(self) -> dict[str, float]:
        """Flat {name: value} for checkpoint metadata and ModelVersion (counts as floats)."""
        return {**{k: float(v) for k, v in asdict(self).items()}, "score": float(self.score)}

    @classmethod
    def from_dict(cls, d: dict) -> "ValidationScores":
        return cls(float(d["mask_iou"]), float(d["ap50"]), float(d["negative_hit"]), int(d["num_positive"]),
                   int(d["num_negative"]))


def _snap_into_mask(mask: np.ndarray, u: float, v: float) -> tuple[float, float]:
    """The mask pixel nearest to (u, v) (the training query; the action pixel may sit just outside)."""
    vs, us = np.nonzero(mask)
    j = int(np.argmin((us - u) ** 2 + (vs - v) ** 2))
    return float(us[j]), float(vs[j])


def _summarise(positives: Sequence[dict], negatives: Sequence[dict], point_masks: Sequence[np.ndarray],
               instances: Callable[[dict], list], overlap_to_count: float) -> ValidationScores:
    """ValidationScores from the masks queried at the positives' action pixels and ``instances(item)``
    ([(mask, score)] or Instances) of every item (see the module docstring)."""
    ious: list[float] = []
    for pred, it in zip(point_masks, positives):
        label = np.asarray(it["mask"], bool)
        union = np.logical_or(pred, label).sum()
        ious.append(float(np.logical_and(pred, label).sum() / union) if union else 0.0)
    predictions, ground_truth = [], []
    for it in positives:
        label = np.asarray(it["mask"], bool)
        counted = []
        for inst in instances(it):
            mask = np.asarray(inst[0] if isinstance(inst, tuple) else inst.mask, bool)
            area = int(mask.sum())
            if area and np.logical_and(mask, label).sum() >= overlap_to_count * area:
                counted.append(inst)
        predictions.append(counted)
        ground_truth.append([label])
    ap50 = evaluate_instances(predictions, ground_truth)["AP50"] if positives else 0.0
    hits = 0
    for it in negatives:
        u, v = (int(round(c)) for c in it["action_pixel"])
        hh, ww = np.asarray(it["rgb"]).shape[:2]
        u, v = min(max(u, 0), ww - 1), min(max(v, 0), hh - 1)
        hits += any(np.asarray(inst[0] if isinstance(inst, tuple) else inst.mask)[v, u] for inst in instances(it))
    return ValidationScores(
        mask_iou=float(np.mean(ious)) if ious else 0.0, ap50=float(ap50),
        negative_hit=hits / len(negatives) if negatives else 0.0,
        num_positive=len(positives), num_negative=len(negatives))


def _split(items: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    positives = [it for it in items if not it["is_negative"] and np.asarray(it["mask"]).any()]
    return positives, [it for it in items if it["is_negative"]]


@torch.no_grad()
def validation_scores(model: torch.nn.Module, items: Sequence[dict], *, overlap_to_count: float = 0.5,
                      inference: InferenceConfig = InferenceConfig(), batch_size: int = 8) -> ValidationScores:
    """Scores of ``model`` on validation ``items`` ({'rgb', 'mask', 'action_pixel', 'is_negative'}, one size).

    The model is put in eval mode for the measurement and restored afterwards.
    """
    net = inference_net(model)
    was_training = net.training
    net.eval()
    try:
        device = next(net.parameters()).device
        positives, negatives = _split(items)
        point_masks: list[np.ndarray] = []
        for start in range(0, len(positives), batch_size):
            chunk = positives[start:start + batch_size]
            rgb = torch.from_numpy(np.stack([it["rgb"] for it in chunk])).permute(0, 3, 1, 2).to(device)  # (B,3,H,W)
            h, w = rgb.shape[-2:]
            queries = torch.tensor([[_snap_into_mask(np.asarray(it["mask"]), *it["action_pixel"])] for it in chunk],
                                   dtype=torch.float32, device=device)  # (B, 1, 2)
            out = net(rgb)
            logits = net.mask_logits(out["embedding"], queries, (h, w))  # (B, 1, h4, w4)
            full = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[:, 0] > 0  # (B, H, W)
            point_masks.extend(full.cpu().numpy())
        return _summarise(positives, negatives, point_masks,
                          lambda it: predict_instances(net, it["rgb"], config=inference), overlap_to_count)
    finally:
        net.train(was_training)


def hypothesis_scores(items: Sequence[dict], *, overlap_to_count: float = 0.5) -> Optional[ValidationScores]:
    """The same scores for fixed hypotheses: ``item['hypotheses']`` = [(mask, score)] at the item's size (the
    depth-aware bottom-up segments, what the robot believes before any model).

    The mask "queried" at the action pixel is the highest-scoring hypothesis containing the (snapped) action
    pixel, none: an empty mask. None when any item lacks hypotheses (e.g. no depth).
    """
    if not items or any(it.get("hypotheses") is None for it in items):
        return None
    positives, negatives = _split(items)
    point_masks = []
    for it in positives:
        u, v = (int(round(c)) for c in _snap_into_mask(np.asarray(it["mask"]), *it["action_pixel"]))
        hits = [(score, m) for m, score in it["hypotheses"] if m[v, u]]
        point_masks.append(max(hits, key=lambda t: t[0])[1] if hits else np.zeros_like(np.asarray(it["mask"], bool)))
    return _summarise(positives, negatives, point_masks, lambda it: list(it["hypotheses"]), overlap_to_count)


@dataclass(frozen=True)
class PromotionConfig:
    validation_fraction: float = 0.2  # share of labels (by scene/sample hash) held out for validation
    margin: float = 0.01  # a candidate's score must beat the served one's by this much
    max_metric_drop: float = 0.02  # ... and neither mask_iou nor ap50 may fall by more than this
    min_validation_positives: int = 2  # no promotion on less evidence
    min_score: float = 0.05  # the first promoted version must at least reach this score
    overlap_to_count: float = 0.5  # see module docstring (ap50)
    # 'scene': hash the label's scene id (all pushes of a scene on one side; validation fills a scene at a
    # time), 'sample': hash the sample id (validation fills steadily; pushes of one scene on both sides)
    split_by: str = "scene"
    # the first version's bar: 'min_score' (its score reaches min_score) or 'bottom_up' (it also beats the
    # depth-aware bottom-up segments, the robot's hypotheses without a model, on the same labels by margin)
    first_version_bar: str = "min_score"

    def __post_init__(self) -> None:
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.margin < 0 or self.max_metric_drop < 0 or self.min_validation_positives < 1:
            raise ValueError("margin and max_metric_drop must be >= 0 and min_validation_positives >= 1")
        if not 0.0 < self.overlap_to_count <= 1.0:
            raise ValueError(f"overlap_to_count must be in (0, 1], got {self.overlap_to_count}")
        if self.split_by not in ("scene", "sample"):
            raise ValueError(f"split_by must be 'scene' or 'sample', got {self.split_by!r}")
        if self.first_version_bar not in ("min_score", "bottom_up"):
            raise ValueError(f"first_version_bar must be 'min_score' or 'bottom_up', got {self.first_version_bar!r}")


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    reason: str
    candidate: Optional[ValidationScores]
    served: Optional[ValidationScores] = None  # the served version's scores on the same labels
    bottom_up: Optional[ValidationScores] = None  # the depth-aware bottom-up segments' scores on the same labels


class PromotionGate:
    """Decides whether a candidate replaces the served version (see module docstring)."""

    def __init__(self, config: PromotionConfig = PromotionConfig()) -> None:
        self.config = config

    def decide(self, candidate: ValidationScores, served: Optional[ValidationScores],
               bottom_up: Optional[ValidationScores] = None) -> PromotionDecision:
        """``bottom_up``: the depth-aware segments' scores on the same labels (the first version's bar with
        ``first_version_bar`` 'bottom_up'; otherwise only reported in the reason)."""
        c = self.config
        if candidate.num_positive < c.min_validation_positives:
            return PromotionDecision(False, f"kept as candidate: {candidate.num_positive} positive validation "
                                            f"labels, {c.min_validation_positives} needed", candidate, served,
                                     bottom_up)
        if served is None:
            versus = "" if bottom_up is None else f" (depth-aware segments: {bottom_up.score:.3f})"
            if candidate.score < c.min_score:
                return PromotionDecision(False, f"kept as candidate: score {candidate.score:.3f} < min_score "
                                                f"{c.min_score:.3f}{versus}", candidate, None, bottom_up)
            if c.first_version_bar == "bottom_up" and bottom_up is not None \
                    and candidate.score < bottom_up.score + c.margin:
                return PromotionDecision(False, f"kept as candidate: score {candidate.score:.3f} does not beat the "
                                                f"depth-aware segments' {bottom_up.score:.3f} by {c.margin}",
                                         candidate, None, bottom_up)
            return PromotionDecision(True, f"first promoted version: score {candidate.score:.3f} >= "
                                           f"{c.min_score:.3f}{versus}", candidate, None, bottom_up)
        # a veto finer than one label's worth (~1/n of a mean over n labels) would veto noise
        tol = max(c.max_metric_drop, 1.0 / candidate.num_positive)
        for name in ("mask_iou", "ap50"):
            new, old = getattr(candidate, name), getattr(served, name)
            if new < old - tol:
                return PromotionDecision(False, f"kept as candidate: {name} {new:.3f} fell below the served "
                                                f"{old:.3f} by more than {tol:.3f}", candidate, served)
        neg_tol = max(c.max_metric_drop, 1.0 / candidate.num_negative) if candidate.num_negative else 0.0
        if candidate.num_negative and candidate.negative_hit > served.negative_hit + neg_tol:
            return PromotionDecision(False, f"kept as candidate: it sees an object at {candidate.negative_hit:.2f} of "
                                            f"the pushes that moved nothing (served: {served.negative_hit:.2f})",
                                     candidate, served)
        if candidate.score < served.score + c.margin:
            return PromotionDecision(False, f"kept as candidate: score {candidate.score:.3f} does not beat the "
                                            f"served {served.score:.3f} by {c.margin}", candidate, served)
        return PromotionDecision(True, f"promoted: score {candidate.score:.3f} > served {served.score:.3f} + "
                                       f"{c.margin}", candidate, served)
