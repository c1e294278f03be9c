"""Which model versions were promoted and which one is served: a small ledger on disk (ROS-free).

The trainer's promotion gate (:mod:`selfsup_perception.core.learning.training.promotion`)
decides; this module only records and reads the decisions, so that serving never imports
training. Layout, beside the versions of a task::

    <checkpoint_dir>/<task>/promotions.json   {"format": 1, "task", "served", "events": [...]}

``events`` is the history, oldest first: ``{"event": "promoted" | "rolled_back", "version",
"previous", "reason", "validation", "time"}``. ``served`` is the version the inference node
serves (None: nothing passed the gate yet). The file is replaced atomically (temp file,
fsync, rename) on every change, so a restart sees either the old or the new state.

Each version's ``meta.json`` also records the gate's decision when it was written
(``promoted``, ``validation``). A crash between writing a promoted version and updating the
ledger is repaired on load: a version whose meta says promoted and that is newer than
everything in the ledger is appended as a promotion.

Checkpoint directories without a ledger (written by a tool without a gate, e.g. an offline
run) keep working: every version whose meta does not say ``promoted: false`` counts as
promoted, and the newest of them is served.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from selfsup_perception.core.dataset.sample_store import atomic_write_json
from selfsup_perception.core.learning.serving import checkpoints as ckpt

LOG = logging.getLogger(__name__)

LEDGER_FILE = "promotions.json"
FORMAT_VERSION = 1


class PromotionError(ValueError):
    """A rollback or promotion that the ledger refuses (e.g. a version that was never promoted)."""


@dataclass
class PromotionLedger:
    """Promotion history and the served version of one task."""

    path: Path
    task: str
    served: Optional[int] = None
    events: list[dict] = field(default_factory=list)
    exists: bool = False  # False: no ledger file (versions from a tool without a gate)

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(cls, checkpoint_dir: str | os.PathLike, task: str) -> "PromotionLedger":
        """The ledger of ``task`` (reconciled with the versions' metadata); empty if there is none."""
        path = Path(checkpoint_dir) / task / LEDGER_FILE
        ledger = cls(path=path, task=task)
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                ledger.served = None if data.get("served") is None else int(data["served"])
                ledger.events = list(data.get("events", []))
                ledger.exists = True
            except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as exc:
                # never happens with atomic writes; a hand-edited file must not silently serve candidates
                raise PromotionError(f"promotion ledger {path} is unreadable: {exc}") from exc
        ledger._reconcile(checkpoint_dir)
        return ledger

    def _reconcile(self, checkpoint_dir: str | os.PathLike) -> None:
        """Append promotions recorded in meta.json after the ledger's newest event (a crash in between).

        Reads the metadata of the versions newer than that event only (not of every version on disk).
        """
        if not self.exists:
            return
        newest_known = max((int(e["version"]) for e in self.events), default=0)
        for version, path in ckpt.version_dirs(checkpoint_dir, self.task):
            if version <= newest_known:
                continue
            try:
                meta = ckpt.read_meta(path)
            except ckpt.CheckpointError:
                continue
            if meta.get("promoted") is True:
                LOG.warning("%s: v%d is promoted in its metadata but not in the ledger; recording it",
                            self.path, version)
                self.events.append(_event("promoted", version, self.served, "recovered from meta.json",
                                          meta.get("validation") or {}))
                self.served = version

    def promoted_versions(self) -> list[int]:
        """Every version that was ever promoted, ascending."""
        return sorted({int(e["version"]) for e in self.events if e["event"] == "promoted"})

    def is_promoted(self, version: int) -> bool:
        return int(version) in self.promoted_versions()

    # ------------------------------------------------------------------ writing
    def record_promotion(self, version: int, reason: str, validation: Optional[dict] = None) -> None:
        """``version`` passed the gate: serve it from now on (idempotent after a reconciliation on load)."""
        if self.events and self.events[-1]["event"] == "promoted" and int(self.events[-1]["version"]) == int(version):
            self.served = int(self.events[-1]["previous"]) if self.events[-1]["previous"] is not None else None
            self.events.pop()  # recovered from meta.json by load(): replaced by the full record below
        self.events.append(_event("promoted", int(version), self.served, reason, validation or {}))
        self.served = int(version)
        self._save()

    def rollback(self, version: int = -1, reason: str = "") -> tuple[int, int]:
        """Serve an earlier promoted version again; returns (from, to).

        ``version`` -1: the promoted version served before the current one. Raises
        :class:`PromotionError` if nothing is served, the version was never promoted, or it
        is not older than the served one.
        """
        if self.served is None:
            raise PromotionError(f"no {self.task} version is served yet: nothing to roll back")
        earlier = [v for v in self.promoted_versions() if v < self.served]
        if version < 0:
            if not earlier:
                raise PromotionError(f"{self.task} v{self.served} is the first promoted version: "
                                     "there is no earlier one")
            target = earlier[-1]
        else:
            target = int(version)
            if target not in earlier:
                raise PromotionError(
                    f"{self.task} v{target} is not an earlier promoted version "
                    f"(served v{self.served}; earlier promoted: {earlier or 'none'})")
        previous = self.served
        self.events.append(_event("rolled_back", target, previous, reason or "rollback requested", {}))
        self.served = target
        self._save()
        return previous, target

    def _save(self) -> None:
        atomic_write_json(self.path, {"format": FORMAT_VERSION, "task": self.task, "served": self.served,
                                      "events": self.events})
        self.exists = True

    def last_event(self, version: int) -> Optional[dict]:
        """The newest event about ``version`` (why it is served), or None."""
        for e in reversed(self.events):
            if int(e["version"]) == int(version):
                return e
        return None


def _event(kind: str, version: int, previous: Optional[int], reason: str, validation: dict) -> dict:
    return {"event": kind, "version": int(version), "previous": previous, "reason": reason,
            "validation": {k: float(v) for k, v in validation.items()},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def served_version(checkpoint_dir: str | os.PathLike, task: str) -> Optional[int]:
    """The version of ``task`` to serve: the ledger's, or (no ledger) the newest not marked ``promoted: false``.

    Only valid versions count (:func:`checkpoints.list_versions`). None: nothing to serve.
    """
    ledger = PromotionLedger.load(checkpoint_dir, task)
    valid = {info.version: info for info in ckpt.list_versions(checkpoint_dir, task)}
    if ledger.exists:
        if ledger.served is None:
            return None
        if ledger.served in valid:
            return ledger.served
        # the served version became unreadable: fall back to the newest valid promoted one
        fallback = [v for v in ledger.promoted_versions() if v in valid and v < ledger.served]
        if fallback:
            LOG.error("%s v%d is served but unreadable; serving promoted v%d instead", task, ledger.served,
                      fallback[-1])
            return fallback[-1]
        return None
    legacy = [v for v, info in valid.items() if info.meta.get("promoted", True) is not False]
    return max(legacy) if legacy else None


def is_promoted(checkpoint_dir: str | os.PathLike, task: str, version: int) -> bool:
    """Whether ``version`` was promoted (ledger), or (no ledger) is not marked ``promoted: false``."""
    ledger = PromotionLedger.load(checkpoint_dir, task)
    if ledger.exists:
        return ledger.is_promoted(version)
    try:  # only this version's metadata
        meta = ckpt.validate_version(ckpt.version_dir(checkpoint_dir, task, int(version)), task)
    except ckpt.CheckpointError:
        return False
    return meta.get("promoted", True) is not False
