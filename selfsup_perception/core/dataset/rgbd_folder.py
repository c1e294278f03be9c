"""Read a folder of RGB-D frames saved as ``NNNNNN-color.png`` / ``NNNNNN-depth.png`` (ROS-free).

The layout of the UnseenObjectClustering demo data (``../shared/realdata/ucn_tabletop``): colour as
8-bit RGB PNG, depth as 16-bit PNG in millimetres (0 = no reading), and ``camera_params.json`` with
``fx``, ``fy``, ``x_offset`` (c_x), ``y_offset`` (c_y). No camera pose is stored: frames get the
identity ``camera_to_world``, which the table-plane fit reads as "pose unknown".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from selfsup_perception.core.geometry.camera import sanitize_depth
from selfsup_perception.core.types import CameraIntrinsics, RgbdFrame


def frame_ids(folder: Union[str, Path]) -> list[str]:
    """Sorted ids ``NNNNNN`` of the frames that have both a colour and a depth image."""
    folder = Path(folder)
    return sorted(p.name[: -len("-color.png")] for p in folder.glob("*-color.png")
                  if (folder / p.name.replace("-color.png", "-depth.png")).exists())


def load_intrinsics(folder: Union[str, Path], width: int, height: int) -> CameraIntrinsics:
    """Intrinsics from ``camera_params.json``; raises FileNotFoundError / ValueError with the reason."""
    path = Path(folder) / "camera_params.json"
    params = json.loads(path.read_text())
    try:
        return CameraIntrinsics(float(params["fx"]), float(params["fy"]), float(params["x_offset"]),
                                float(params["y_offset"]), int(width), int(height))
    except KeyError as exc:
        raise ValueError(f"{path} lacks {exc}") from exc


def load_frame(folder: Union[str, Path], frame_id: str) -> RgbdFrame:
    """One frame as an :class:`RgbdFrame` (RGB uint8, depth float32 metres with NaN invalid)."""
    folder = Path(folder)
    bgr = cv2.imread(str(folder / f"{frame_id}-color.png"), cv2.IMREAD_COLOR)
    depth = cv2.imread(str(folder / f"{frame_id}-depth.png"), cv2.IMREAD_UNCHANGED)
    if bgr is None or depth is None:
        raise FileNotFoundError(f"cannot read frame {frame_id!r} in {folder}")
    if depth.dtype != np.uint16:
        raise ValueError(f"{frame_id}-depth.png must be 16-bit millimetres, got {depth.dtype}")
    h, w = depth.shape
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return RgbdFrame(rgb=rgb, depth=sanitize_depth(depth), intrinsics=load_intrinsics(folder, w, h),
                     frame_id=frame_id).validate()


def load_folder(folder: Union[str, Path]) -> list[RgbdFrame]:
    """Every frame of ``folder`` in id order."""
    return [load_frame(folder, i) for i in frame_ids(folder)]
