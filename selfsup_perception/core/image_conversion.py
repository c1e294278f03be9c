"""sensor_msgs/Image <-> numpy conversion without cv_bridge and without importing ROS.

Functions read and write the fields of any object shaped like ``sensor_msgs/Image``
(``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``, ``data``), so this
module imports neither rclpy nor message packages and is tested without ``rclpy.init``.
:mod:`selfsup_perception.compat.cv_bridge` puts the same code behind cv_bridge's call shape.

Supported encodings: rgb8, bgr8, rgba8, bgra8, mono8, mono16, 8UC1, 8UC3, 16UC1, 32FC1, 64FC1.
"""

from __future__ import annotations

import numpy as np

# encoding -> (numpy dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "64FC1": (np.dtype(np.float64), 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC3")
DEPTH_ENCODINGS = ("32FC1", "16UC1", "mono16", "64FC1")


class ImageConversionError(ValueError):
    """An image message that cannot be converted (bad encoding, size or buffer)."""


def image_to_array(msg) -> np.ndarray:
    """The pixels of an Image message as a numpy array (H, W) or (H, W, C), copied.

    Raises :class:`ImageConversionError` for an unknown encoding, an empty image or a
    buffer that does not match height x step.
    """
    encoding = msg.encoding
    if encoding not in ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(sorted(ENCODINGS))}"
        )
    dtype, channels = ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise ImageConversionError(f"empty image ({w}x{h}, encoding {encoding})")
    row_bytes = w * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageConversionError(f"step {step} is smaller than a row ({row_bytes} bytes) for {w}x{h} {encoding}")
    buf = msg.data
    buf = buf.tobytes() if hasattr(buf, "tobytes") else bytes(buf)
    if len(buf) != h * step:
        raise ImageConversionError(f"image data has {len(buf)} bytes, expected height*step = {h}*{step} = {h * step}")
    rows = np.frombuffer(buf, dtype=np.uint8).reshape(h, step)[:, :row_bytes]
    arr = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    arr = arr.astype(dtype, copy=False).reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)
    return arr.copy()


def array_to_image(arr: np.ndarray, encoding: str, msg) -> object:
    """Fill ``msg`` (an Image message or look-alike) from ``arr``; returns ``msg``."""
    if encoding not in ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(sorted(ENCODINGS))}"
        )
    dtype, channels = ENCODINGS[encoding]
    arr = np.asarray(arr)
    if arr.size == 0:
        raise ImageConversionError("cannot convert an empty array to an image")
    expected_ndim = 2 if channels == 1 else 3
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != expected_ndim or (channels > 1 and arr.shape[2] != channels):
        raise ImageConversionError(f"array of shape {arr.shape} does not fit encoding {encoding} ({channels} channels)")
    if arr.dtype != dtype:
        raise ImageConversionError(f"array dtype {arr.dtype} does not fit encoding {encoding} (needs {dtype})")
    arr = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("<"))
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(arr.shape[1] * channels * dtype.itemsize)
    msg.data = arr.tobytes()
    return msg


def to_rgb8(msg) -> np.ndarray:
    """A colour image message (rgb8, bgr8, rgba8, bgra8, mono8) as (H, W, 3) uint8 RGB."""
    if msg.encoding not in COLOR_ENCODINGS:
        raise ImageConversionError(
            f"expected a colour image ({', '.join(COLOR_ENCODINGS)}), got encoding {msg.encoding!r}"
        )
    arr = image_to_array(msg)
    if msg.encoding in ("rgb8", "8UC3"):
        return arr
    if msg.encoding == "bgr8":
        return np.ascontiguousarray(arr[..., ::-1])
    if msg.encoding == "rgba8":
        return np.ascontiguousarray(arr[..., :3])
    if msg.encoding == "bgra8":
        return np.ascontiguousarray(arr[..., 2::-1])
    return np.repeat(arr[..., None], 3, axis=2)  # mono8


def to_depth_metres(msg) -> np.ndarray:
    """A depth image message as (H, W) float32 metres with NaN for invalid pixels (REP 118).

    32FC1/64FC1 are metres (NaN, inf and <= 0 invalid); 16UC1/mono16 are millimetres (0 invalid).
    """
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ImageConversionError(
            f"expected a depth image ({', '.join(DEPTH_ENCODINGS)}), got encoding {msg.encoding!r}"
        )
    from selfsup_perception.core.geometry.camera import sanitize_depth

    return sanitize_depth(image_to_array(msg))


def depth_to_encoding(depth_m: np.ndarray, encoding: str) -> np.ndarray:
    """Metric depth (NaN invalid) as the array for a 32FC1 (metres) or 16UC1 (millimetres) message."""
    depth_m = np.asarray(depth_m, dtype=np.float32)
    if encoding == "32FC1":
        return depth_m
    if encoding in ("16UC1", "mono16"):
        mm = np.where(np.isfinite(depth_m), np.round(depth_m * 1000.0), 0)
        return np.clip(mm, 0, 65535).astype(np.uint16)
    raise ImageConversionError(f"depth encoding must be 32FC1 or 16UC1, got {encoding!r}")
