"""Ground truth of an interaction, kept beside (never inside) the robot's own data (ROS-free).

Where a world can report it (the simulator's ``/sim/ground_truth``, or a hand-labelled real
set), an evaluation harness stores per interaction: the instance masks before and after, the
semantic mask before and which instance moved. The interaction and labeler nodes never see it;
the demo and the benches read it to measure label quality and hypothesis recall.

Layout: ``<root>/<sample_id>.npz`` (arrays, no pickle), written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from selfsup_perception.core.dataset.atomic_io import atomic_write_bytes, check_file_id

GROUND_TRUTH_KEYS = ("instance_mask_before", "instance_mask_after", "semantic_mask_before")


def moved_instance(positions_before: Mapping[int, np.ndarray], positions_after: Mapping[int, np.ndarray],
                   threshold_m: float = 0.005) -> tuple[int, float]:
    """(id, distance) of the object whose position changed most; id 0 if none moved more than ``threshold_m``."""
    best, best_d = 0, 0.0
    for i, p0 in positions_before.items():
        if i in positions_after:
            d = float(np.linalg.norm(np.asarray(positions_after[i], float)[:3] - np.asarray(p0, float)[:3]))
            if d > best_d:
                best, best_d = int(i), d
    return (best if best_d > threshold_m else 0), best_d


class GroundTruthStore:
    """Per-interaction ground truth in a directory of its own (evaluation only)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, sample_id: str) -> Path:
        check_file_id(sample_id)
        return self.root / f"{sample_id}.npz"

    def write(self, sample_id: str, ground_truth: Mapping) -> Path:
        arrays = {k: np.asarray(ground_truth[k]) for k in GROUND_TRUTH_KEYS if k in ground_truth}
        arrays["moved_instance"] = np.array(int(ground_truth.get("moved_instance", 0)))
        path = self.path(sample_id)
        atomic_write_bytes(path, lambda f: np.savez_compressed(f, **arrays))
        return path

    def read(self, sample_id: str) -> Optional[dict]:
        """The stored ground truth, or None if there is none for ``sample_id``."""
        path = self.path(sample_id)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
        out["moved_instance"] = int(out.get("moved_instance", 0))
        return out
