"""Which object to push next: the hypothesis a push would teach most about (ROS-free, numpy only).

Issue 14, build item 4 ("interaction that learns most per push"); issue 11, item 5 (depth-aware
bottom-up segments are the robot's first hypotheses, before any model exists).

The robot holds two sets of hypotheses about the objects in its view:

* **depth segments** (:func:`~selfsup_perception.core.evaluation.bottom_up.depth_bottom_up`): regions
  standing above the table, split at depth jumps. They exist from the first push on.
* **model instances**: the served segmentation model's masks with their scores (once a model is served).

A push tests one hypothesis: the flow label says which pixels moved together, i.e. what the object
under the finger really was. :func:`hypothesis_candidates` merges both sets into one list and gives
each hypothesis a *confidence*, how much the two sources agree on it:

* a depth segment: ``max_m IoU(segment, m) * score(m)`` over the model's instances (0 without a model);
* a model instance: ``score * max_d IoU(instance, d)`` over the depth segments (a mask nothing in the
  depth image supports is not trusted, e.g. a blotch on the table).

and an *uncertainty* ``1 - confidence``. A hypothesis on which depth and model disagree (a depth
segment the model splits in two, a model mask that cuts an object in half, an object the model does
not see) is the one whose label would correct the model most. :func:`rank_hypotheses` orders the
hypotheses for a policy:

* ``uncertain``: most uncertain first (the flow label tests the disagreement);
* ``confident``: most confident first (the label confirms what the model already believes: the
  control that should teach least);
* ``random``: a random order (the control of the papers).

Ties (e.g. before any model exists, every hypothesis has confidence 0) are broken at random with the
given generator, so before a model the three policies choose alike: a random depth segment.
Duplicates (a model instance with IoU >= ``duplicate_iou`` with a depth segment) are folded into the
depth segment: the robot pushes an object, not a mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

POLICIES = ("uncertain", "random", "confident")


@dataclass(frozen=True)
class Hypothesis:
    """One object hypothesis: its mask, where it came from and how much depth and model agree on it."""

    mask: np.ndarray  # (H, W) bool
    source: str  # 'depth' | 'model'
    confidence: float  # in [0, 1]
    score: float = 1.0  # the source's own score (model score; depth support)

    @property
    def uncertainty(self) -> float:
        return 1.0 - self.confidence


def _areas(masks: Sequence[np.ndarray]) -> np.ndarray:
    return np.array([int(np.count_nonzero(m)) for m in masks], dtype=np.int64)


def iou_matrix(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """(len(a), len(b)) mask IoU; 0 where both masks are empty."""
    out = np.zeros((len(a), len(b)))
    if not len(a) or not len(b):
        return out
    fa = np.stack([np.asarray(m, bool).ravel() for m in a]).astype(np.float32)  # (A, HW)
    fb = np.stack([np.asarray(m, bool).ravel() for m in b]).astype(np.float32)  # (B, HW)
    inter = fa @ fb.T
    union = _areas(a)[:, None] + _areas(b)[None, :] - inter
    np.divide(inter, union, out=out, where=union > 0)
    return out


def hypothesis_candidates(depth_segments: Sequence[tuple[np.ndarray, float]],
                          model_instances: Sequence[tuple[np.ndarray, float]] = (), *,
                          duplicate_iou: float = 0.5, min_area: int = 1) -> list[Hypothesis]:
    """Depth segments and model instances as one list of :class:`Hypothesis` (see module docstring).

    ``depth_segments`` and ``model_instances`` are (mask, score) pairs of one image (masks (H, W), same
    shape; model scores in [0, 1]). Masks smaller than ``min_area`` pixels are dropped.
    """
    depth = [(np.asarray(m, bool), float(s)) for m, s in depth_segments if np.count_nonzero(m) >= min_area]
    model = [(np.asarray(m, bool), float(np.clip(s, 0.0, 1.0))) for m, s in model_instances
             if np.count_nonzero(m) >= min_area]
    shapes = {m.shape for m, _ in depth + model}
    if len(shapes) > 1:
        raise ValueError(f"hypothesis masks differ in shape: {sorted(shapes)}")
    iou = iou_matrix([m for m, _ in depth], [m for m, _ in model])  # (D, M)
    mscore = np.array([s for _, s in model])
    out = []
    for i, (m, s) in enumerate(depth):
        conf = float(np.max(iou[i] * mscore)) if len(model) else 0.0
        out.append(Hypothesis(m, "depth", conf, s))
    for j, (m, s) in enumerate(model):
        best = float(np.max(iou[:, j])) if len(depth) else 0.0
        if best >= duplicate_iou:
            continue  # the same object as a depth segment: its agreement is that segment's confidence
        out.append(Hypothesis(m, "model", s * best, s))
    return out


def rank_hypotheses(hypotheses: Sequence[Hypothesis], policy: str, rng: np.random.Generator) -> list[int]:
    """Indices of ``hypotheses`` in the order ``policy`` would push them (see module docstring)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown push selection policy {policy!r}; use one of {POLICIES}")
    n = len(hypotheses)
    tie = rng.random(n)  # drawn for every policy, so the generator advances alike
    if policy == "random":
        return [int(i) for i in np.argsort(tie)]
    conf = np.array([h.confidence for h in hypotheses])
    key = -conf if policy == "confident" else conf  # lexsort: last key is primary, ascending
    return [int(i) for i in np.lexsort((tie, key))]


def select_masks(depth_segments: Sequence[tuple[np.ndarray, float]],
                 model_instances: Sequence[tuple[np.ndarray, float]], policy: str, rng: np.random.Generator,
                 *, min_area: int = 1) -> list[Hypothesis]:
    """The hypotheses of one image in the order ``policy`` would push them (the planner tries them in turn)."""
    hyps = hypothesis_candidates(depth_segments, model_instances, min_area=min_area)
    return [hyps[i] for i in rank_hypotheses(hyps, policy, rng)]
