"""Which model version serves each task, with hot swapping that never drops a request (ROS-free).

A request takes a reference to the active :class:`LoadedModel` once and runs to the end on
it; activation builds and loads the new model *before* swapping one reference under a lock.
In-flight requests therefore finish on the old model while new ones get the new model, and
no request ever sees a half-loaded one. Old models are freed when their last request ends.

Memory is bounded: besides the active models, at most ``max_cached`` other versions are kept
loaded, and all loaded models together stay under ``max_cache_bytes`` (parameters and buffers);
the least recently used non-active version is evicted first, an active model never is.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.serving import promotions

TASKS = ("instance_segmentation", "semantic_segmentation", "descriptors")


class ModelNotAvailableError(LookupError):
    """No model (or not the requested version) is available for a task."""


@dataclass(frozen=True)
class LoadedModel:
    task: str
    version: int
    path: Path
    model: torch.nn.Module
    meta: dict
    input_size: tuple[int, int] = ckpt.LEGACY_INPUT_SIZE  # (width, height) from the metadata, read once at load

    @property
    def name(self) -> str:
        return f"{self.task}/v{self.version}"

    @property
    def nbytes(self) -> int:
        return model_nbytes(self.model)


def model_nbytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


class ModelRegistry:
    """Active models per task, loaded from a checkpoint directory on demand, with a bounded cache."""

    def __init__(self, checkpoint_dir: str | Path, device: str = "cpu", max_cached: int = 4,
                 max_cache_bytes: int = 512 * 2**20):
        if max_cached < 0 or max_cache_bytes < 0:
            raise ValueError("max_cached and max_cache_bytes must be >= 0")
        self.checkpoint_dir = Path(checkpoint_dir)
        self.device = torch.device(device)
        self._lock = threading.Lock()
        self._active: dict[str, LoadedModel] = {}
        # recently loaded versions by (task, version), least recently used first
        self._cache: collections.OrderedDict[tuple[str, int], LoadedModel] = collections.OrderedDict()
        self.max_cached = max_cached
        self.max_cache_bytes = max_cache_bytes
        self.evicted = 0

    def available_versions(self, task: str) -> list[int]:
        return [info.version for info in ckpt.list_versions(self.checkpoint_dir, task)]

    def served_version(self, task: str) -> int:
        """The promoted version to serve (:func:`promotions.served_version`); ModelNotAvailableError if none."""
        try:
            version = promotions.served_version(self.checkpoint_dir, task)
        except promotions.PromotionError as exc:  # an unreadable ledger: serve nothing rather than a candidate
            raise ModelNotAvailableError(str(exc)) from exc
        if version is None:
            raise ModelNotAvailableError(f"no promoted {task} model in {self.checkpoint_dir} yet")
        return version

    def is_promoted(self, task: str, version: int) -> bool:
        try:
            return promotions.is_promoted(self.checkpoint_dir, task, version)
        except promotions.PromotionError:
            return False

    def cache_stats(self) -> dict:
        with self._lock:
            active = {id(m) for m in self._active.values()}
            others = [m for m in self._cache.values() if id(m) not in active]
            return {"cached": len(others), "bytes": sum(m.nbytes for m in self._cache.values()),
                    "evicted": self.evicted}

    def _evict_locked(self) -> None:
        active = {id(m) for m in self._active.values()}
        nbytes = {k: m.nbytes for k, m in self._cache.items()}
        total = sum(nbytes.values())
        others = [k for k, m in self._cache.items() if id(m) not in active]  # LRU first
        while others and (len(others) > self.max_cached or total > self.max_cache_bytes):
            key = others.pop(0)
            total -= nbytes[key]
            del self._cache[key]
            self.evicted += 1

    def load(self, task: str, version: int = -1, path: Optional[str | Path] = None) -> LoadedModel:
        """Load (without activating) ``version`` of ``task`` (-1 = newest), or the version directory ``path``."""
        if task not in TASKS:
            raise ModelNotAvailableError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        if path is None and version >= 0:  # its directory: no scan of every version (300 took 0.4 s a request)
            path = ckpt.version_dir(self.checkpoint_dir, task, version)
            if not path.is_dir():
                raise ModelNotAvailableError(f"{task} version {version} does not exist; available: "
                                             f"{self.available_versions(task)}")
            ckpt.validate_version(path, task)  # the reason when it is incomplete or corrupt
        elif path is None:
            versions = ckpt.list_versions(self.checkpoint_dir, task)
            if not versions:
                raise ModelNotAvailableError(f"no {task} model in {self.checkpoint_dir} yet")
            path = versions[-1].path
        meta = ckpt.read_meta(path)  # schema-checked; CheckpointError otherwise
        key = (task, int(meta["version"]))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.path == Path(path):
                self._cache.move_to_end(key)
                return cached
        model, meta = ckpt.load_model_for_inference(path, map_location=self.device)  # raises CheckpointError
        if meta.get("task") != task:
            raise ModelNotAvailableError(f"{path} holds a {meta.get('task')!r} model, not {task!r}")
        loaded = LoadedModel(task, int(meta["version"]), Path(path), model, meta, ckpt.serving_input_size(meta))
        with self._lock:
            self._cache[key] = loaded
            self._cache.move_to_end(key)
            self._evict_locked()
        return loaded

    def activate_newest_loadable(self, task: str, eligible: Optional[Callable[[int], bool]] = None
                                 ) -> tuple[Optional[LoadedModel], list[tuple[int, str]]]:
        """Activate the newest version of ``task`` that builds and loads (among the ``eligible`` ones).

        Returns (the activated model or None, [(version, reason)] of every newer version skipped).
        """
        skipped: list[tuple[int, str]] = []
        for version, p in reversed(ckpt.version_dirs(self.checkpoint_dir, task)):
            if eligible is not None and not eligible(version):
                continue
            try:
                ckpt.validate_version(p, task)
                return self.activate(task, path=p), skipped
            except (ckpt.CheckpointError, ModelNotAvailableError) as exc:
                skipped.append((version, str(exc)))
        return None, skipped

    def activate(self, task: str, version: int = -1, path: Optional[str | Path] = None) -> LoadedModel:
        """Load then atomically make it the active model of ``task``."""
        loaded = self.load(task, version, path)
        with self._lock:
            self._active[task] = loaded
            self._cache[(task, loaded.version)] = loaded
            self._evict_locked()  # the previously active model may now be evicted
        return loaded

    def active(self, task: str) -> LoadedModel:
        with self._lock:
            model = self._active.get(task)
        if model is None:
            raise ModelNotAvailableError(f"no {task} model is active (train one, or call load_model)")
        return model

    def get(self, task: str, version_name: str = "") -> LoadedModel:
        """The active model, or a specific version named '<task>/v<N>', 'v<N>' or '<N>'."""
        if not version_name:
            return self.active(task)
        text = version_name.rsplit("/", 1)[-1].lstrip("v")
        if not text.isdigit():
            raise ModelNotAvailableError(f"model_version {version_name!r} is not of the form '<task>/v<N>'")
        return self.load(task, int(text))

    def active_names(self) -> dict[str, str]:
        with self._lock:
            return {t: m.name for t, m in self._active.items()}
