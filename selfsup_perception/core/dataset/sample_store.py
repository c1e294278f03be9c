"""Crash-safe on-disk storage of interaction samples and their mask labels.

Layout of a dataset directory::

    <root>/samples/<sample_id>.npz        one interaction (before/after RGB-D, intrinsics, poses, action)
    <root>/labels/<labeler>/<sample_id>.npz   a mask label made from it by one labeler
    <root>/quarantine/                    files that failed to load (kept, never deleted)

Every file is written to a temporary name in the same directory, flushed and fsync'ed,
then renamed over its final name (``os.replace`` is atomic on POSIX), so a crash leaves
either the old file, the new file, or an orphan ``*.tmp`` that readers ignore (and that the
next :class:`SampleStore` opened on the directory removes once it is older than
``ORPHAN_TMP_AGE_S``). Files are plain ``.npz`` archives of arrays loaded with
``allow_pickle=False``: no pickle anywhere.

Stored data is never rewritten by another message: sample ids are unique (a second sample with
the same id and the same content is a no-op, one with different content raises
:class:`DuplicateSampleError`), and a label is written once per (sample, labeler) (an identical
one is a no-op, a different one raises :class:`DuplicateSampleError` unless ``overwrite``).
Files are created with a hard link from the temp file, which fails if the name exists, so two
writers racing for one id cannot both win.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from selfsup_perception.core.dataset.atomic_io import (  # noqa: F401 - re-exported for callers of the store
    CorruptSampleError,
    atomic_write_bytes,
    atomic_write_json,
    check_file_id,
    frame_from_arrays,
    frame_to_arrays,
    quarantine_file,
    remove_orphan_temp_files,
)
from selfsup_perception.core.types import (
    InteractionKind,
    InteractionOutcome,
    InteractionSample,
    MaskLabel,
)

_log = logging.getLogger(__name__)
ORPHAN_TMP_AGE_S = 300.0  # temp files older than this are leftovers of a killed writer


class DuplicateSampleError(ValueError):
    """A different sample (or label) is already stored under this id; the stored one is kept."""


def sample_digest(sample: InteractionSample) -> str:
    """SHA-256 identifying an interaction: kind, action pixel (to 0.01 px) and both RGB images.

    Depth and poses are left out on purpose: they change in the last bits on a round trip through
    a message (16UC1 millimetres, pose quaternions), while the RGB bytes do not.
    """
    h = hashlib.sha256()
    h.update(json.dumps([int(sample.kind), [round(float(x), 2) for x in sample.action_pixel]]).encode())
    for frame in (sample.before, sample.after):
        a = np.ascontiguousarray(frame.rgb)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class SampleStore:
    """Interaction samples and labels in a directory; safe to read while another process writes."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.samples_dir = self.root / "samples"
        self.labels_dir = self.root / "labels"
        self.quarantine_dir = self.root / "quarantine"
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        self.orphans_removed = remove_orphan_temp_files(self.samples_dir, ORPHAN_TMP_AGE_S)
        if self.labels_dir.exists():
            self.orphans_removed += remove_orphan_temp_files(self.labels_dir, ORPHAN_TMP_AGE_S)

    # ---------------------------------------------------------------- samples
    def sample_path(self, sample_id: str) -> Path:
        check_file_id(sample_id)
        return self.samples_dir / f"{sample_id}.npz"

    def stored_digest(self, sample_id: str) -> str:
        """Content digest of a stored sample (from its metadata; computed for files written before it was)."""
        path = self.sample_path(sample_id)
        try:
            with np.load(path, allow_pickle=False) as data:
                digest = json.loads(bytes(data["meta_json"]).decode()).get("content_sha256")
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise CorruptSampleError(f"sample file {path} is corrupt: {exc}") from exc
        return digest or sample_digest(self.read_sample(sample_id))

    def write_sample(self, sample: InteractionSample) -> Path:
        """Store one sample atomically and return its path; never replaces a stored sample.

        The same sample again is a no-op; a different one under a stored id raises
        :class:`DuplicateSampleError` (the stored sample is kept).
        """
        sample.before.validate()
        sample.after.validate()
        if sample.before.shape != sample.after.shape:
            raise ValueError(f"before {sample.before.shape} and after {sample.after.shape} images differ in size")
        arrays = {**frame_to_arrays("before", sample.before), **frame_to_arrays("after", sample.after)}
        meta = {
            "sample_id": sample.sample_id, "kind": int(sample.kind), "outcome": int(sample.outcome),
            "message": sample.message, "action_pixel": list(map(float, sample.action_pixel)),
            "start_point": list(map(float, sample.start_point)), "end_point": list(map(float, sample.end_point)),
            "model_version": sample.model_version, "scene_id": sample.scene_id,
            "format": 1, "content_sha256": sample_digest(sample),
        }
        arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        if sample.ground_truth is not None:
            # Evaluation only: kept in separate keys that the learner's loaders never read.
            for key in ("instance_mask_before", "instance_mask_after", "semantic_mask_before"):
                if key in sample.ground_truth:
                    arrays[f"gt_{key}"] = np.asarray(sample.ground_truth[key])
            if "moved_instance" in sample.ground_truth:
                arrays["gt_moved_instance"] = np.array(int(sample.ground_truth["moved_instance"]))
        path = self.sample_path(sample.sample_id)
        if not path.exists():
            try:
                atomic_write_bytes(path, lambda f: np.savez_compressed(f, **arrays), overwrite=False)
                return path
            except FileExistsError:
                pass  # another writer stored this id meanwhile: compare below
        if self.stored_digest(sample.sample_id) != meta["content_sha256"]:
            raise DuplicateSampleError(f"a different sample with id {sample.sample_id!r} is already stored; "
                                       "refusing to overwrite it")
        return path

    def sample_ids(self) -> list[str]:
        """Ids of complete samples, oldest first (temp files of interrupted writes are ignored)."""
        files = [p for p in self.samples_dir.glob("*.npz")]
        files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [p.stem for p in files]

    def __len__(self) -> int:
        return len(list(self.samples_dir.glob("*.npz")))

    def read_sample(self, sample_id: str, with_ground_truth: bool = False) -> InteractionSample:
        path = self.sample_path(sample_id)
        if not path.exists():
            raise FileNotFoundError(f"no sample {sample_id!r} in {self.samples_dir}")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta_json"]).decode())
                gt = None
                if with_ground_truth:
                    gt = {k[3:]: data[k] for k in data.files if k.startswith("gt_")}
                    if "moved_instance" in gt:
                        gt["moved_instance"] = int(gt["moved_instance"])
                return InteractionSample(
                    sample_id=meta["sample_id"], kind=InteractionKind(meta["kind"]),
                    before=frame_from_arrays(data, "before"), after=frame_from_arrays(data, "after"),
                    action_pixel=tuple(meta["action_pixel"]), start_point=tuple(meta["start_point"]),
                    end_point=tuple(meta["end_point"]), outcome=InteractionOutcome(meta["outcome"]),
                    message=meta["message"], ground_truth=gt,
                    model_version=meta.get("model_version", ""), scene_id=meta.get("scene_id", ""),
                )
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise CorruptSampleError(f"sample file {path} is corrupt: {exc}") from exc

    def iter_samples(self, with_ground_truth: bool = False, quarantine_corrupt: bool = True
                     ) -> Iterator[InteractionSample]:
        """All readable samples; corrupt ones are moved to quarantine/ (never deleted) and skipped."""
        for sample_id in self.sample_ids():
            try:
                yield self.read_sample(sample_id, with_ground_truth=with_ground_truth)
            except CorruptSampleError as exc:
                _log.warning("%s", exc)
                if quarantine_corrupt:
                    self.quarantine(self.sample_path(sample_id))
            except FileNotFoundError:
                continue  # removed meanwhile

    def quarantine(self, path: Path) -> Optional[Path]:
        return quarantine_file(path, self.quarantine_dir)

    # ----------------------------------------------------------------- labels
    def label_path(self, sample_id: str, labeler: str) -> Path:
        check_file_id(sample_id)
        check_file_id(labeler, "labeler name")
        return self.labels_dir / labeler / f"{sample_id}.npz"

    def write_label(self, sample_id: str, label: MaskLabel, labels_name: Optional[str] = None, *,
                    overwrite: bool = False) -> Path:
        """Store the label of ``sample_id`` under ``labels/<labels_name or label.labeler>/``; written once (see the
        module docstring) unless ``overwrite``."""
        mask = np.asarray(label.mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"a mask label must be 2-D, got shape {mask.shape}")
        meta = {
            "is_negative": bool(label.is_negative), "kept": bool(label.kept), "reason": label.reason,
            "labeler": label.labeler,
            "stats": {k: float(v) for k, v in label.stats.items() if isinstance(v, (int, float, np.number))},
            "provenance": label.provenance,
        }
        name = labels_name or label.labeler or "unknown"
        path = self.label_path(sample_id, name)

        def write(f):
            np.savez_compressed(f, mask=np.packbits(mask, axis=None), shape=np.array(mask.shape),
                                meta_json=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))

        if overwrite:
            atomic_write_bytes(path, write)
            return path
        try:
            atomic_write_bytes(path, write, overwrite=False)
            return path
        except FileExistsError:
            pass
        try:
            stored = self.read_label(sample_id, name)
            same = (stored.mask.shape == mask.shape and np.array_equal(stored.mask, mask)
                    and stored.is_negative == bool(label.is_negative) and stored.kept == bool(label.kept))
        except CorruptSampleError:
            same = False
        if not same:
            raise DuplicateSampleError(f"sample {sample_id!r} already has a different {label.labeler!r} label; "
                                       "refusing to overwrite it")
        return path

    def quarantine_label(self, sample_id: str, labeler: str) -> Optional[Path]:
        """Move a label aside into ``quarantine/labels/<labeler>/`` (kept, never deleted)."""
        return quarantine_file(self.label_path(sample_id, labeler), self.quarantine_dir / "labels" / labeler)

    def read_label(self, sample_id: str, labeler: str) -> MaskLabel:
        path = self.label_path(sample_id, labeler)
        if not path.exists():
            raise FileNotFoundError(f"no {labeler!r} label for sample {sample_id!r}")
        try:
            with np.load(path, allow_pickle=False) as data:
                shape = tuple(int(v) for v in data["shape"])
                mask = np.unpackbits(data["mask"])[: shape[0] * shape[1]].reshape(shape).astype(bool)
                meta = json.loads(bytes(data["meta_json"]).decode())
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise CorruptSampleError(f"label file {path} is corrupt: {exc}") from exc
        return MaskLabel(mask=mask, is_negative=meta["is_negative"], kept=meta["kept"], reason=meta["reason"],
                         labeler=meta["labeler"], stats=meta["stats"], provenance=meta.get("provenance", {}))

    def labeled_ids(self, labeler: str) -> list[str]:
        d = self.labels_dir / labeler
        return sorted(p.stem for p in d.glob("*.npz")) if d.exists() else []

    def unlabeled_ids(self, labeler: str) -> list[str]:
        """Samples without a label from ``labeler`` (what a restarted labeler still has to do)."""
        done = set(self.labeled_ids(labeler))
        return [s for s in self.sample_ids() if s not in done]
