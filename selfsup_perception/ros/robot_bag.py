"""RGB-D views with camera poses from a robot's standard bag (no rclpy; ``rosbags`` decodes).

What a robot records by default: colour ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) or
``CompressedImage`` (jpeg/png), depth ``Image`` (16UC1 millimetres, 32FC1 metres) or
``compressedDepth`` (png), ``CameraInfo``, and ``tf2_msgs/TFMessage`` on ``/tf`` and ``/tf_static``.
:func:`detect_streams` finds those topics by type (and, for ``Image``, by the encoding of the first
message) when that is unambiguous, else the caller names them. :func:`read_views` then

1. reads TF (into a :class:`~selfsup_perception.core.geometry.transform_buffer.TransformBuffer` holding the
   whole bag), the camera infos and the header stamps of the images;
2. pairs each colour image with the depth image of the nearest stamp within ``pair_tolerance_s``;
3. decodes the pairs and looks up ``T_world_camera`` at the colour stamp (interpolated), the camera
   frame being the CameraInfo ``frame_id`` unless named, the world frame the root of its TF tree
   unless named.

A pair that cannot become a view (size mismatch, no transform at that time, undecodable image) is a
:class:`ViewResult` with a reason, and the reading goes on; a camera frame absent from TF is a
:class:`MissingFrameError` before any image is decoded.
"""

from __future__ import annotations

import bisect
import logging
import struct
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from selfsup_perception.core.image_conversion import (
    COLOR_ENCODINGS,
    DEPTH_ENCODINGS,
    ImageConversionError,
    to_depth_metres,
    to_rgb8,
)
from selfsup_perception.core.geometry.transform_buffer import TransformBuffer, matrix_from_translation_quaternion
from selfsup_perception.core.types import CameraIntrinsics, RgbdFrame
from selfsup_perception.ros.bag_files import BagReadError, RawBag, make_typestore

LOG = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
NEEDED = (
    "a colour image (sensor_msgs/msg/Image rgb8|bgr8|rgba8|bgra8|mono8, or CompressedImage jpeg|png), "
    "a depth image (Image 16UC1|32FC1, or CompressedImage compressedDepth png) of the same size, "
    "a sensor_msgs/msg/CameraInfo, and tf2_msgs/msg/TFMessage on /tf and/or /tf_static"
)


class NoUsableTopicError(BagReadError):
    """The bag lacks a stream the views need, or it is ambiguous which topic to use."""


class MissingFrameError(BagReadError):
    """The camera or world frame never appears in the bag's TF."""


@dataclass(frozen=True)
class RobotBagOptions:
    color_topic: Optional[str] = None
    depth_topic: Optional[str] = None
    camera_info_topic: Optional[str] = None
    tf_topics: tuple[str, ...] = ("/tf", "/tf_static")
    camera_frame: Optional[str] = None  # default: the CameraInfo frame_id (an optical frame)
    world_frame: Optional[str] = None  # default: the root of the camera frame's TF tree
    pair_tolerance_s: float = 0.02  # colour/depth stamps further apart are not paired

    def __post_init__(self) -> None:
        if not self.pair_tolerance_s >= 0.0:
            raise ValueError(f"pair_tolerance_s must be >= 0, got {self.pair_tolerance_s}")


@dataclass(frozen=True)
class CameraStreams:
    color_topic: str
    color_type: str
    depth_topic: str
    depth_type: str
    info_topic: str
    tf_topics: tuple[str, ...]


@dataclass
class ViewResult:
    """One colour image's outcome: a view, or the reason it is none."""

    stamp_ns: int
    frame: Optional[RgbdFrame] = None
    reason: str = ""


@dataclass
class ReadStats:
    color_images: int = 0
    depth_images: int = 0
    paired: int = 0
    unpaired_color: int = 0
    tf_messages: int = 0
    camera_frame: str = ""
    world_frame: str = ""
    reasons: dict = field(default_factory=dict)


def header_stamp_ns(raw: bytes) -> int:
    """``header.stamp`` of a CDR-serialised message that starts with a std_msgs/Header (Image, CameraInfo, ...)."""
    if len(raw) < 12:
        raise BagReadError(f"message of {len(raw)} bytes is too short to hold a header")
    little = raw[1] == 1  # CDR encapsulation: 0x0001 little-endian, 0x0000 big-endian
    sec, nanosec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
    return int(sec) * 1_000_000_000 + int(nanosec)


# ============================================================================ topic detection
def _first_message(bag: RawBag, topic: str, store):
    for _t, msgtype, _stamp, raw in bag.messages([topic]):
        try:
            return store.deserialize_cdr(raw, msgtype)
        except Exception:  # noqa: BLE001 - one bad first message: classify by name instead
            return None
    return None


def _classify_image_topics(bag: RawBag, store) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(colour candidates, depth candidates) as (topic, type)."""
    colour, depth = [], []
    for topic in bag.topics_of_type(IMAGE):
        msg = _first_message(bag, topic, store)
        encoding = getattr(msg, "encoding", "")
        if encoding in COLOR_ENCODINGS:
            colour.append((topic, IMAGE))
        elif encoding in DEPTH_ENCODINGS:
            depth.append((topic, IMAGE))
        elif msg is None and "depth" in topic:
            depth.append((topic, IMAGE))
    for topic in bag.topics_of_type(COMPRESSED_IMAGE):
        msg = _first_message(bag, topic, store)
        fmt = getattr(msg, "format", "") or ""
        if "compresseddepth" in fmt.lower() or (msg is None and "compressedDepth" in topic):
            depth.append((topic, COMPRESSED_IMAGE))
        elif "depth" not in topic or fmt:
            colour.append((topic, COMPRESSED_IMAGE))
    return colour, depth


def _prefer_raw(candidates: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop image_transport republications (``<raw>/compressed``, ``<raw>/compressedDepth``) of a raw topic kept."""
    topics = {t for t, _ in candidates}
    return [(t, ty) for t, ty in candidates
            if not (ty == COMPRESSED_IMAGE and t.rsplit("/", 1)[0] in topics)]


def _namespace(topic: str) -> str:
    return topic.rsplit("/", 1)[0]


def detect_streams(bag: RawBag, options: RobotBagOptions = RobotBagOptions()) -> CameraStreams:
    """The colour, depth, camera-info and TF topics to use; :class:`NoUsableTopicError` saying what is missing."""
    store = make_typestore()

    def named(topic: str, kinds: tuple[str, ...], what: str) -> tuple[str, str]:
        if topic not in bag.topics:
            raise NoUsableTopicError(
                f"{what} topic {topic!r} is not in bag {bag.path}; it has: {bag.describe_topics()}")
        if bag.topics[topic].msgtype not in kinds:
            raise NoUsableTopicError(f"{what} topic {topic} is {bag.topics[topic].msgtype}, expected "
                                     f"{' or '.join(kinds)}")
        return topic, bag.topics[topic].msgtype

    colour_c, depth_c = _classify_image_topics(bag, store)
    problems = []

    def choose(option: Optional[str], candidates, kinds, what: str, flag: str) -> Optional[tuple[str, str]]:
        if option:
            return named(option, kinds, what)
        candidates = _prefer_raw(candidates)
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            problems.append(f"no {what} topic")
        else:
            problems.append(f"several {what} topics ({', '.join(t for t, _ in candidates)}): name one with {flag}")
        return None

    colour = choose(options.color_topic, colour_c, (IMAGE, COMPRESSED_IMAGE), "colour image", "--color-topic")
    depth = choose(options.depth_topic, depth_c, (IMAGE, COMPRESSED_IMAGE), "depth image", "--depth-topic")
    info = None
    if options.camera_info_topic:
        info = named(options.camera_info_topic, (CAMERA_INFO,), "camera info")
    else:
        infos = bag.topics_of_type(CAMERA_INFO)
        if colour is not None and len(infos) > 1:
            # image_transport convention: <namespace>/camera_info beside <namespace>/image_raw
            same_ns = [t for t in infos if _namespace(t) in (_namespace(colour[0]), _namespace(_namespace(colour[0])))]
            infos = same_ns if len(same_ns) == 1 else infos
        if len(infos) == 1:
            info = (infos[0], CAMERA_INFO)
        elif not infos:
            problems.append("no sensor_msgs/msg/CameraInfo topic")
        else:
            problems.append(f"several camera info topics ({', '.join(infos)}): name one with --camera-info-topic")
    tf_topics = tuple(t for t in options.tf_topics if t in bag.topics and bag.topics[t].msgtype == TF_MESSAGE)
    if not tf_topics:
        tf_any = bag.topics_of_type(TF_MESSAGE)
        if tf_any:
            tf_topics = tuple(tf_any)
        else:
            problems.append("no tf2_msgs/msg/TFMessage topic (/tf, /tf_static): camera poses are unknown")
    if problems or colour is None or depth is None or info is None:
        raise NoUsableTopicError(
            f"bag {bag.path} cannot give RGB-D views: {'; '.join(problems)}. Needed: {NEEDED}. "
            f"Found: {bag.describe_topics()}")
    return CameraStreams(colour[0], colour[1], depth[0], depth[1], info[0], tf_topics)


# ============================================================================ decoding
def decode_color(msg, msgtype: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an Image or a jpeg/png CompressedImage."""
    if msgtype == IMAGE:
        return to_rgb8(msg)
    import cv2

    data = np.asarray(msg.data, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageConversionError(f"cannot decode compressed colour image (format {msg.format!r})")
    return np.ascontiguousarray(bgr[..., ::-1])


def decode_depth(msg, msgtype: str) -> np.ndarray:
    """(H, W) float32 metres (NaN invalid) of a 16UC1/32FC1 Image or a compressedDepth png image."""
    if msgtype == IMAGE:
        return to_depth_metres(msg)
    import cv2

    from selfsup_perception.core.geometry.camera import sanitize_depth

    fmt = (msg.format or "").replace(" ", "")
    data = np.asarray(msg.data, dtype=np.uint8)
    if "compressedDepth" not in fmt:
        raise ImageConversionError(
            f"compressed depth needs format '<16UC1|32FC1>; compressedDepth png', got {msg.format!r}")
    if "rvl" in fmt.lower():
        raise ImageConversionError(f"compressedDepth RVL is not supported (format {msg.format!r}); record png")
    if len(data) <= 12:
        raise ImageConversionError("compressedDepth image has no data after its 12-byte header")
    _fmt, quant_a, quant_b = struct.unpack_from("<iff", data.tobytes()[:12])
    img = cv2.imdecode(data[12:], cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint16 or img.ndim != 2:
        raise ImageConversionError(f"cannot decode the png of a compressedDepth image (format {msg.format!r})")
    if fmt.startswith("16UC1"):
        return sanitize_depth(img)  # millimetres
    if fmt.startswith("32FC1"):  # inverse-depth quantisation of compressed_depth_image_transport
        with np.errstate(divide="ignore"):
            depth = np.where(img > 0, quant_a / (img.astype(np.float32) - quant_b), np.nan)
        return sanitize_depth(depth.astype(np.float32))
    raise ImageConversionError(f"compressedDepth of {fmt.split(';')[0]!r} is not supported (16UC1, 32FC1)")


def intrinsics_from_info(info) -> CameraIntrinsics:
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    if not k[0, 0] > 0 or not k[1, 1] > 0:
        raise ValueError(f"camera info has no calibration (K = {k.ravel().tolist()})")
    return CameraIntrinsics.from_matrix(k, int(info.width), int(info.height))


def add_tf_message(buffer: TransformBuffer, msg, static: bool) -> int:
    """Put every transform of a TFMessage into ``buffer``; returns how many were refused (bad values)."""
    refused = 0
    for t in msg.transforms:
        tr, q = t.transform.translation, t.transform.rotation
        stamp = int(t.header.stamp.sec) * 1_000_000_000 + int(t.header.stamp.nanosec)
        try:
            buffer.set_transform(t.header.frame_id, t.child_frame_id,
                                 matrix_from_translation_quaternion((tr.x, tr.y, tr.z), (q.x, q.y, q.z, q.w)),
                                 stamp, static=static)
        except ValueError as exc:
            LOG.warning("ignoring transform %s -> %s: %s", t.header.frame_id, t.child_frame_id, exc)
            refused += 1
    return refused


def _root(buffer: TransformBuffer, frame: str) -> str:
    while (parent := buffer.parent_of(frame)) is not None:
        frame = parent
    return frame


def pair_stamps(color: list[int], depth: list[int], tolerance_ns: int) -> dict[int, int]:
    """colour stamp -> depth stamp, one-to-one, nearest first, within ``tolerance_ns``."""
    depth_sorted = sorted(set(depth))
    candidates = []
    for c in sorted(set(color)):
        i = bisect.bisect_left(depth_sorted, c)
        for j in (i - 1, i):
            if 0 <= j < len(depth_sorted) and abs(depth_sorted[j] - c) <= tolerance_ns:
                candidates.append((abs(depth_sorted[j] - c), c, depth_sorted[j]))
    pairs: dict[int, int] = {}
    used: set[int] = set()
    for _d, c, d in sorted(candidates):
        if c not in pairs and d not in used:
            pairs[c] = d
            used.add(d)
    return pairs


# ============================================================================ reading
def read_views(bag: RawBag, streams: CameraStreams, options: RobotBagOptions = RobotBagOptions(),
               stats: Optional[ReadStats] = None) -> Iterator[ViewResult]:
    """One :class:`ViewResult` per colour image, in stamp order of the pairs (see module docstring)."""
    store = make_typestore()
    stats = stats if stats is not None else ReadStats()
    buffer = TransformBuffer(cache_time_s=1e7)  # the whole bag
    infos: list[tuple[int, object]] = []  # (stamp, CameraInfo), only when it changes
    color_stamps: list[int] = []
    depth_stamps: list[int] = []
    bad: list[ViewResult] = []
    # -- pass 1: TF, camera info, image stamps
    topics = [*streams.tf_topics, streams.info_topic, streams.color_topic, streams.depth_topic]
    for topic, msgtype, log_time, raw in bag.messages(topics):
        try:
            if topic in streams.tf_topics:
                add_tf_message(buffer, store.deserialize_cdr(raw, msgtype), static=topic.endswith("tf_static"))
                stats.tf_messages += 1
            elif topic == streams.info_topic:
                info = store.deserialize_cdr(raw, msgtype)
                last = infos[-1][1] if infos else None
                if last is None or (list(last.k), last.width, last.height, last.header.frame_id) != (
                        list(info.k), info.width, info.height, info.header.frame_id):
                    infos.append((header_stamp_ns(raw), info))
            elif topic == streams.color_topic:
                color_stamps.append(header_stamp_ns(raw))
            else:
                depth_stamps.append(header_stamp_ns(raw))
        except Exception as exc:  # noqa: BLE001 - one bad message is skipped with its reason
            reason = f"bad {msgtype} message on {topic} at {log_time} ns: {exc}"
            LOG.warning("%s", reason)
            if topic == streams.color_topic:
                bad.append(ViewResult(log_time, reason=reason))
    stats.color_images, stats.depth_images = len(color_stamps), len(depth_stamps)
    if not infos:
        raise NoUsableTopicError(f"camera info topic {streams.info_topic} has no readable message")
    camera_frame = (options.camera_frame or infos[0][1].header.frame_id or "").lstrip("/")
    if not camera_frame:
        raise MissingFrameError("the camera info has no frame_id: name the camera frame with --camera-frame")
    known = buffer.frames()
    if camera_frame not in known:
        raise MissingFrameError(
            f"camera frame '{camera_frame}' never appears in the bag's TF ({', '.join(streams.tf_topics)}); "
            f"TF frames: {', '.join(known) or 'none'}; name the camera's optical frame with --camera-frame")
    world_frame = (options.world_frame or _root(buffer, camera_frame)).lstrip("/")
    if world_frame not in known:
        raise MissingFrameError(f"world frame '{world_frame}' never appears in the bag's TF; TF frames: "
                                f"{', '.join(known)}")
    stats.camera_frame, stats.world_frame = camera_frame, world_frame
    pairs = pair_stamps(color_stamps, depth_stamps, int(round(options.pair_tolerance_s * 1e9)))
    stats.paired = len(pairs)
    stats.unpaired_color = len(set(color_stamps)) - len(pairs)
    for stamp in sorted(set(color_stamps) - set(pairs)):
        yield _count(stats, ViewResult(stamp, reason=f"no depth image within {options.pair_tolerance_s * 1e3:.0f} ms"))
    for result in bad:
        yield _count(stats, result)
    info_stamps = [s for s, _ in infos]
    # -- pass 2: decode the pairs (held only until their partner arrives)
    wanted_depth = set(pairs.values())
    colours: dict[int, object] = {}
    depths: dict[int, object] = {}
    by_depth = {d: c for c, d in pairs.items()}
    for topic, msgtype, log_time, raw in bag.messages([streams.color_topic, streams.depth_topic]):
        try:
            stamp = header_stamp_ns(raw)
        except BagReadError:
            continue
        if topic == streams.color_topic and stamp in pairs:
            colours[stamp] = (msgtype, raw)
            key = stamp
        elif topic == streams.depth_topic and stamp in wanted_depth:
            depths[stamp] = (msgtype, raw)
            key = by_depth[stamp]
        else:
            continue
        if key in colours and pairs[key] in depths:
            yield _count(stats, _make_view(key, colours.pop(key), depths.pop(pairs[key]), store, buffer,
                                          infos[max(0, bisect.bisect_right(info_stamps, key) - 1)][1],
                                          camera_frame, world_frame))
    for stamp in sorted(colours):  # a partner that vanished between the two passes (should not happen)
        yield _count(stats, ViewResult(stamp, reason="unpaired on reading: its depth image could not be read again"))


def _count(stats: ReadStats, result: ViewResult) -> ViewResult:
    if result.frame is None:
        kind = result.reason.split(":")[0]
        stats.reasons[kind] = stats.reasons.get(kind, 0) + 1
    return result


def _make_view(stamp: int, colour, depth, store, buffer: TransformBuffer, info, camera_frame: str,
               world_frame: str) -> ViewResult:
    try:
        rgb = decode_color(store.deserialize_cdr(colour[1], colour[0]), colour[0])
        depth_m = decode_depth(store.deserialize_cdr(depth[1], depth[0]), depth[0])
        intrinsics = intrinsics_from_info(info)
    except Exception as exc:  # noqa: BLE001 - undecodable image or calibration: skip this view
        return ViewResult(stamp, reason=f"undecodable image: {exc}")
    h, w = rgb.shape[:2]
    if depth_m.shape != (h, w):
        return ViewResult(stamp, reason=f"size mismatch: depth {depth_m.shape[1]}x{depth_m.shape[0]} is not the "
                                        f"colour image's {w}x{h} (record depth aligned to colour)")
    if (intrinsics.width, intrinsics.height) != (w, h):
        return ViewResult(stamp, reason=f"size mismatch: camera info is for {intrinsics.width}x{intrinsics.height}, "
                                        f"the image is {w}x{h}")
    try:
        pose = buffer.lookup(world_frame, camera_frame, stamp)
    except LookupError as exc:
        return ViewResult(stamp, reason=f"no camera pose: {exc}")
    frame = RgbdFrame(rgb, depth_m.astype(np.float32), intrinsics, pose, stamp * 1e-9, camera_frame)
    try:
        frame.validate()
    except ValueError as exc:
        return ViewResult(stamp, reason=f"invalid view: {exc}")
    return ViewResult(stamp, frame=frame)
