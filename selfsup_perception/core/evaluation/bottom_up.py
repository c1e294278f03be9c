"""Bottom-up baseline: graph-based segmentation of RGB-D without learning.

Pixels higher than ``min_height`` above the fitted table plane are segmented with
Felzenszwalb's graph-based method (scikit-image) on the RGB image; each segment that is
large enough becomes an instance, scored by the fraction of its pixels above the table.
This is the 'bottom-up' comparison of the self-supervised instance segmentation papers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import felzenszwalb

from selfsup_perception.core.geometry.table_plane import fit_table_plane
from selfsup_perception.core.types import RgbdFrame


@dataclass(frozen=True)
class BottomUpConfig:
    scale: float = 200.0
    sigma: float = 0.8
    min_size: int = 40  # pixels at 640x480
    min_height: float = 0.008  # metres above the table
    min_area: int = 80  # pixels at 640x480


def bottom_up_instances(frame: RgbdFrame, config: BottomUpConfig = BottomUpConfig()) -> list[tuple[np.ndarray, float]]:
    """(mask, score) instances of one RGB-D frame."""
    plane = fit_table_plane(frame, rng=np.random.default_rng(0))
    height = plane.height_image(frame)
    above = np.nan_to_num(height, nan=0.0) > config.min_height
    s = frame.rgb.shape[0] * frame.rgb.shape[1] / (640 * 480)
    labels = felzenszwalb(frame.rgb, scale=config.scale, sigma=config.sigma, min_size=max(int(config.min_size * s), 1))
    out = []
    for seg in np.unique(labels[above]):
        region = labels == seg
        inside = region & above
        if inside.sum() < config.min_area * s:
            continue
        # split disconnected parts of one colour segment into separate instances
        parts, n = ndimage.label(inside)
        for k in range(1, n + 1):
            m = parts == k
            if m.sum() >= config.min_area * s:
                out.append((m, float(m.sum() / region.sum())))
    return out
