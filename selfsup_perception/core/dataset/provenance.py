"""Where a label came from: the record stored with every mask label (ROS-free).

``label_provenance(labeler, sample)`` is what the labeler node and ``cli/relabel.py`` attach to
each :class:`~selfsup_perception.core.types.MaskLabel` (``label.provenance``, stored in the
label file's metadata)::

    {"labeler": "flow", "labeler_version": "1", "config_hash": "3f2a...",  # sha256 of the config, 16 hex
     "config": {...},                  # the labeler's configuration itself
     "sample_id": "...", "scene_id": "...",   # scene/episode ("" when the robot did not record one)
     "model_version": "instance_segmentation/v7",  # whose hypothesis chose the action ("" = geometry)
     "created": "2026-12-02T10:00:00+0000", "relabeled_from": {...}}   # the replaced label's provenance, if any

A labeler states its version with a ``version`` attribute (default "1"); the config hash
changes with any setting, so labels from two configurations never look alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any, Optional

from selfsup_perception.core.types import InteractionSample


def labeler_config(labeler: Any) -> dict:
    """The labeler's configuration as plain JSON values ({} when it has none)."""
    config = getattr(labeler, "config", None)
    if config is None:
        return {}
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    return json.loads(json.dumps(config, default=str, sort_keys=True))


def config_hash(config: dict) -> str:
    """16 hex digits of the SHA-256 of ``config`` in canonical JSON (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def label_provenance(labeler: Any, sample: InteractionSample, *, relabeled_from: Optional[dict] = None) -> dict:
    """The provenance record of a label that ``labeler`` made from ``sample`` (see module docstring)."""
    config = labeler_config(labeler)
    record = {
        "labeler": str(getattr(labeler, "name", type(labeler).__name__)),
        "labeler_version": str(getattr(labeler, "version", "1")),
        "config_hash": config_hash(config),
        "config": config,
        "sample_id": sample.sample_id,
        "scene_id": sample.scene_id,
        "model_version": sample.model_version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if relabeled_from:
        record["relabeled_from"] = relabeled_from
    return record
