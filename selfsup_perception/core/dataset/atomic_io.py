"""Crash-safe dataset I/O shared by every store: atomic writes, safe ids, quarantine, the frame codec.

Used by the sample store (``core/dataset/sample_store.py``), the registration pair store
(``core/registration/pair_store.py``), checkpoints (``core/learning/serving/checkpoints.py``),
the demo and the benches. Every file is written to a temporary name in the same directory,
flushed and fsync'ed, then renamed over its final name (``os.replace`` is atomic on POSIX) and
the directory fsync'ed, so a crash (kill -9) leaves either the old file, the new one or an
orphan ``.<name>.*.tmp`` that readers ignore and :func:`remove_orphan_temp_files` deletes.
Arrays go into plain ``.npz`` archives read with ``allow_pickle=False``: no pickle anywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from selfsup_perception.core.types import CameraIntrinsics, RgbdFrame

_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class CorruptSampleError(RuntimeError):
    """A stored file exists but cannot be read back."""


def atomic_write_bytes(path: Path, write, *, overwrite: bool = True) -> None:
    """Write a file atomically: ``write(fileobj)`` into a temp file, fsync, rename.

    With ``overwrite=False`` the file is created with a hard link instead (``FileExistsError`` if
    ``path`` exists, also when another writer created it meanwhile).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic create-if-absent
            os.unlink(tmp)
        fsync_directory(path.parent)
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


def fsync_directory(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_orphan_temp_files(directory: Path, min_age_s: float = 60.0) -> int:
    """Delete ``.*.tmp`` files (interrupted atomic writes) older than ``min_age_s`` below ``directory``.

    Only files older than ``min_age_s`` are removed, so a concurrent writer's file is left alone.
    Returns how many were removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    removed, now = 0, time.time()
    for p in directory.rglob(".*.tmp"):
        try:
            if p.is_file() and now - p.stat().st_mtime >= min_age_s:
                p.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
