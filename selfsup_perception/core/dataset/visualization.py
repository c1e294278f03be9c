"""Pictures for people: mask overlays and contact sheets of labeled samples (ROS-free)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from selfsup_perception.core.dataset.atomic_io import atomic_write_bytes


def overlay_mask(rgb: np.ndarray, mask: Optional[np.ndarray], action_pixel=None,
                 color=(255, 40, 40), alpha: float = 0.45, outline: bool = True) -> np.ndarray:
    """``rgb`` with ``mask`` tinted in ``color``, its outline drawn and the action pixel marked."""
    out = rgb.copy()
    if mask is not None and mask.any():
        m = mask.astype(bool)
        out[m] = ((1 - alpha) * out[m] + alpha * np.array(color)).astype(np.uint8)
        if outline:
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, color, 1)
    if action_pixel is not None and np.all(np.isfinite(action_pixel)):
        u, v = int(round(action_pixel[0])), int(round(action_pixel[1]))
        cv2.drawMarker(out, (u, v), (255, 255, 0), cv2.MARKER_CROSS, 12, 2)
    return out


def contact_sheet(tiles: Sequence[np.ndarray], captions: Sequence[str], path: str | Path,
                  columns: int = 6, tile_width: int = 240) -> Path:
    """Write a PNG grid of RGB tiles with captions (atomically); returns the path."""
    if not tiles:
        raise ValueError("a contact sheet needs at least one tile")
    scaled = []
    for tile, caption in zip(tiles, captions):
        h, w = tile.shape[:2]
        t = cv2.resize(tile, (tile_width, int(round(h * tile_width / w))), interpolation=cv2.INTER_AREA)
        bar = np.full((18, tile_width, 3), 255, np.uint8)
        cv2.putText(bar, caption[:40], (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        scaled.append(np.vstack([t, bar]))
    th = max(t.shape[0] for t in scaled)
    scaled = [np.vstack([t, np.full((th - t.shape[0], tile_width, 3), 255, np.uint8)]) for t in scaled]
    rows = []
    for i in range(0, len(scaled), columns):
        row = scaled[i:i + columns]
        row += [np.full_like(scaled[0], 255)] * (columns - len(row))
        rows.append(np.hstack(row))
    sheet = np.vstack(rows)
    ok, png = cv2.imencode(".png", sheet[..., ::-1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    atomic_write_bytes(Path(path), lambda f: f.write(png.tobytes()))
    return Path(path)
