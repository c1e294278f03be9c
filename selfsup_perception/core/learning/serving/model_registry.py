"""Which model version serves each task, with hot swapping that never drops a request (ROS-free).

A request takes a reference to the active :class:`LoadedModel` once and runs to the end on
it; activation builds and loads the new model *before* swapping one reference under a lock.
In-flight requests therefore finish on the old model while new ones get the new model, and
no request ever sees a half-loaded one. Old models are freed when their last request ends.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

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

    @property
    def name(self) -> str:
        return f"{self.task}/v{self.version}"


class ModelRegistry:
    """Active models per task, loaded from a checkpoint directory on demand."""

    def __init__(self, checkpoint_dir: str | Path, device: str = "cpu", keep_loaded: int = 2):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.device = torch.device(device)
        self._lock = threading.Lock()
        self._active: dict[str, LoadedModel] = {}
        self._cache: dict[tuple[str, int], LoadedModel] = {}  # recently loaded versions, by (task, version)
        self._keep_loaded = max(keep_loaded, 1)

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

    def load(self, task: str, version: int = -1, path: Optional[str | Path] = None) -> LoadedModel:
        """Load (without activating) ``version`` of ``task`` (-1 = newest), or the version directory ``path``."""
        if task not in TASKS:
            raise ModelNotAvailableError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        if path is None:
            versions = ckpt.list_versions(self.checkpoint_dir, task)
            if not versions:
                raise ModelNotAvailableError(f"no {task} model in {self.checkpoint_dir} yet")
            if version < 0:
                info = versions[-1]
            else:
                match = [v for v in versions if v.version == version]
                if not match:
                    raise ModelNotAvailableError(
                        f"{task} version {version} does not exist; available: {[v.version for v in versions]}")
                info = match[0]
            path = info.path
        with self._lock:
            cached = self._cache.get((task, int(ckpt.read_meta(path)["version"])))
        if cached is not None and cached.path == Path(path):
            return cached
        model, meta = ckpt.load_model_for_inference(path, map_location=self.device)  # raises CheckpointError
        if meta.get("task") != task:
            raise ModelNotAvailableError(f"{path} holds a {meta.get('task')!r} model, not {task!r}")
        loaded = LoadedModel(task, int(meta["version"]), Path(path), model, meta)
        with self._lock:
            self._cache[(task, loaded.version)] = loaded
            while len(self._cache) > self._keep_loaded * len(TASKS):
                oldest = next(iter(self._cache))
                if self._active.get(oldest[0]) is self._cache[oldest]:
                    break
                del self._cache[oldest]
        return loaded

    def activate(self, task: str, version: int = -1, path: Optional[str | Path] = None) -> LoadedModel:
        """Load then atomically make it the active model of ``task``."""
        loaded = self.load(task, version, path)
        with self._lock:
            self._active[task] = loaded
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
