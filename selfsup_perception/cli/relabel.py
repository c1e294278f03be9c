"""Relabel stored interactions with a (newer) labeler, keeping the old labels beside the new.

    python -m selfsup_perception.cli.relabel data/interactions --labeler flow --set min_area_px=60

For every stored sample of ``DATASET_DIR`` the labeler makes a new mask label with its
provenance (labeler, version, config hash, scene, the model version that chose the action,
``relabeled_from``: the replaced label's provenance). Before anything is overwritten, the
current ``labels/<output>/`` is copied as a whole to ``labels/<output>.prev-<time>/`` (a
temporary copy renamed into place), so the old labels stay beside the new ones and a
trainer can be pointed at either (its ``labeler`` parameter names the directory). New
labels are written file by file atomically. A running trainer keeps the labels it has
already loaded: restart it to train on the new ones.

Prints how many labels changed (kept / negative / discarded, mask IoU with the old label).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from selfsup_perception.core.dataset.provenance import label_provenance
from selfsup_perception.core.dataset.sample_store import CorruptSampleError, SampleStore, check_file_id
from selfsup_perception.core.labeling import (
    FlowLabelerConfig,
    FlowMaskLabeler,
    FrameDifferenceConfig,
    FrameDifferenceLabeler,
    GraspOutcomeLabeler,
)
from selfsup_perception.core.types import InteractionKind

LABELERS = {"flow": (FlowMaskLabeler, FlowLabelerConfig), "frame_difference": (FrameDifferenceLabeler,
                                                                               FrameDifferenceConfig)}


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def make_labeler(name: str, settings: Sequence[str] = ()):
    """The labeler ``name`` with top-level config fields set from ``key=value`` strings (values as JSON)."""
    if name not in LABELERS:
        raise ValueError(f"unknown labeler {name!r}; choose from {', '.join(LABELERS)}")
    cls, config_cls = LABELERS[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    overrides = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(fields)}")
        overrides[key] = _parse_value(value)
    return cls(dataclasses.replace(config_cls(), **overrides))


def archive_labels(store: SampleStore, name: str) -> Optional[Path]:
    """Copy ``labels/<name>/`` to ``labels/<name>.prev-<time>/`` (atomically, by rename); None if there are none."""
    src = store.labels_dir / name
    if not src.is_dir() or not any(src.glob("*.npz")):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = store.labels_dir / f"{name}.prev-{stamp}"
    n = 1
    while dest.exists():
        dest = store.labels_dir / f"{name}.prev-{stamp}-{n}"
        n += 1
    tmp = store.labels_dir / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.tmp", ".*"))
    tmp.rename(dest)
    return dest


def _status(label) -> str:
    return "discarded" if not label.kept else ("negative" if label.is_negative else "kept")


def relabel(store: SampleStore, labeler, output: Optional[str] = None, log=print, grasp_labeler=None) -> dict:
    """Relabel every stored sample; returns counts {'relabeled', 'failed', 'changed', 'before', 'after', 'archive'}.

    With ``grasp_labeler``, grasp samples are labelled by it (as the labeler node does), pushes by ``labeler``;
    both go to the same label set."""
    output = output or labeler.name
    check_file_id(output, "labels name")
    archive = archive_labels(store, output)
    if archive is not None:
        log(f"old labels kept in {archive}")
    counts = {"relabeled": 0, "failed": 0, "changed": 0, "archive": str(archive) if archive else "",
              "before": {"kept": 0, "negative": 0, "discarded": 0, "none": 0},
              "after": {"kept": 0, "negative": 0, "discarded": 0}}
    ious = []
    for sample_id in store.sample_ids():
        try:
            sample = store.read_sample(sample_id)
        except (CorruptSampleError, FileNotFoundError) as exc:
            log(f"  {sample_id}: skipped ({exc})")
            counts["failed"] += 1
            continue
        try:
            old = store.read_label(sample_id, output)
        except (CorruptSampleError, FileNotFoundError):
            old = None
        try:
            used = grasp_labeler if grasp_labeler is not None and sample.kind == InteractionKind.GRASP else labeler
            new = used.label(sample)
        except ValueError as exc:  # a sample the labeler cannot use (e.g. no valid depth)
            log(f"  {sample_id}: not relabeled ({exc})")
            counts["failed"] += 1
            continue
        previous = None
        if old is not None:
            previous = old.provenance or {"labeler": old.labeler, "note": "made before labels recorded provenance"}
            previous = {**previous, "kept": bool(old.kept), "is_negative": bool(old.is_negative),
                        "reason": old.reason}
        new.provenance = label_provenance(used, sample, relabeled_from=previous)
        store.write_label(sample_id, new, labels_name=output, overwrite=True)
        counts["relabeled"] += 1
        counts["before"][_status(old) if old is not None else "none"] += 1
        counts["after"][_status(new)] += 1
        if old is not None:
            union = np.logical_or(old.mask, new.mask).sum() if old.mask.shape == new.mask.shape else 1
            iou = float(np.logical_and(old.mask, new.mask).sum() / union) if union else 1.0
            changed = _status(old) != _status(new) or iou < 0.99
            counts["changed"] += int(changed)
            if old.kept and new.kept and not new.is_negative:
                ious.append(iou)
    counts["mean_iou_with_old"] = float(np.mean(ious)) if ious else float("nan")
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset_dir", help="sample store (data/interactions or a demo run's interactions/)")
    parser.add_argument("--labeler", default="flow", choices=sorted(LABELERS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="labeler config field (repeatable), e.g. --set min_area_px=60")
    parser.add_argument("--grasp-labeler", default="grasp_outcome", choices=["grasp_outcome", "push"],
                        help="grasps: grasp_outcome (what was lifted, or a negative; the labeler node's default) "
                             "or push (the --labeler)")
    parser.add_argument("--output", default=None,
                        help="labels directory name (default: the labeler's name, the one the trainer reads)")
    args = parser.parse_args(argv)
    if not (Path(args.dataset_dir) / "samples").is_dir():
        print(f"error: {args.dataset_dir} is not a sample store (no samples/ directory)", file=sys.stderr)
        return 2
    try:
        labeler = make_labeler(args.labeler, args.set)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    grasp_labeler = GraspOutcomeLabeler() if args.grasp_labeler == "grasp_outcome" else None
    counts = relabel(SampleStore(args.dataset_dir), labeler, args.output, grasp_labeler=grasp_labeler)
    b, a = counts["before"], counts["after"]
    print(f"relabeled {counts['relabeled']} samples with {labeler.name} ({counts['failed']} failed); "
          f"{counts['changed']} labels changed")
    print(f"  before: {b['kept']} kept, {b['negative']} negative, {b['discarded']} discarded, {b['none']} unlabeled")
    print(f"  after:  {a['kept']} kept, {a['negative']} negative, {a['discarded']} discarded")
    print(f"  mean mask IoU with the old label (kept positives): {counts['mean_iou_with_old']:.3f}")
    return 0 if counts["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
