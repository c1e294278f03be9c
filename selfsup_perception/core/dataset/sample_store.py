"""Crash-safe on-disk storage of interaction samples and their mask labels.

Layout of a dataset directory::

    <root>/samples/<sample_id>.npz        one interaction (before/after RGB-D, intrinsics, poses, action)
    <root>/labels/<labeler>/<sample_id>.npz   a mask label made from it by one labeler
    <root>/quarantine/                    files that failed to load (kept, never deleted)

Every file is written to a temporary name in the same directory, flushed and fsync'ed,
then renamed over its final name (``os.replace`` is atomic on POSIX), so a crash leaves
either the old file, the new file, or an orphan ``*.tmp`` that readers ignore. Files are
plain ``.npz`` archives of arrays loaded with ``allow_pickle=False``: no pickle anywhere.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from selfsup_perception.core.types import (
    CameraIntrinsics,
    InteractionKind,
    InteractionOutcome,
    InteractionSample,
    MaskLabel,
    RgbdFrame,
)

_log = logging.getLogger(__name__)
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class CorruptSampleError(RuntimeError):
    """A stored file exists but cannot be read back."""


def atomic_write_bytes(path: Path, write) -> None:
    """Write a file atomically: ``write(fileobj)`` into a temp file, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True).encode()))


def frame_to_arrays(prefix: str, frame: RgbdFrame) -> dict[str, np.ndarray]:
    """The arrays of one frame under ``<prefix>_*`` keys, for an ``.npz`` archive (no pickle)."""
    k = frame.intrinsics
    return {
        f"{prefix}_rgb": frame.rgb,
        f"{prefix}_depth": frame.depth.astype(np.float32),
        f"{prefix}_intrinsics": np.array([k.fx, k.fy, k.cx, k.cy, k.width, k.height], dtype=np.float64),
        f"{prefix}_camera_to_world": np.asarray(frame.camera_to_world, dtype=np.float64),
        f"{prefix}_stamp": np.array(frame.stamp, dtype=np.float64),
    }


def frame_from_arrays(data, prefix: str) -> RgbdFrame:
    """The validated frame stored by :func:`frame_to_arrays` under ``prefix``."""
    fx, fy, cx, cy, w, h = data[f"{prefix}_intrinsics"].tolist()
    return RgbdFrame(
        rgb=data[f"{prefix}_rgb"], depth=data[f"{prefix}_depth"],
        intrinsics=CameraIntrinsics(fx, fy, cx, cy, int(w), int(h)),
        camera_to_world=data[f"{prefix}_camera_to_world"], stamp=float(data[f"{prefix}_stamp"]),
    ).validate()


def check_file_id(ident: str, kind: str = "sample id") -> None:
    """Raise ``ValueError`` unless ``ident`` is safe to use as a file name."""
    if not _ID_RE.match(ident):
        raise ValueError(f"{kind} {ident!r} must match {_ID_RE.pattern} (it becomes a file name)")


def quarantine_file(path: Path, quarantine_dir: Path) -> Optional[Path]:
    """Move an unreadable file aside (never deleted, never overwriting an earlier one); its new path."""
    path = Path(path)
    if not path.exists():
        return None
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    dest = quarantine_dir / path.name
    n = 1
    while dest.exists():
        dest = quarantine_dir / f"{path.stem}.{n}{path.suffix}"
        n += 1
    shutil.move(str(path), dest)
    return dest


class SampleStore:
    """Interaction samples and labels in a directory; safe to read while another process writes."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.samples_dir = self.root / "samples"
        self.labels_dir = self.root / "labels"
        self.quarantine_dir = self.root / "quarantine"
        self.samples_dir.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- samples
    def sample_path(self, sample_id: str) -> Path:
        check_file_id(sample_id)
        return self.samples_dir / f"{sample_id}.npz"

    def write_sample(self, sample: InteractionSample) -> Path:
        """Store one sample atomically and return its path. Overwrites a sample with the same id."""
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
            "format": 1,
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
        atomic_write_bytes(path, lambda f: np.savez_compressed(f, **arrays))
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

    def write_label(self, sample_id: str, label: MaskLabel, labels_name: Optional[str] = None) -> Path:
        """Store a label atomically under ``labels/<labels_name or label.labeler>/``."""
        mask = np.asarray(label.mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"a mask label must be 2-D, got shape {mask.shape}")
        meta = {
            "is_negative": bool(label.is_negative), "kept": bool(label.kept), "reason": label.reason,
            "labeler": label.labeler,
            "stats": {k: float(v) for k, v in label.stats.items() if isinstance(v, (int, float, np.number))},
            "provenance": label.provenance,
        }
        path = self.label_path(sample_id, labels_name or label.labeler or "unknown")
        atomic_write_bytes(path, lambda f: np.savez_compressed(
            f, mask=np.packbits(mask, axis=None), shape=np.array(mask.shape),
            meta_json=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)))
        return path

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
