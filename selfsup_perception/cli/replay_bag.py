"""Replay a rosbag2 bag (MCAP or sqlite3) into a dataset for offline training.

    python -m selfsup_perception.cli.replay_bag BAG --out DIR [--mode auto|interactions|views]
        [--color-topic T --depth-topic T --camera-info-topic T --camera-frame F --world-frame F]
    python -m selfsup_perception.cli.train_offline --task descriptors --dataset DIR --out RUN

Modes (``auto``, the default, picks by what the bag contains):

* ``interactions``: this package's ``InteractionSample`` topic -> a labeled SampleStore (``samples/``,
  ``labels/<labeler>/``), for instance-segmentation training. Samples already there are skipped, so
  a replay can be resumed or repeated.
* ``views``: a camera-only robot bag (colour + depth images, CameraInfo, /tf, /tf_static) -> a
  registration view-pair dataset (PairStore: ``views/*.npz`` with regions, ``pairs.json``) of the
  views whose overlap IoU lies in [iou_low, iou_high], for region-consistency pre-training and
  descriptor training. Colour and depth are paired by stamp, the camera pose comes from TF at the
  colour stamp.

One bad message or one sample that cannot be labeled is skipped with its reason and the replay goes
on; a truncated MCAP file gives every complete message before the cut (reported). Exit 0 with a
one-line summary on stdout; 2 with a message saying what to do when the bag cannot be used.
Nothing is ever written into the bag's folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

LOG = logging.getLogger("replay_bag")

INTERACTION_TYPE = "selfsup_perception/msg/InteractionSample"


class ReplayError(RuntimeError):
    """The replay cannot start (bad arguments, unusable bag)."""


def _check_out(bag: Path, out: Path) -> None:
    bag_dir = (bag if bag.is_dir() else bag.parent).resolve()
    out = out.resolve()
    if out == bag_dir or bag_dir in out.parents:
        raise ReplayError(f"--out {out} is inside the bag folder {bag_dir}; nothing may be written there: "
                          f"choose a directory outside it")


def _summarise_truncation(bag) -> str:
    return "; ".join(t.describe() for t in bag.truncation)


def replay(bag: str, out: str, labeler_name: str = "flow", topic: Optional[str] = None) -> dict:
    """Store and label the bag's interaction samples; returns counts."""
    import numpy as np

    from selfsup_perception.core.dataset.sample_store import SampleStore
    from selfsup_perception.core.image_conversion import ImageConversionError
    from selfsup_perception.core.labeling import FlowMaskLabeler, FrameDifferenceLabeler
    from selfsup_perception.core.types import MaskLabel
    from selfsup_perception.msg import InteractionSample
    from selfsup_perception.ros.bag_io import read_bag
    from selfsup_perception.ros.conversions import sample_from_msg

    _check_out(Path(bag), Path(out))
    labeler = FlowMaskLabeler() if labeler_name == "flow" else FrameDifferenceLabeler()
    counts = {"read": 0, "stored": 0, "skipped_existing": 0, "bad": 0, "labeled": 0, "kept": 0, "unlabelable": 0}

    def on_error(stamp: int, exc: Exception) -> None:
        counts["read"] += 1
        counts["bad"] += 1
        LOG.warning("skipping the message at %d ns: cannot decode it: %s", stamp, exc)

    messages = read_bag(bag, InteractionSample, topic=topic, on_error=on_error)
    first = next(messages, None)  # errors about the bag itself surface before anything is written
    store = SampleStore(out)
    for item in ([first] if first is not None else []), messages:
        for _, msg in item:
            counts["read"] += 1
            try:
                sample = sample_from_msg(msg)
            except (ImageConversionError, ValueError) as exc:
                counts["bad"] += 1
                LOG.warning("skipping sample %r: %s", msg.sample_id, exc)
                continue
            if store.sample_path(sample.sample_id).exists():
                counts["skipped_existing"] += 1
            else:
                store.write_sample(sample)
                counts["stored"] += 1
            if sample.sample_id in store.labeled_ids(labeler.name):
                continue
            try:
                label = labeler.label(sample)
            except Exception as exc:  # noqa: BLE001 - one sample the labeler cannot label: record why, go on
                reason = f"labeler failed: {type(exc).__name__}: {exc}"
                LOG.warning("sample %s not labeled: %s", sample.sample_id, reason)
                label = MaskLabel(mask=np.zeros(sample.before.shape, dtype=bool), is_negative=False, kept=False,
                                  reason=reason, labeler=labeler.name)
                counts["unlabelable"] += 1
            else:
                if label.stats.get("skipped"):  # a data condition (no table, no depth): the label says why
                    LOG.warning("sample %s not labeled: %s", sample.sample_id, label.reason)
                    counts["unlabelable"] += 1
                else:
                    counts["labeled"] += 1
                    counts["kept"] += int(label.kept)
                    if not label.kept:
                        LOG.info("sample %s labeled but not kept: %s", sample.sample_id, label.reason)
            store.write_label(sample.sample_id, label)
    return counts


def replay_views(bag: str, out: str, options=None, registry_config=None, max_views: int = 0,
                 min_interval_s: float = 0.0) -> dict:
    """Register the bag's RGB-D views into a PairStore at ``out``; returns counts.

    ``min_interval_s``: views closer in time than this to the last one considered are skipped
    (a 30 Hz camera gives far more near-duplicates than registration needs).
    """
    from selfsup_perception.core.registration.pair_store import PairStore
    from selfsup_perception.core.registration.view_registry import ViewRegistry, ViewRegistryConfig
    from selfsup_perception.ros.bag_files import RawBag
    from selfsup_perception.ros.robot_bag import ReadStats, RobotBagOptions, detect_streams, read_views

    _check_out(Path(bag), Path(out))
    options = options or RobotBagOptions()
    raw = RawBag(bag)
    streams = detect_streams(raw, options)
    LOG.info("colour %s, depth %s, camera info %s, TF %s", streams.color_topic, streams.depth_topic,
             streams.info_topic, ", ".join(streams.tf_topics))
    stats = ReadStats()
    views = read_views(raw, streams, options, stats)
    first = next(views, None)  # a missing camera frame surfaces before the store is created
    registry = ViewRegistry(PairStore(out), registry_config or ViewRegistryConfig())
    for view_id in registry.load_registered():  # continue a store from an earlier replay
        LOG.warning("stored view %s is missing or corrupt; skipped", view_id)
    counts = {"images": 0, "views": 0, "pairs": 0, "duplicates": 0, "skipped": 0}
    reasons: dict[str, int] = {}
    last_considered: Optional[int] = None
    for part in ([first] if first is not None else []), views:
        for result in part:
            counts["images"] += 1
            if (result.frame is not None and min_interval_s > 0 and last_considered is not None
                    and abs(result.stamp_ns - last_considered) < min_interval_s * 1e9):
                counts["skipped"] += 1
                reasons["within --min-interval-ms"] = reasons.get("within --min-interval-ms", 0) + 1
                continue
            if result.frame is not None:
                last_considered = result.stamp_ns
            if result.frame is None:
                counts["skipped"] += 1
                reasons[result.reason.split(":")[0]] = reasons.get(result.reason.split(":")[0], 0) + 1
                LOG.info("view at %.3f s skipped: %s", result.stamp_ns * 1e-9, result.reason)
                continue
            if max_views and counts["views"] >= max_views:
                counts["skipped"] += 1
                reasons["max views reached"] = reasons.get("max views reached", 0) + 1
                continue
            try:
                registered = registry.add_view(result.frame)
            except Exception as exc:  # noqa: BLE001 - one view that cannot be registered: skip it, go on
                registered = None
                reason = f"registration failed: {type(exc).__name__}: {exc}"
            if registered is not None and registered.stored:
                counts["views"] += 1
                counts["pairs"] += len(registered.pairs)
                continue
            reason = registered.reason if registered is not None else reason
            if reason.startswith("duplicate"):
                counts["duplicates"] += 1
            else:
                counts["skipped"] += 1
                reasons[reason.split(":")[0]] = reasons.get(reason.split(":")[0], 0) + 1
            LOG.info("view at %.3f s not stored: %s", result.stamp_ns * 1e-9, reason)
    counts["total_pairs"] = len(registry.store.pairs())
    counts["camera_frame"], counts["world_frame"] = stats.camera_frame, stats.world_frame
    counts["skip_reasons"] = reasons
    counts["truncated"] = _summarise_truncation(raw)
    return counts


def choose_mode(bag: str, options=None) -> str:
    """'interactions' when the bag has InteractionSample messages, else 'views' if it has RGB-D + TF."""
    from selfsup_perception.ros.bag_files import RawBag
    from selfsup_perception.ros.robot_bag import NEEDED, NoUsableTopicError, detect_streams

    raw = RawBag(bag)
    if raw.topics_of_type(INTERACTION_TYPE):
        return "interactions"
    try:
        detect_streams(raw, options)
    except NoUsableTopicError as exc:
        raise NoUsableTopicError(
            f"bag {raw.path} has nothing to replay: it needs either {INTERACTION_TYPE} messages "
            f"(--mode interactions) or {NEEDED} (--mode views). Found: {raw.describe_topics()}. "
            f"For views: {str(exc).split(': ', 1)[1].split('. Needed')[0]}") from exc
    return "views"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bag", nargs="?", help="rosbag2 folder (MCAP or sqlite3) or a single .mcap file")
    ap.add_argument("--bag", dest="bag_option", help=argparse.SUPPRESS)  # the old spelling
    ap.add_argument("--out", required=True, help="dataset directory to create or extend (outside the bag)")
    ap.add_argument("--mode", default="auto", choices=["auto", "interactions", "views"])
    g = ap.add_argument_group("interactions mode")
    g.add_argument("--labeler", default="flow", choices=["flow", "frame_difference"])
    g.add_argument("--topic", default=None, help="only this InteractionSample topic (default: every one)")
    g = ap.add_argument_group("views mode (topics are auto-detected by type when unambiguous)")
    g.add_argument("--color-topic", default=None, help="sensor_msgs/Image or CompressedImage colour topic")
    g.add_argument("--depth-topic", default=None, help="depth Image (16UC1 mm, 32FC1 m) or compressedDepth topic")
    g.add_argument("--camera-info-topic", default=None)
    g.add_argument("--tf-topics", nargs="+", default=["/tf", "/tf_static"])
    g.add_argument("--camera-frame", default=None, help="camera optical frame (default: the CameraInfo frame_id)")
    g.add_argument("--world-frame", default=None, help="frame of the camera poses (default: root of the TF tree)")
    g.add_argument("--pair-tolerance-ms", type=float, default=20.0, help="max colour/depth stamp difference")
    g.add_argument("--iou-low", type=float, default=0.3)
    g.add_argument("--iou-high", type=float, default=0.9)
    g.add_argument("--duplicate-iou", type=float, default=0.97)
    g.add_argument("--max-views", type=int, default=0, help="stop storing after this many views (0: no limit)")
    g.add_argument("--min-interval-ms", type=float, default=0.0,
                   help="skip images closer in time than this to the last one used (0: use every image)")
    g.add_argument("--max-baseline-m", type=float, default=0.0,
                   help="compare a new view only with stored views whose camera is this close (0: all)")
    g.add_argument("--no-regions", action="store_true", help="do not precompute Felzenszwalb regions")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if (args.bag is None) == (args.bag_option is None):
        ap.error("give the bag once: BAG (or --bag BAG)")
    args.bag = args.bag or args.bag_option
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from selfsup_perception.core.registration.view_registry import ViewRegistryConfig
    from selfsup_perception.ros.bag_files import BagReadError, RawBag
    from selfsup_perception.ros.robot_bag import RobotBagOptions

    try:
        options = RobotBagOptions(args.color_topic, args.depth_topic, args.camera_info_topic, tuple(args.tf_topics),
                                  args.camera_frame, args.world_frame, args.pair_tolerance_ms / 1000.0)
        registry = ViewRegistryConfig(iou_low=args.iou_low, iou_high=args.iou_high, duplicate_iou=args.duplicate_iou,
                                      compute_regions=not args.no_regions, max_baseline_m=args.max_baseline_m)
        mode = choose_mode(args.bag, options) if args.mode == "auto" else args.mode
        if mode == "interactions":
            counts = replay(args.bag, args.out, args.labeler, args.topic)
            truncated = _summarise_truncation(RawBag(args.bag))
            line = (f"replayed {args.bag} (interactions): {counts['read']} samples read, {counts['stored']} stored, "
                    f"{counts['skipped_existing']} already there, {counts['bad']} bad, {counts['labeled']} labeled "
                    f"({counts['kept']} kept), {counts['unlabelable']} unlabelable -> {args.out}")
        else:
            counts = replay_views(args.bag, args.out, options, registry, args.max_views, args.min_interval_ms / 1000.0)
            truncated = counts["truncated"]
            reasons = ", ".join(f"{k} x{v}" for k, v in counts["skip_reasons"].items())
            line = (f"replayed {args.bag} (views): {counts['images']} colour images, {counts['views']} views stored, "
                    f"{counts['duplicates']} duplicates, {counts['skipped']} skipped"
                    f"{f' ({reasons})' if reasons else ''}, "
                    f"{counts['pairs']} new pairs ({counts['total_pairs']} in the dataset), poses of "
                    f"'{counts['camera_frame']}' in '{counts['world_frame']}' -> {args.out}")
    except (FileNotFoundError, BagReadError, ReplayError, ValueError) as exc:
        print(f"replay_bag: error: {exc}", file=sys.stderr)
        return 2
    if truncated:
        line += f" [{truncated}]"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
