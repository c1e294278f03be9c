"""cv_bridge when importable, otherwise a tested equivalent with the same call shape.

Only the calls this stack uses: ``CvBridge().imgmsg_to_cv2(msg, desired_encoding)`` and
``CvBridge().cv2_to_imgmsg(array, encoding)``.
"""

from __future__ import annotations

import numpy as np

from selfsup_perception.core.image_conversion import ImageConversionError, array_to_image, image_to_array

try:  # pragma: no cover - depends on the install
    from cv_bridge import CvBridge as _RosCvBridge  # type: ignore[import-not-found]
except ImportError:  # the wheels-only set-up has no cv_bridge
    _RosCvBridge = None

_SWAPS = {("rgb8", "bgr8"), ("bgr8", "rgb8"), ("rgba8", "bgra8"), ("bgra8", "rgba8")}


class FallbackCvBridge:
    """Pure numpy stand-in for cv_bridge.CvBridge (same method names and arguments)."""

    def imgmsg_to_cv2(self, img_msg, desired_encoding: str = "passthrough") -> np.ndarray:
        arr = image_to_array(img_msg)
        src = img_msg.encoding
        if desired_encoding in ("passthrough", src):
            return arr
        if (src, desired_encoding) in _SWAPS:
            return np.ascontiguousarray(arr[..., [2, 1, 0] + ([3] if arr.shape[2] == 4 else [])])
        if src == "mono8" and desired_encoding in ("rgb8", "bgr8"):
            return np.repeat(arr[..., None], 3, axis=2)
        raise ImageConversionError(f"cannot convert encoding {src!r} to {desired_encoding!r}")

    def cv2_to_imgmsg(self, cvim: np.ndarray, encoding: str = "passthrough", header=None):
        from sensor_msgs.msg import Image

        if encoding == "passthrough":
            raise ImageConversionError("give an explicit encoding (e.g. 'rgb8', '32FC1')")
        msg = array_to_image(cvim, encoding, Image())
        if header is not None:
            msg.header = header
        return msg


CvBridge = _RosCvBridge if _RosCvBridge is not None else FallbackCvBridge
USING_ROS_CV_BRIDGE = _RosCvBridge is not None
