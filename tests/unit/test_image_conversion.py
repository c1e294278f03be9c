import numpy as np
import pytest
from sensor_msgs.msg import Image

from selfsup_perception.compat.cv_bridge import FallbackCvBridge
from selfsup_perception.core.image_conversion import (
    ImageConversionError,
    array_to_image,
    depth_to_encoding,
    image_to_array,
    to_depth_metres,
    to_rgb8,
)

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("encoding,dtype,shape", [
    ("rgb8", np.uint8, (5, 7, 3)), ("bgr8", np.uint8, (5, 7, 3)), ("mono8", np.uint8, (5, 7)),
    ("16UC1", np.uint16, (5, 7)), ("32FC1", np.float32, (5, 7)), ("rgba8", np.uint8, (4, 3, 4)),
])
def test_round_trip(encoding, dtype, shape):
    arr = (RNG.uniform(0, 200, size=shape)).astype(dtype)
    msg = array_to_image(arr, encoding, Image())
    assert msg.step == shape[1] * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    np.testing.assert_array_equal(image_to_array(msg), arr)


def test_bgr_becomes_rgb_and_mono_is_repeated():
    bgr = RNG.integers(0, 255, size=(3, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb8(array_to_image(bgr, "bgr8", Image())), bgr[..., ::-1])
    mono = RNG.integers(0, 255, size=(3, 4), dtype=np.uint8)
    rgb = to_rgb8(array_to_image(mono, "mono8", Image()))
    assert rgb.shape == (3, 4, 3) and np.all(rgb[..., 1] == mono)


def test_padded_rows_and_big_endian():
    arr = np.arange(12, dtype=np.uint16).reshape(3, 4)
    msg = Image(height=3, width=4, encoding="16UC1", is_bigendian=1, step=10)
    rows = [arr[r].astype(">u2").tobytes() + b"\x00\x00" for r in range(3)]
    msg.data = b"".join(rows)
    np.testing.assert_array_equal(image_to_array(msg), arr)


def test_depth_encodings_to_metres():
    mm = np.array([[0, 1000], [1500, 65535]], dtype=np.uint16)
    d = to_depth_metres(array_to_image(mm, "16UC1", Image()))
    assert np.isnan(d[0, 0]) and d[0, 1] == pytest.approx(1.0) and d[1, 0] == pytest.approx(1.5)
    m = np.array([[np.nan, 0.5], [-1.0, np.inf]], dtype=np.float32)
    d = to_depth_metres(array_to_image(m, "32FC1", Image()))
    assert np.isnan(d[0, 0]) and d[0, 1] == 0.5 and np.isnan(d[1, 0]) and np.isnan(d[1, 1])
    back = depth_to_encoding(np.array([[np.nan, 1.2345]], dtype=np.float32), "16UC1")
    np.testing.assert_array_equal(back, [[0, 1234]])


def test_clear_errors():
    with pytest.raises(ImageConversionError, match="unsupported image encoding 'yuv422'"):
        image_to_array(Image(height=1, width=1, encoding="yuv422", step=2, data=b"\x00\x00"))
    with pytest.raises(ImageConversionError, match="empty image"):
        image_to_array(Image(height=0, width=0, encoding="rgb8"))
    with pytest.raises(ImageConversionError, match="expected height\\*step"):
        image_to_array(Image(height=2, width=2, encoding="mono8", step=2, data=b"\x00" * 3))
    with pytest.raises(ImageConversionError, match="expected a depth image"):
        to_depth_metres(array_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8", Image()))
    with pytest.raises(ImageConversionError, match="expected a colour image"):
        to_rgb8(array_to_image(np.zeros((2, 2), np.float32), "32FC1", Image()))
    with pytest.raises(ImageConversionError, match="does not fit encoding"):
        array_to_image(np.zeros((2, 2), np.float64), "32FC1", Image())


def test_fallback_cv_bridge_call_shape():
    bridge = FallbackCvBridge()
    rgb = RNG.integers(0, 255, size=(4, 5, 3), dtype=np.uint8)
    msg = bridge.cv2_to_imgmsg(rgb, "rgb8")
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg), rgb)
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg, "bgr8"), rgb[..., ::-1])
    with pytest.raises(ImageConversionError):
        bridge.imgmsg_to_cv2(msg, "32FC1")
