"""Record a simulated session to a rosbag2 bag with only the standard topics a robot records.

    python -m selfsup_perception.cli.record_sim_bag --out data/bags/sim_robot --storage mcap \\
        --views 8 --width 320 --height 240

Topics (what ``ros2 bag record`` of a wrist-camera arm gives, written with ``rosbags``, no rclpy):

* ``/camera/color/image_raw`` ``sensor_msgs/Image`` rgb8 or bgr8, or ``/camera/color/image_raw/compressed``
  ``CompressedImage`` jpeg with ``--compressed``;
* ``/camera/aligned_depth_to_color/image_raw`` ``Image`` 16UC1 (mm) or 32FC1 (m), aligned to the colour image;
* ``/camera/color/camera_info`` ``CameraInfo`` (frame ``camera_color_optical_frame``);
* ``/tf_static``: ``world -> base_link``, ``panda_hand -> camera_link`` (hand-eye mount),
  ``camera_link -> camera_color_optical_frame`` (the REP 103 optical rotation);
* ``/tf``: ``base_link -> panda_hand`` at ``--tf-rate`` Hz as the arm's state publisher would send it.

The camera flies the simulator's ring of look-at poses around the table (as an arm scanning the
scene would carry it), moving at constant speed between key poses (linear translation, slerp
rotation); images are rendered at the exact pose of their own stamps, which fall between TF stamps,
so a replay has to interpolate TF as it would on a robot.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from selfsup_perception.core.image_conversion import array_to_image, depth_to_encoding
from selfsup_perception.core.geometry.transform_buffer import matrix_from_translation_quaternion, quaternion_from_matrix, slerp

LOG = logging.getLogger("record_sim_bag")

COLOR_TOPIC = "/camera/color/image_raw"
DEPTH_TOPIC = "/camera/aligned_depth_to_color/image_raw"
INFO_TOPIC = "/camera/color/camera_info"
OPTICAL_FRAME = "camera_color_optical_frame"

# camera_link (x forward, y left, z up) -> optical frame (x right, y down, z forward), REP 103
T_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
# hand-eye mount: camera_link 6 cm ahead and 4 cm above the hand flange, looking along the hand's z axis
T_HAND_LINK = np.array([[0.0, 0.0, 1.0, 0.04], [0.0, 1.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.06], [0.0, 0.0, 0.0, 1.0]])
T_WORLD_BASE = np.eye(4)


def interpolate_pose(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    q = slerp(quaternion_from_matrix(a[:3, :3]), quaternion_from_matrix(b[:3, :3]), fraction)
    return matrix_from_translation_quaternion((1 - fraction) * a[:3, 3] + fraction * b[:3, 3], q)


class StandardBagWriter:
    """Writes standard ROS 2 messages (rosbags dataclasses) to a new bag."""

    def __init__(self, path: Path, storage: str, zstd: bool = False):
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        if storage not in ("mcap", "sqlite3"):
            raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
        if path.exists():
            raise FileExistsError(f"{path} exists; choose a new bag folder")
        self.store = get_typestore(Stores.ROS2_KILTED)
        self.types = self.store.types
        self.writer = Writer(path, version=9,
                             storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
        if zstd:  # MCAP: zstd-compressed chunks, as rosbag2's zstd storage presets write
            self.writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self.writer.open()
        self.connections: dict[str, object] = {}
        self.count = 0

    def write(self, topic: str, msgtype: str, msg, log_time_ns: int) -> None:
        conn = self.connections.get(topic)
        if conn is None:
            conn = self.writer.add_connection(topic, msgtype, typestore=self.store)
            self.connections[topic] = conn
        self.writer.write(conn, int(log_time_ns), self.store.serialize_cdr(msg, msgtype))
        self.count += 1

    def close(self) -> None:
        self.writer.close()

    # ----------------------------------------------------------------- messages
    def header(self, stamp_ns: int, frame_id: str):
        t = self.types
        return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 10**9),
                                                                                nanosec=int(stamp_ns % 10**9)),
                                        frame_id=frame_id)

    def image(self, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
        class _Fields:
            pass

        f = array_to_image(array, encoding, _Fields())
        return self.types["sensor_msgs/msg/Image"](
            header=self.header(stamp_ns, frame_id), height=f.height, width=f.width, encoding=f.encoding,
            is_bigendian=f.is_bigendian, step=f.step, data=np.frombuffer(f.data, dtype=np.uint8))

    def compressed(self, rgb: np.ndarray, stamp_ns: int, frame_id: str):
        import cv2

        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise RuntimeError("jpeg encoding failed")
        return self.types["sensor_msgs/msg/CompressedImage"](header=self.header(stamp_ns, frame_id),
                                                             format="rgb8; jpeg compressed bgr8",
                                                             data=np.asarray(buf, dtype=np.uint8).ravel())

    def camera_info(self, k, stamp_ns: int, frame_id: str):
        t = self.types
        roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        p = np.zeros(12)
        p[[0, 2, 5, 6, 10]] = [k.fx, k.cx, k.fy, k.cy, 1.0]
        return t["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame_id), height=k.height, width=k.width, distortion_model="plumb_bob",
            d=np.zeros(5), k=np.asarray(k.matrix, dtype=np.float64).ravel(),
            r=np.eye(3).ravel(), p=p, binning_x=0, binning_y=0, roi=roi)

    def tf(self, transforms: list[tuple[str, str, np.ndarray]], stamp_ns: int):
        t = self.types
        out = []
        for parent, child, m in transforms:
            q = quaternion_from_matrix(m[:3, :3])
            out.append(t["geometry_msgs/msg/TransformStamped"](
                header=self.header(stamp_ns, parent), child_frame_id=child,
                transform=t["geometry_msgs/msg/Transform"](
                    translation=t["geometry_msgs/msg/Vector3"](x=float(m[0, 3]), y=float(m[1, 3]), z=float(m[2, 3])),
                    rotation=t["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                                w=float(q[3])))))
        return t["tf2_msgs/msg/TFMessage"](transforms=out)


def record(out: Path, storage: str = "mcap", views: int = 8, width: int = 320, height: int = 240,
           color_encoding: str = "rgb8", depth_encoding: str = "16UC1", compressed: bool = False,
           images_per_segment: int = 2, segment_s: float = 1.0, tf_rate_hz: float = 20.0, seed: int = 0,
           scene_seed: int = 3, start_s: float = 1_700_000_000.0) -> dict:
    """Render and write the session; returns counts."""
    from selfsup_perception.sim.multiview import MultiViewConfig, ring_camera_poses
    from selfsup_perception.sim.tabletop import SimConfig, TabletopSim, replace_camera

    if views < 2:
        raise ValueError("need at least 2 key poses")
    if color_encoding not in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8"):
        raise ValueError(f"unsupported colour encoding {color_encoding!r}")
    poses = ring_camera_poses(MultiViewConfig(num_views=views, azimuth_deg=(-60.0, 60.0)), np.random.default_rng(seed))
    T_hand_optical = T_HAND_LINK @ T_LINK_OPTICAL
    t0 = int(start_s * 1e9)
    duration_ns = int((views - 1) * segment_s * 1e9)

    def camera_at(t_ns: int) -> np.ndarray:
        s = (t_ns - t0) / (segment_s * 1e9)
        k = min(int(np.floor(s)), views - 2)
        return interpolate_pose(poses[k], poses[k + 1], float(np.clip(s - k, 0.0, 1.0)))

    def base_hand_at(t_ns: int) -> np.ndarray:
        return np.linalg.inv(T_WORLD_BASE) @ camera_at(t_ns) @ np.linalg.inv(T_hand_optical)

    writer = StandardBagWriter(out, storage)
    counts: dict = {"images": 0, "tf": 0, "camera_poses": {}}  # camera_poses: stamp -> rendered T_world_camera
    try:
        # latched static transforms first, as a robot's static_transform_publisher
        writer.write("/tf_static", "tf2_msgs/msg/TFMessage", writer.tf(
            [("world", "base_link", T_WORLD_BASE), ("panda_hand", "camera_link", T_HAND_LINK),
             ("camera_link", OPTICAL_FRAME, T_LINK_OPTICAL)], t0), t0)
        tf_period = int(1e9 / tf_rate_hz)
        events = [(t, "tf") for t in range(t0, t0 + duration_ns + 1, tf_period)]
        n_images = (views - 1) * images_per_segment + 1
        # image stamps fall between TF stamps (a third of a TF period after one)
        image_stamps = [t0 + int(round(i * duration_ns / (n_images - 1))) for i in range(n_images)]
        image_stamps = [min(t + tf_period // 3, t0 + duration_ns) if 0 < i < n_images - 1 else t
                        for i, t in enumerate(image_stamps)]
        events += [(t, "image") for t in image_stamps]
        config = replace_camera(SimConfig(seed=seed), width=width, height=height)
        with TabletopSim(config) as sim:
            sim.reset_scene(scene_seed, clutter="medium")
            for stamp, kind in sorted(events):
                if kind == "tf":
                    writer.write("/tf", "tf2_msgs/msg/TFMessage",
                                 writer.tf([("base_link", "panda_hand", base_hand_at(stamp))], stamp), stamp)
                    counts["tf"] += 1
                    continue
                sim.set_camera_pose(camera_at(stamp))
                frame = sim.render()
                log_time = stamp + 5_000_000  # a driver publishes a few ms after exposure
                if compressed:
                    writer.write(COLOR_TOPIC + "/compressed", "sensor_msgs/msg/CompressedImage",
                                 writer.compressed(frame.rgb, stamp, OPTICAL_FRAME), log_time)
                else:
                    rgb = frame.rgb
                    colour = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": rgb.mean(axis=2).astype(np.uint8),
                              "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
                              "bgra8": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)])}
                    writer.write(COLOR_TOPIC, "sensor_msgs/msg/Image",
                                 writer.image(np.ascontiguousarray(colour[color_encoding]), color_encoding, stamp,
                                              OPTICAL_FRAME), log_time)
                writer.write(DEPTH_TOPIC, "sensor_msgs/msg/Image",
                             writer.image(depth_to_encoding(frame.depth, depth_encoding), depth_encoding, stamp,
                                          OPTICAL_FRAME), log_time + 1_000_000)
                writer.write(INFO_TOPIC, "sensor_msgs/msg/CameraInfo",
                             writer.camera_info(frame.intrinsics, stamp, OPTICAL_FRAME), log_time)
                counts["images"] += 1
                counts["camera_poses"][stamp] = frame.camera_to_world.copy()
    finally:
        writer.close()
    counts["messages"] = writer.count
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="new bag folder")
    ap.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    ap.add_argument("--views", type=int, default=8, help="key poses on the camera's arc")
    ap.add_argument("--images-per-segment", type=int, default=2, help="images between two key poses")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--color-encoding", default="rgb8", choices=["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
    ap.add_argument("--depth-encoding", default="16UC1", choices=["16UC1", "32FC1"])
    ap.add_argument("--compressed", action="store_true", help="colour as a jpeg CompressedImage")
    ap.add_argument("--tf-rate", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scene-seed", type=int, default=3)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        counts = record(args.out, args.storage, args.views, args.width, args.height, args.color_encoding,
                        args.depth_encoding, args.compressed, args.images_per_segment, tf_rate_hz=args.tf_rate,
                        seed=args.seed, scene_seed=args.scene_seed)
    except (ValueError, FileExistsError) as exc:
        print(f"record_sim_bag: error: {exc}", file=sys.stderr)
        return 2
    print(f"recorded {counts['images']} RGB-D images and {counts['tf']} /tf messages "
          f"({counts['messages']} messages, {args.storage}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
