"""Crash-safe on-disk storage of registered RGB-D views and the view pairs selected among them.

Layout of a registration dataset directory::

    <root>/views/<view_id>.npz   one view: rgb, depth (float32 m), intrinsics, camera_to_world, stamp,
                                 frame_id, and optionally ``regions`` (Felzenszwalb ids at reduced
                                 resolution, computed once per view because Felzenszwalb is slow)
    <root>/pairs.json            the index: registered views (those whose pairs have been computed)
                                 and the selected pairs {pair_id, view_a, view_b, iou}
    <root>/quarantine/           files that failed to load (kept, never deleted)

Write order makes every crash recoverable: a view file is written (atomically, via
:func:`~selfsup_perception.core.dataset.atomic_io.atomic_write_bytes`) *before* the index
names it, and one atomic index write adds a view's pairs together with the view's "registered"
mark. So after a crash a view is either unregistered (its pairs are recomputed on restart, see
:meth:`PairStore.unregistered_view_ids`) or registered with all its pairs. A corrupt index is
quarantined and the store starts with no registered view, so every stored view is registered again.
Files are plain ``.npz`` loaded with ``allow_pickle=False``: no pickle anywhere.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from selfsup_perception.core.dataset.atomic_io import (
    CorruptSampleError,
    frame_to_arrays,
    frame_from_arrays,
    atomic_write_bytes,
    atomic_write_json,
    check_file_id,
    quarantine_file,
)
from selfsup_perception.core.types import RgbdFrame

_log = logging.getLogger(__name__)
_VIEW_RE = re.compile(r"^view_(\d{6,})$")
INDEX_FORMAT = 1


class CorruptViewError(CorruptSampleError):
    """A stored view or the pair index exists but cannot be read back."""


@dataclass(frozen=True)
class StoredPair:
    """A selected view pair: ``view_a`` is the older view, ``iou`` its view overlap with ``view_b``."""

    pair_id: str
    view_a: str
    view_b: str
    iou: float

    def to_json(self) -> dict:
        return {"pair_id": self.pair_id, "view_a": self.view_a, "view_b": self.view_b, "iou": float(self.iou)}

    @classmethod
    def from_json(cls, d: dict) -> "StoredPair":
        return cls(str(d["pair_id"]), str(d["view_a"]), str(d["view_b"]), float(d["iou"]))


def pair_id_of(view_a: str, view_b: str) -> str:
    return f"{view_a}__{view_b}"


def _check_id(view_id: str) -> None:
    check_file_id(view_id, "view id")


class PairStore:
    """Views and view pairs in a directory; safe to read from another process while one process writes.

    One writer (the registration node) at a time; any number of readers (the trainer). The in-memory
    index is re-read with :meth:`reload`. Methods are thread-safe within one process.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.views_dir = self.root / "views"
        self.index_path = self.root / "pairs.json"
        self.quarantine_dir = self.root / "quarantine"
        self.views_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._registered: list[str] = []
        self._pairs: dict[str, StoredPair] = {}
        self.index_was_corrupt = False
        self.reload()

    # ------------------------------------------------------------------ index
    def reload(self) -> None:
        """Re-read the index from disk (a corrupt index is quarantined and treated as empty)."""
        with self._lock:
            registered: list[str] = []
            pairs: dict[str, StoredPair] = {}
            if self.index_path.exists():
                try:
                    data = json.loads(self.index_path.read_text())
                    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
                        found = data.get("format") if isinstance(data, dict) else type(data).__name__
                        raise ValueError(f"unknown index format {found!r}")
                    registered = [str(v) for v in data["registered_views"]]
                    for d in data["pairs"]:
                        p = StoredPair.from_json(d)
                        pairs[p.pair_id] = p
                except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                    _log.warning("pair index %s is corrupt (%s); quarantined, views will be registered again",
                                 self.index_path, exc)
                    self.index_was_corrupt = True
                    self.quarantine(self.index_path)
                    registered, pairs = [], {}
            self._registered, self._pairs = registered, pairs

    def _write_index(self) -> None:
        atomic_write_json(self.index_path, {
            "format": INDEX_FORMAT,
            "registered_views": list(self._registered),
            "pairs": [p.to_json() for p in self._pairs.values()],
        })

    # ------------------------------------------------------------------ views
    def view_path(self, view_id: str) -> Path:
        _check_id(view_id)
        return self.views_dir / f"{view_id}.npz"

    def next_view_id(self) -> str:
        """``view_NNNNNN`` one above the largest stored (or quarantined) number."""
        with self._lock:
            numbers = [int(m.group(1)) for d in (self.views_dir, self.quarantine_dir) if d.is_dir()
                       for p in d.glob("view_*.npz") if (m := _VIEW_RE.match(p.stem))]
            return f"view_{max(numbers, default=0) + 1:06d}"

    def write_view(self, view_id: str, frame: RgbdFrame, regions: Optional[np.ndarray] = None) -> Path:
        """Store one view atomically. ``regions``: (h, w) non-negative int region ids at any resolution."""
        frame.validate()
        arrays = frame_to_arrays("view", frame)
        arrays["frame_id"] = np.frombuffer(frame.frame_id.encode(), dtype=np.uint8)
        if regions is not None:
            regions = np.asarray(regions)
            if regions.ndim != 2 or regions.size == 0 or not np.issubdtype(regions.dtype, np.integer):
                raise ValueError(f"regions must be a non-empty (h, w) integer map, got {regions.shape} {regions.dtype}")
            if regions.min() < 0:
                raise ValueError("region ids must be non-negative")
            arrays["regions"] = regions.astype(np.int32)
        path = self.view_path(view_id)
        atomic_write_bytes(path, lambda f: np.savez_compressed(f, **arrays))
        return path

    def read_view(self, view_id: str, with_regions: bool = False) -> RgbdFrame | tuple[RgbdFrame, Optional[np.ndarray]]:
        """The stored frame (and its regions, or None, with ``with_regions``)."""
        path = self.view_path(view_id)
        if not path.exists():
            raise FileNotFoundError(f"no view {view_id!r} in {self.views_dir}")
        try:
            with np.load(path, allow_pickle=False) as data:
                frame = frame_from_arrays(data, "view")
                if "frame_id" in data.files:
                    frame.frame_id = bytes(data["frame_id"]).decode()
                regions = data["regions"].astype(np.int64) if with_regions and "regions" in data.files else None
        except (OSError, ValueError, KeyError, EOFError, UnicodeDecodeError) as exc:
            raise CorruptViewError(f"view file {path} is corrupt: {exc}") from exc
        return (frame, regions) if with_regions else frame

    def view_ids(self) -> list[str]:
        """Ids of complete view files in id order (temp files of interrupted writes are ignored)."""
        return sorted(p.stem for p in self.views_dir.glob("*.npz"))

    def registered_view_ids(self) -> list[str]:
        with self._lock:
            return list(self._registered)

    def unregistered_view_ids(self) -> list[str]:
        """Stored views whose pairs were never computed (a crash between the view and the index write)."""
        with self._lock:
            done = set(self._registered)
        return [v for v in self.view_ids() if v not in done]

    def load_view_or_quarantine(self, view_id: str, with_regions: bool = False):
        """:meth:`read_view`, but a corrupt file is moved to quarantine/ and None returned."""
        try:
            return self.read_view(view_id, with_regions=with_regions)
        except CorruptViewError as exc:
            _log.warning("%s", exc)
            self.quarantine(self.view_path(view_id))
            return None
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------------ pairs
    def register_view(self, view_id: str, pairs: Iterable[StoredPair] = ()) -> None:
        """Mark ``view_id`` registered and add its pairs in one atomic index write."""
        _check_id(view_id)
        if not self.view_path(view_id).exists():
            raise FileNotFoundError(f"view {view_id!r} must be stored before it is registered")
        with self._lock:
            new = list(pairs)
            for p in new:
                if view_id not in (p.view_a, p.view_b):
                    raise ValueError(f"pair {p.pair_id} does not involve {view_id}")
                if not 0.0 <= p.iou <= 1.0:
                    raise ValueError(f"pair {p.pair_id} has IoU {p.iou} outside [0, 1]")
            self.reload()  # never drop pairs another writer instance added
            registered = [v for v in self._registered if v != view_id] + [view_id]
            pairs_before = dict(self._pairs)
            self._registered = registered
            for p in new:
                self._pairs[p.pair_id] = p
            try:
                self._write_index()
            except BaseException:
                self._pairs = pairs_before
                self._registered = [v for v in registered if v != view_id]
                raise

    def pairs(self) -> list[StoredPair]:
        """Selected pairs in the order they were added."""
        with self._lock:
            return list(self._pairs.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._pairs)

    # --------------------------------------------------------------- internals
    def quarantine(self, path: Path) -> Optional[Path]:
        return quarantine_file(path, self.quarantine_dir)
