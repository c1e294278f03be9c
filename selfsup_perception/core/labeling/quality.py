"""Label quality against ground truth (simulation): IoU and keep/discard precision and recall.

Definitions (shared by ``bench/label_quality.py`` and the demo):

* mIoU kept: mean IoU with the ground-truth mask of the moved object over labels that
  were kept and not negative.
* 'good' = IoU >= 0.5, computed on the candidate mask even when the labeler discarded it;
  P = good & kept / kept, R = good & kept / good.
* neg ok = labelled negative when nothing moved; neg wrong = labelled negative although
  an object moved (an empty mask, so outside R's denominator).

Which object is "the moved object" when a push moves several (a chain, touching clutter, an object
that slid on its own): :func:`pushed_instance` -- the moved object under the push's action pixel (the
contact the robot aimed at), else the moved object nearest to it. The benches also report the older
definition, the object whose position changed most, which in chained pushes is often an object the
pushed one ran into, or one that toppled far away (``docs/labeling.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from selfsup_perception.core.types import MaskLabel


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def pushed_instance(instance_before: np.ndarray, moved_ids: Iterable[int],
                    action_pixel: tuple[float, float]) -> tuple[int, float]:
    """(id, distance px) of the pushed object: of the objects that moved (``moved_ids``), the one whose
    before-image mask (``instance_before``, (H, W) instance ids) lies under the action pixel (u, v) --
    distance 0 -- else the one whose mask comes nearest to it. (0, inf) when no moved object is in view."""
    moved = sorted({int(k) for k in moved_ids} - {0})
    h, w = instance_before.shape
    u, v = int(round(float(action_pixel[0]))), int(round(float(action_pixel[1])))
    if 0 <= u < w and 0 <= v < h and int(instance_before[v, u]) in moved:
        return int(instance_before[v, u]), 0.0
    best, best_d = 0, float("inf")
    for i in moved:
        ys, xs = np.nonzero(instance_before == i)
        if len(ys):
            d = float(np.min(np.hypot(xs - u, ys - v)))
            if d < best_d:
                best, best_d = i, d
    return best, best_d


@dataclass
class LabelQuality:
    """Accumulates one labeler's labels against ground truth."""

    good_iou: float = 0.5
    ious_kept: list = field(default_factory=list)
    good: list = field(default_factory=list)
    kept: list = field(default_factory=list)
    neg_ok: int = 0
    neg_wrong: int = 0
    n: int = 0

    def add(self, label: MaskLabel, gt_mask: Optional[np.ndarray]) -> None:
        """``gt_mask``: the moved object's mask in the before image, or None if nothing moved."""
        self.n += 1
        if gt_mask is None:
            self.neg_ok += int(label.is_negative)
            return
        if label.is_negative:
            self.neg_wrong += 1
        v = mask_iou(label.mask, gt_mask)
        k = bool(label.kept and not label.is_negative)
        self.good.append(v >= self.good_iou)
        self.kept.append(k)
        if k:
            self.ious_kept.append(v)

    @property
    def n_moved(self) -> int:
        return len(self.good)

    def summary(self) -> dict:
        good, kept = np.array(self.good, bool), np.array(self.kept, bool)
        tp = int((good & kept).sum())
        return {
            "n": self.n, "moved": self.n_moved, "kept": int(kept.sum()),
            "miou_kept": float(np.mean(self.ious_kept)) if self.ious_kept else float("nan"),
            "precision": tp / kept.sum() if kept.sum() else float("nan"),
            "recall": tp / good.sum() if good.sum() else float("nan"),
            "neg_ok": self.neg_ok, "neg_wrong": self.neg_wrong,
        }


def label_quality_table(rows: Iterable[tuple[str, MaskLabel, Optional[np.ndarray]]]) -> str:
    """A printable table of (labeler name, label, gt mask or None) rows, one line per labeler."""
    stats: dict[str, LabelQuality] = {}
    for name, label, gt in rows:
        stats.setdefault(name, LabelQuality()).add(label, gt)
    lines = [f"  {'labeler':17s} {'n':>3s} {'moved':>5s} {'kept':>4s} {'mIoU kept':>9s} {'P':>5s} {'R':>5s} "
             f"{'neg ok':>6s} {'neg wrong':>9s}"]
    for name, q in stats.items():
        s = q.summary()
        lines.append(f"  {name:17s} {s['n']:3d} {s['moved']:5d} {s['kept']:4d} {s['miou_kept']:9.3f} "
                     f"{s['precision']:5.2f} {s['recall']:5.2f} {s['neg_ok']:6d} {s['neg_wrong']:9d}")
    return "\n".join(lines)
