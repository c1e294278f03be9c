"""Message <-> core-type conversions (the only place where messages meet core types).

Importing this module needs the message packages but not ``rclpy.init``; tests build
messages in memory.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose as PoseMsg
from sensor_msgs.msg import CameraInfo, Image, RegionOfInterest

from selfsup_perception.core.image_conversion import (
    ImageConversionError,
    array_to_image,
    image_to_array,
    depth_to_encoding,
    to_depth_metres,
    to_rgb8,
)
from selfsup_perception.core.types import (
    CameraIntrinsics,
    InteractionKind,
    InteractionOutcome,
    InteractionSample,
    MaskLabel,
    Pose,
    RgbdFrame,
)
from selfsup_perception.msg import InteractionSample as InteractionSampleMsg
from selfsup_perception.msg import LabeledSample as LabeledSampleMsg
from selfsup_perception.msg import RgbdView
from selfsup_perception.msg import SegmentedInstance


def time_to_msg(seconds: float) -> Time:
    sec = int(np.floor(seconds))
    return Time(sec=sec, nanosec=int(round((seconds - sec) * 1e9)) % 1_000_000_000)


def time_from_msg(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def rgb_to_msg(rgb: np.ndarray, frame_id: str = "", stamp: float = 0.0) -> Image:
    msg = array_to_image(rgb, "rgb8", Image())
    msg.header.frame_id, msg.header.stamp = frame_id, time_to_msg(stamp)
    return msg


def depth_to_msg(depth_m: np.ndarray, encoding: str = "32FC1", frame_id: str = "", stamp: float = 0.0) -> Image:
    msg = array_to_image(depth_to_encoding(depth_m, encoding), encoding, Image())
    msg.header.frame_id, msg.header.stamp = frame_id, time_to_msg(stamp)
    return msg


def mask_to_msg(mask: np.ndarray) -> Image:
    return array_to_image(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, "mono8", Image())


def mask_from_msg(msg: Image) -> np.ndarray:
    """(H, W) bool from a mono8 mask image (> 127 is inside)."""
    if msg.encoding not in ("mono8", "8UC1"):
        raise ImageConversionError(f"a mask must be mono8, got encoding {msg.encoding!r}")
    return image_to_array(msg) > 127


def intrinsics_to_camera_info(k: CameraIntrinsics, frame_id: str = "", stamp: float = 0.0) -> CameraInfo:
    info = CameraInfo()
    info.header.frame_id, info.header.stamp = frame_id, time_to_msg(stamp)
    info.width, info.height = k.width, k.height
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def camera_info_to_intrinsics(info: CameraInfo) -> CameraIntrinsics:
    if info.width == 0 or info.height == 0:
        raise ValueError("camera_info has zero width or height")
    k = np.asarray(info.k, dtype=np.float64)
    if k[0] <= 0 or k[4] <= 0:
        raise ValueError(f"camera_info has invalid focal lengths fx={k[0]}, fy={k[4]}")
    return CameraIntrinsics.from_matrix(k, info.width, info.height)


def matrix_to_pose_msg(t: np.ndarray) -> PoseMsg:
    pose = Pose.from_matrix(t)
    msg = PoseMsg()
    msg.position.x, msg.position.y, msg.position.z = pose.position
    msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = pose.orientation
    return msg


def pose_msg_to_matrix(msg: PoseMsg) -> np.ndarray:
    q = (msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w)
    if not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-9:
        raise ValueError("pose has an invalid (zero or non-finite) orientation quaternion")
    if not np.all(np.isfinite((msg.position.x, msg.position.y, msg.position.z))):
        raise ValueError("pose has a non-finite position")
    return Pose((msg.position.x, msg.position.y, msg.position.z), q).as_matrix()


def point_to_msg(xyz) -> Point:
    return Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def point_from_msg(p: Point) -> tuple[float, float, float]:
    return (p.x, p.y, p.z)


def frame_to_view_msg(frame: RgbdFrame, *, depth_encoding: str = "32FC1", world_frame: str = "world") -> RgbdView:
    view = RgbdView()
    view.header.frame_id, view.header.stamp = frame.frame_id, time_to_msg(frame.stamp)
    view.rgb = rgb_to_msg(frame.rgb, frame.frame_id, frame.stamp)
    view.depth = depth_to_msg(frame.depth, depth_encoding, frame.frame_id, frame.stamp)
    view.camera_info = intrinsics_to_camera_info(frame.intrinsics, frame.frame_id, frame.stamp)
    view.world_frame = world_frame
    view.camera_pose = matrix_to_pose_msg(frame.camera_to_world)
    return view


def frame_from_images(rgb_msg: Image, depth_msg: Image, info: CameraInfo,
                      camera_to_world: np.ndarray | None = None) -> RgbdFrame:
    """Build and validate a frame from the three camera messages (clear errors on mismatch)."""
    rgb = to_rgb8(rgb_msg)
    depth = to_depth_metres(depth_msg)
    if depth.shape != rgb.shape[:2]:
        raise ImageConversionError(
            f"depth image {depth.shape[1]}x{depth.shape[0]} does not match rgb {rgb.shape[1]}x{rgb.shape[0]}"
        )
    intrinsics = camera_info_to_intrinsics(info)
    frame = RgbdFrame(
        rgb=rgb, depth=depth, intrinsics=intrinsics,
        camera_to_world=np.eye(4) if camera_to_world is None else camera_to_world,
        stamp=time_from_msg(rgb_msg.header.stamp), frame_id=rgb_msg.header.frame_id or info.header.frame_id,
    )
    return frame.validate()


def view_msg_to_frame(view: RgbdView) -> RgbdFrame:
    return frame_from_images(view.rgb, view.depth, view.camera_info, pose_msg_to_matrix(view.camera_pose))


def sample_to_msg(sample: InteractionSample, *, depth_encoding: str = "32FC1",
                  world_frame: str = "world") -> InteractionSampleMsg:
    msg = InteractionSampleMsg()
    msg.header.stamp = time_to_msg(sample.before.stamp)
    msg.header.frame_id = world_frame
    msg.sample_id = sample.sample_id
    msg.kind = int(sample.kind)
    msg.before = frame_to_view_msg(sample.before, depth_encoding=depth_encoding, world_frame=world_frame)
    msg.after = frame_to_view_msg(sample.after, depth_encoding=depth_encoding, world_frame=world_frame)
    msg.action_pixel = [float(sample.action_pixel[0]), float(sample.action_pixel[1])]
    msg.start_point = point_to_msg(sample.start_point)
    msg.end_point = point_to_msg(sample.end_point)
    msg.outcome = int(sample.outcome)
    msg.outcome_message = sample.message
    msg.model_version, msg.scene_id = sample.model_version, sample.scene_id
    return msg


def sample_from_msg(msg: InteractionSampleMsg) -> InteractionSample:
    before, after = view_msg_to_frame(msg.before), view_msg_to_frame(msg.after)
    if before.shape != after.shape:
        raise ImageConversionError(f"before image {before.shape} and after image {after.shape} differ in size")
    return InteractionSample(
        sample_id=msg.sample_id, kind=InteractionKind(msg.kind), before=before, after=after,
        action_pixel=(float(msg.action_pixel[0]), float(msg.action_pixel[1])),
        start_point=point_from_msg(msg.start_point), end_point=point_from_msg(msg.end_point),
        outcome=InteractionOutcome(msg.outcome), message=msg.outcome_message,
        model_version=msg.model_version, scene_id=msg.scene_id,
    )


def label_to_msg(sample_msg: InteractionSampleMsg, label: MaskLabel) -> LabeledSampleMsg:
    out = LabeledSampleMsg()
    out.header = sample_msg.header
    out.sample = sample_msg
    out.mask = mask_to_msg(label.mask)
    out.is_negative, out.kept = bool(label.is_negative), bool(label.kept)
    out.reason, out.labeler = label.reason, label.labeler
    numeric = {k: float(v) for k, v in label.stats.items() if isinstance(v, (int, float, np.floating, np.integer))}
    out.stat_names = list(numeric)
    out.stat_values = [float(v) for v in numeric.values()]
    return out


def label_from_msg(msg: LabeledSampleMsg) -> tuple[InteractionSample, MaskLabel]:
    sample = sample_from_msg(msg.sample)
    mask = mask_from_msg(msg.mask)
    label = MaskLabel(mask=mask, is_negative=msg.is_negative, kept=msg.kept, reason=msg.reason,
                      labeler=msg.labeler, stats=dict(zip(msg.stat_names, msg.stat_values)))
    return sample, label


def instance_masks_from_msg(segmentation, shape: tuple[int, int]) -> tuple[list[np.ndarray], list[float]]:
    """Full-image boolean masks (H, W) and scores of an ``InstanceSegmentation`` message.

    Each ``SegmentedInstance`` carries its mask cropped to its box; it is pasted back at the box
    offset (clipped to the image). Inverse of how the inference node crops masks.
    """
    h, w = shape
    masks, scores = [], []
    for inst in segmentation.instances:
        m = np.zeros((h, w), dtype=bool)
        crop = mask_from_msg(inst.mask)
        x0, y0 = int(inst.box.x_offset), int(inst.box.y_offset)
        if 0 <= x0 < w and 0 <= y0 < h:
            m[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop[: h - y0, : w - x0]
        masks.append(m)
        scores.append(float(inst.score))
    return masks, scores


def instances_to_msgs(instances) -> list:
    """``SegmentedInstance`` messages (ids 1..N, masks cropped to their boxes) of core ``Instance`` results."""
    out = []
    for i, inst in enumerate(instances):
        x0, y0, x1, y1 = (int(v) for v in inst.box)
        item = SegmentedInstance(id=i + 1, score=float(inst.score), mask=mask_to_msg(inst.mask[y0:y1 + 1, x0:x1 + 1]))
        item.box = RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0 + 1, height=y1 - y0 + 1)
        out.append(item)
    return out


def ground_truth_from_sim(before, after, moved_threshold_m: float = 0.005) -> dict:
    """Ground truth of one interaction from two ``SimGroundTruth`` responses (before and after it).

    Keys: ``instance_mask_before``/``_after`` (uint16 ids), ``semantic_mask_before``, ``moved_instance``
    (the id whose position changed most, 0 if none moved more than ``moved_threshold_m``).
    """
    from selfsup_perception.core.evaluation.ground_truth import moved_instance

    def positions(resp):
        return {int(i): pose_msg_to_matrix(pm)[:3, 3] for i, pm in zip(resp.instance_ids, resp.object_poses)}

    moved, _ = moved_instance(positions(before), positions(after), moved_threshold_m)
    return {
        "instance_mask_before": image_to_array(before.instance_mask),
        "instance_mask_after": image_to_array(after.instance_mask),
        "semantic_mask_before": image_to_array(before.semantic_mask),
        "moved_instance": moved,
    }
