"""Replay recorded interactions from a rosbag2 bag into a dataset, labeled, for offline training.

    python -m selfsup_perception.cli.replay_bag --bag data/bags/interactions_<time> \\
        --out data/replayed [--labeler flow|frame_difference] [--topic interaction/samples]
    python -m selfsup_perception.cli.train_offline --dataset data/replayed --out data/offline

Reads every InteractionSample message (MCAP or sqlite3 bags, with rclpy's deserializer),
stores each one atomically in a SampleStore (samples already there are skipped, so a replay
can be resumed or repeated) and labels it with the chosen labeler. A bad message is
reported and skipped; an unreadable bag ends with a clear error (exit code 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

LOG = logging.getLogger("replay_bag")


def replay(bag: str, out: str, labeler_name: str = "flow", topic: Optional[str] = None) -> dict:
    """Store and label the bag's interaction samples; returns counts."""
    from selfsup_perception.core.dataset.sample_store import SampleStore
    from selfsup_perception.core.image_conversion import ImageConversionError
    from selfsup_perception.core.labeling import FlowMaskLabeler, FrameDifferenceLabeler
    from selfsup_perception.msg import InteractionSample
    from selfsup_perception.ros.bag_io import read_bag
    from selfsup_perception.ros.conversions import sample_from_msg

    labeler = FlowMaskLabeler() if labeler_name == "flow" else FrameDifferenceLabeler()
    store = SampleStore(out)
    counts = {"read": 0, "stored": 0, "skipped_existing": 0, "bad": 0, "labeled": 0, "kept": 0}
    for _, msg in read_bag(bag, InteractionSample, topic=topic):
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
        if sample.sample_id not in store.labeled_ids(labeler.name):
            label = labeler.label(sample)
            store.write_label(sample.sample_id, label)
            counts["labeled"] += 1
            counts["kept"] += int(label.kept)
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bag", required=True, help="rosbag2 directory (MCAP or sqlite3)")
    parser.add_argument("--out", required=True, help="dataset directory (SampleStore)")
    parser.add_argument("--labeler", default="flow", choices=["flow", "frame_difference"])
    parser.add_argument("--topic", default=None, help="only this topic (default: every InteractionSample topic)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from selfsup_perception.ros.bag_io import BagReadError

    try:
        counts = replay(args.bag, args.out, args.labeler, args.topic)
    except (FileNotFoundError, BagReadError) as exc:
        LOG.error("%s", exc)
        return 2
    LOG.info("%s", ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
