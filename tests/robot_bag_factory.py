"""Small standard robot bags (colour, depth, camera info, /tf, /tf_static) written with rosbags, for tests."""

from __future__ import annotations

import struct

import cv2
import numpy as np

from selfsup_perception.cli.record_sim_bag import OPTICAL_FRAME, T_LINK_OPTICAL, StandardBagWriter
from selfsup_perception.core.image_conversion import depth_to_encoding
from selfsup_perception.core.geometry.transform_buffer import matrix_from_translation_quaternion
from selfsup_perception.core.types import CameraIntrinsics

H, W = 24, 32
T0 = 1_700_000_000 * 10**9
MS = 1_000_000
K = CameraIntrinsics(30.0, 30.0, 15.5, 11.5, W, H)


def images(i: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 1.5, (H, W)).astype(np.float32)
    depth[0, :5] = np.nan
    return rgb, depth


def _base_x(t_ns: int) -> float:
    """The hand moves along x at 0.5 m/s."""
    return 0.5 * (t_ns - T0) * 1e-9


def write_robot_bag(path, storage="mcap", n=5, colour="rgb8", depth_encoding="16UC1", compressed=False,
                    depth_offset_ns=2 * MS, with_depth=True, with_tf=True, extra_colour_topic=False,
                    bad_colour_at=None):
    """A wrist-camera bag: world -> base_link (static), base_link -> hand (/tf, 10 Hz), hand -> camera_link ->
    optical (static); images at 3 Hz between TF stamps."""
    w = StandardBagWriter(path, storage)
    if with_tf:
        w.write("/tf_static", "tf2_msgs/msg/TFMessage", w.tf(
            [("world", "base_link", np.eye(4)), ("hand", "camera_link", np.eye(4)),
             ("camera_link", OPTICAL_FRAME, T_LINK_OPTICAL)], T0), T0)
        for k in range(0, 25):
            t = T0 + k * 100 * MS
            pose = matrix_from_translation_quaternion((_base_x(t), 0.0, 0.5), (0, 0, 0, 1))
            w.write("/tf", "tf2_msgs/msg/TFMessage", w.tf([("base_link", "hand", pose)], t), t)
    for i in range(n):
        t = T0 + 130 * MS + i * 333 * MS
        rgb, depth = images(i)
        if compressed:
            ok, png = cv2.imencode(".png", rgb[..., ::-1])
            msg = w.types["sensor_msgs/msg/CompressedImage"](header=w.header(t, OPTICAL_FRAME), format="png",
                                                              data=np.asarray(png, np.uint8).ravel())
            w.write("/cam/color/image_raw/compressed", "sensor_msgs/msg/CompressedImage", msg, t + MS)
        else:
            arr = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": rgb[..., 0],
                   "bgra8": np.dstack([rgb[..., ::-1], np.full((H, W), 255, np.uint8)])}[colour]
            if bad_colour_at == i:
                conn = w.connections.get("/cam/color/image_raw")
                if conn is None:
                    conn = w.writer.add_connection("/cam/color/image_raw", "sensor_msgs/msg/Image", typestore=w.store)
                    w.connections["/cam/color/image_raw"] = conn
                header = b"\x00\x01\x00\x00" + struct.pack("<iI", t // 10**9, t % 10**9)
                w.writer.write(conn, t + MS, header + b"\xff" * 7)  # a header, then garbage
            else:
                w.write("/cam/color/image_raw", "sensor_msgs/msg/Image",
                        w.image(np.ascontiguousarray(arr), colour, t, OPTICAL_FRAME), t + MS)
            if extra_colour_topic:
                w.write("/cam2/color/image_raw", "sensor_msgs/msg/Image", w.image(rgb, "rgb8", t, "cam2"), t + MS)
        if with_depth:
            w.write("/cam/depth/image_raw", "sensor_msgs/msg/Image",
                    w.image(depth_to_encoding(depth, depth_encoding), depth_encoding, t + depth_offset_ns,
                            OPTICAL_FRAME), t + 2 * MS)
        w.write("/cam/color/camera_info", "sensor_msgs/msg/CameraInfo", w.camera_info(K, t, OPTICAL_FRAME), t + MS)
    w.close()
    return path


def expected_pose(t_ns: int) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, 3] = (_base_x(t_ns), 0.0, 0.5)
    return pose @ T_LINK_OPTICAL
