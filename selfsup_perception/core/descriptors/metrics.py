"""Keypoint-matching metrics: PCK@k, AUC of PCK over 1..50 px, normalised mean pixel error.

Definitions (Adrian et al., Table I; REFERENCES.md): a prediction is correct at
threshold k when its Euclidean pixel error is <= k (inclusive); AUC@[1..50] is the
mean of PCK@k over the integer thresholds k = 1..50; the normalised mean pixel
error is mean(error) / normaliser, with the image diagonal as normaliser (Dense
Object Nets uses 800 = the 640x480 diagonal). A missing prediction (NaN) counts
as incorrect at every threshold and with error = normaliser in the mean.
"""

from __future__ import annotations

import numpy as np

PCK_THRESHOLDS: tuple[int, ...] = (3, 5, 10, 25, 50)


def pixel_errors(predicted: np.ndarray, ground_truth: np.ndarray) -> np.ndarray:
    """Euclidean errors (N,) between (N, 2) point sets; NaN where the prediction is NaN."""
    p = np.asarray(predicted, dtype=np.float64)
    g = np.asarray(ground_truth, dtype=np.float64)
    if p.shape != g.shape or p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"predicted and ground_truth must both be (N, 2); got {p.shape} and {g.shape}")
    if not np.isfinite(g).all():
        raise ValueError("ground truth contains NaN or inf")
    return np.linalg.norm(p - g, axis=1)


def pck(errors: np.ndarray, threshold: float) -> float:
    """Fraction of errors <= threshold (inclusive); NaN errors count as wrong."""
    e = np.asarray(errors, dtype=np.float64)
    if e.size == 0:
        raise ValueError("no errors given")
    return float(np.mean(np.nan_to_num(e, nan=np.inf) <= threshold))


def pck_auc(errors: np.ndarray, max_threshold: int = 50) -> float:
    """Mean of PCK@k for k = 1..max_threshold (area under the PCK curve, normalised to [0, 1])."""
    if max_threshold < 1:
        raise ValueError("max_threshold must be >= 1")
    return float(np.mean([pck(errors, k) for k in range(1, max_threshold + 1)]))


def normalized_mean_error(errors: np.ndarray, normalizer: float) -> float:
    """mean(min(error, normalizer)) / normalizer; NaN errors count as ``normalizer``."""
    if normalizer <= 0:
        raise ValueError("normalizer must be positive")
    e = np.asarray(errors, dtype=np.float64)
    if e.size == 0:
        raise ValueError("no errors given")
    e = np.minimum(np.nan_to_num(e, nan=normalizer), normalizer)
    return float(e.mean() / normalizer)


def image_diagonal(width: int, height: int) -> float:
    return float(np.hypot(width, height))


def matching_metrics(errors: np.ndarray, width: int, height: int) -> dict[str, float]:
    """{'pck@3', 'pck@5', 'pck@10', 'pck@25', 'pck@50', 'auc', 'nme', 'n'} for one set of errors."""
    out = {f"pck@{k}": pck(errors, k) for k in PCK_THRESHOLDS}
    out["auc"] = pck_auc(errors, 50)
    out["nme"] = normalized_mean_error(errors, image_diagonal(width, height))
    out["n"] = float(np.asarray(errors).size)
    return out
