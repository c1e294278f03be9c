"""Self-describing, atomically written checkpoints (no pickle).

Layout::

    <directory>/<task>/v<version:05d>/model.safetensors   model weights (safetensors)
                                     /meta.json           {task, model_config, step, version, created,
                                                           dataset_size, metrics, format, inference}
                                     /optimizer.pt        {'optimizer', 'scheduler', 'trainer'} state dicts,
                                                          read with torch.load(weights_only=True)
                        /../promotions.json   which versions passed the promotion gate (serving/promotions.py)

A version is written into ``<directory>/<task>/.tmp-v<version>-<pid>-<nonce>/`` and renamed to
``v<version:05d>`` with one ``os.replace`` (atomic on POSIX), with ``meta.json`` written last,
so a reader never sees a half-written version: a version directory is *valid* when
``meta.json`` parses and passes :func:`validate_meta` (a schema: types and ranges, not only
keys), names its task and version, and the header of ``model.safetensors`` parses with every
tensor's bytes present (:func:`list_versions` reads no weights; loading them is left to the
caller). ``inference`` (:func:`inference_info`) holds what serving needs besides the weights:
input size, class names, normalisation; no node parameter repeats it. Leftover ``.tmp-*`` directories (a killed writer) are ignored and cleaned up by the
next save.

Retention (:func:`prune_versions`): keep the newest ``keep_last`` versions of a task and every
version marked *pinned* (a ``PINNED`` file in its directory holding the reason: the inference node
pins the version it serves and unpins it when it serves another, a promotion gate may pin what it
promotes for good); older ones are removed, each with one atomic rename out of sight before the
files are deleted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from selfsup_perception.core.dataset.atomic_io import atomic_write_json, fsync_directory

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
OPTIMIZER_FILE = "optimizer.pt"
PIN_FILE = "PINNED"
_VERSION_RE = re.compile(r"^v(\d{5,})$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, partial or corrupt."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path  # the version directory
    version: int
    meta: dict


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    task: str,
    model: torch.nn.Module,
    model_config: dict,
    step: int,
    optimizer_state: dict | None = None,
    dataset_size: int | None = None,
    metrics: dict | None = None,
    extra_meta: dict | None = None,
    inference: dict | None = None,
) -> Path:
    """Write the next version for ``task`` under ``directory``; returns the version directory.

    ``extra_meta`` adds entries to ``meta.json`` (e.g. the promotion gate's ``validation`` and
    ``promoted``); it cannot replace the entries this function writes.
    """
    if not task or "/" in task or task.startswith("."):
        raise ValueError(f"invalid task name {task!r}")
    task_dir = Path(directory) / task
    task_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(task_dir)
    existing = [int(m.group(1)) for p in task_dir.iterdir() if (m := _VERSION_RE.match(p.name))]
    version = max(existing, default=0) + 1
    tmp = task_dir / f".tmp-v{version:05d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / MODEL_FILE))
        if optimizer_state is not None:
            torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
        meta = {
            "format": FORMAT_VERSION,
            "task": task,
            "model_config": model_config,
            "step": int(step),
            "version": version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "dataset_size": dataset_size,
            "metrics": metrics or {},
        }
        clash = set(extra_meta or {}) & set(meta)
        if clash:
            raise ValueError(f"extra_meta may not replace {sorted(clash)}")
        meta.update(extra_meta or {})
        if inference is not None:
            meta["inference"] = inference
        atomic_write_json(tmp / META_FILE, meta)
        final = version_dir(directory, task, version)
        os.replace(tmp, final)  # atomic; fails if another writer took this version
        fsync_directory(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def version_dir(directory: str | os.PathLike, task: str, version: int) -> Path:
    """Where version ``version`` of ``task`` lives under ``directory`` (the one place that knows the layout)."""
    return Path(directory) / task / f"v{int(version):05d}"


def version_of(path: str | os.PathLike) -> int:
    """The version number of a version directory ``.../v<N>``; ValueError for any other path."""
    m = _VERSION_RE.match(Path(path).name)
    if not m:
        raise ValueError(f"{path} is not a checkpoint version directory (v<NNNNN>)")
    return int(m.group(1))


def version_dirs(directory: str | os.PathLike, task: str) -> list[tuple[int, Path]]:
    """(version, directory) of every version directory of ``task`` under ``directory``, oldest first; reads
    no metadata (``[]`` when the task has none)."""
    task_dir = Path(directory) / task
    if not task_dir.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in task_dir.iterdir() if (m := _VERSION_RE.match(p.name)) and p.is_dir())


def _remove_stale_temp_dirs(task_dir: Path) -> None:
    for p in task_dir.glob(".tmp-v*"):
        parts = p.name.split("-")
        pid = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else -1
        if pid == os.getpid() or not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_meta(version_dir: str | os.PathLike) -> dict:
    """Parsed ``meta.json`` of a version directory; CheckpointError if missing or corrupt."""
    path = Path(version_dir) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint metadata missing: {path}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint metadata corrupt: {path}: {e}") from e
    return validate_meta(meta, str(path))


# ints under these model_config keys are sizes: they must be positive integers (lists: every element)
_SIZE_WORDS = ("width", "height", "dim", "channel", "class", "stride", "size", "depth", "layer", "head",
               "keypoint")
_TASK_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_MAX_SIZE = 1 << 20


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_config_value(key_path: str, v, errors: list[str]) -> None:
    leaf = key_path.rsplit(".", 1)[-1].lower()
    if isinstance(v, dict):
        for k, x in v.items():
            _check_config_value(f"{key_path}.{k}", x, errors)
        return
    if isinstance(v, float) and not math.isfinite(v):
        errors.append(f"{key_path} = {v} is not finite")
    if any(w in leaf for w in _SIZE_WORDS) and not leaf.startswith(("use_", "num_workers")):
        values = v if isinstance(v, list) else [v]
        for x in values:
            if isinstance(x, bool) or x is None:
                continue  # flags such as dilate_last, optional sizes
            if not _is_int(x) or not 1 <= x <= _MAX_SIZE:
                errors.append(f"{key_path} = {x!r} must be a positive integer (at most {_MAX_SIZE})")
                break
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _check_config_value(f"{key_path}[{i}]", x, errors)


def validate_meta(meta, where: str = "meta.json") -> dict:
    """``meta`` checked against the checkpoint schema (types and ranges); CheckpointError listing every problem.

    Schema: ``format`` int >= 1 (optional), ``task`` a name, ``model_config`` an object whose numbers are
    finite and whose size-like entries (``*width*``, ``*dim*``, ``*channels*``, ``*classes*``, ``*stride*``,
    ``*size*`` ...) are positive integers, ``step`` int >= 0, ``version`` int >= 1, ``dataset_size`` null or
    int >= 0, ``metrics`` an object, ``created`` a string, and, when present, ``inference`` =
    {``input_width``, ``input_height``: int in [8, 16384], ``class_names``: list of strings, ``mean``,
    ``std``: 3 finite numbers, std > 0}.
    """
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint metadata {where} must be a JSON object, got {type(meta).__name__}")
    errors: list[str] = []
    for key in ("task", "model_config", "step", "version"):
        if key not in meta:
            errors.append(f"lacks {key!r}")
    if "format" in meta and not (_is_int(meta["format"]) and meta["format"] >= 1):
        errors.append(f"format = {meta['format']!r} must be an integer >= 1")
    task = meta.get("task")
    if "task" in meta and not (isinstance(task, str) and _TASK_RE.match(task)):
        errors.append(f"task = {task!r} must be a task name")
    if "model_config" in meta:
        if not isinstance(meta["model_config"], dict):
            errors.append(f"model_config must be an object, got {type(meta['model_config']).__name__}")
        else:
            _check_config_value("model_config", meta["model_config"], errors)
    if "step" in meta and not (_is_int(meta["step"]) and meta["step"] >= 0):
        errors.append(f"step = {meta['step']!r} must be an integer >= 0")
    if "version" in meta and not (_is_int(meta["version"]) and meta["version"] >= 1):
        errors.append(f"version = {meta['version']!r} must be an integer >= 1")
    ds = meta.get("dataset_size")
    if ds is not None and not (_is_int(ds) and ds >= 0):
        errors.append(f"dataset_size = {ds!r} must be null or an integer >= 0")
    if "metrics" in meta and not isinstance(meta["metrics"], dict):
        errors.append("metrics must be an object")
    if "created" in meta and not isinstance(meta["created"], str):
        errors.append("created must be a string")
    inf = meta.get("inference")
    if inf is not None:
        if not isinstance(inf, dict):
            errors.append("inference must be an object")
        else:
            for k in ("input_width", "input_height"):
                if k in inf and not (_is_int(inf[k]) and 8 <= inf[k] <= 16384):
                    errors.append(f"inference.{k} = {inf[k]!r} must be an integer in [8, 16384]")
            names = inf.get("class_names")
            if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                errors.append("inference.class_names must be a list of strings")
            for k in ("mean", "std"):
                v = inf.get(k)
                if v is None:
                    continue
                ok = (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) and not
                      isinstance(x, bool) and math.isfinite(x) for x in v))
                if not ok or (k == "std" and min(v) <= 0):
                    errors.append(f"inference.{k} = {v!r} must be 3 finite numbers" + (" > 0" if k == "std" else ""))
    if errors:
        raise CheckpointError(f"checkpoint metadata {where} is invalid: " + "; ".join(errors))
    return meta


def load_state_dict(version_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(version_dir) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint weights missing: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint weights corrupt: {path}: {e}") from e


def load_optimizer_state(version_dir: str | os.PathLike) -> dict | None:
    """The optimizer/scheduler/trainer state, or None if this version has none."""
    path = Path(version_dir) / OPTIMIZER_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/unsafe files
        raise CheckpointError(f"optimizer state corrupt: {path}: {e}") from e


def check_weights_header(version_dir: str | os.PathLike) -> None:
    """The weights file exists and its safetensors header parses and covers the file (no tensor is read)."""
    path = Path(version_dir) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint weights missing: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint weights corrupt: {path}: {e}") from e


def validate_version(version_dir: str | os.PathLike, task: str | None = None, *, load_weights: bool = False) -> dict:
    """Meta of a complete version (schema-checked meta, weights header; all weights with ``load_weights``)."""
    version_dir = Path(version_dir)
    meta = read_meta(version_dir)
    if task is not None and meta["task"] != task:
        raise CheckpointError(f"{version_dir} is for task {meta['task']!r}, not {task!r}")
    m = _VERSION_RE.match(version_dir.name)
    if m and int(m.group(1)) != int(meta["version"]):
        raise CheckpointError(f"{version_dir}: meta says version {meta['version']}")
    if load_weights:
        load_state_dict(version_dir)
    else:
        check_weights_header(version_dir)
    return meta


def list_versions(directory: str | os.PathLike, task: str, *, valid_only: bool = True) -> list[CheckpointInfo]:
    """Versions of ``task`` under ``directory``, oldest first.

    With ``valid_only`` (default), versions that fail :func:`validate_version` are skipped with a
    warning. Temporary ``.tmp-*`` directories are never listed. Reads metadata and weight-file
    headers only, never the weights.
    """
    out = []
    for version, p in version_dirs(directory, task):
        if valid_only:
            try:
                meta = validate_version(p, task)
            except CheckpointError as e:
                LOG.warning("ignoring invalid checkpoint: %s", e)
                continue
        else:
            try:
                meta = read_meta(p)
            except CheckpointError:
                meta = {}
        out.append(CheckpointInfo(p, version, meta))
    return out


def latest_version(directory: str | os.PathLike, task: str) -> CheckpointInfo | None:
    versions = list_versions(directory, task)
    return versions[-1] if versions else None


def build_model_from_meta(meta: dict) -> torch.nn.Module:
    """Rebuild a model from checkpoint metadata: each model module builds itself from its config.

    Serving touches only ``models`` and this module, never training tasks.
    """
    from selfsup_perception.core.learning.models.descriptor_net import descriptor_model_from_config
    from selfsup_perception.core.learning.models.instance_segmentation import build_instance_model
    from selfsup_perception.core.learning.models.semantic_segmentation import semantic_model_from_config

    builders = {
        "instance_segmentation": build_instance_model,
        "semantic_segmentation": semantic_model_from_config,
        "descriptors": descriptor_model_from_config,
    }
    task = meta["task"]
    if task not in builders:
        raise CheckpointError(
            f"no model builder known for task {task!r}; pass build_model= to load_model_for_inference"
        )
    return builders[task](meta["model_config"])


def inference_info(input_size: tuple[int, int], class_names: Sequence[str] | None = None) -> dict:
    """The ``meta["inference"]`` block: what serving needs besides the weights.

    ``input_size`` = (width, height) the model was trained at (images are resized to it);
    ``class_names`` for semantic models (index = class id); ``normalization`` documents how
    ``models.backbone.normalize_image`` maps uint8 RGB to the network input.
    """
    from selfsup_perception.core.learning.models.backbone import IMAGE_MEAN, IMAGE_STD

    width, height = (int(v) for v in input_size)
    if width < 1 or height < 1:
        raise ValueError(f"input size must be positive, got {input_size}")
    return {
        "input_width": width,
        "input_height": height,
        "class_names": list(class_names) if class_names is not None else None,
        "normalization": {"scale": 255.0, "mean": IMAGE_MEAN, "std": IMAGE_STD},
    }


# Checkpoints written before the metadata carried an ``inference`` block were trained at the
# trainer's default size of that time (config/trainer.yaml: 160x120).
LEGACY_INPUT_SIZE = (160, 120)


def serving_input_size(meta: dict) -> tuple[int, int]:
    """(width, height) the checkpoint's model expects, from ``meta["inference"]``."""
    info = meta.get("inference") or {}
    try:
        size = (int(info["input_width"]), int(info["input_height"]))
    except (KeyError, TypeError, ValueError):
        LOG.warning("checkpoint %s/v%s has no input size in its metadata; assuming %dx%d",
                    meta.get("task"), meta.get("version"), *LEGACY_INPUT_SIZE)
        return LEGACY_INPUT_SIZE
    if size[0] < 1 or size[1] < 1:
        raise CheckpointError(f"checkpoint metadata has an invalid input size {size}")
    return size


def serving_class_names(meta: dict) -> list[str]:
    """Class names of a semantic checkpoint (``class_<i>`` where the metadata has none)."""
    names = (meta.get("inference") or {}).get("class_names")
    if names:
        return [str(n) for n in names]
    n = int((meta.get("model_config") or {}).get("num_classes", 0) or 0)
    return [f"class_{i}" for i in range(n)]


def load_model_for_inference(
    path: str | os.PathLike,
    build_model: Callable[[dict], torch.nn.Module] | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, meta) from a version directory (or its ``model.safetensors``).

    ``build_model(model_config)`` rebuilds the architecture; default :func:`build_model_from_meta`.
    Raises :class:`CheckpointError` (a RuntimeError) with the path on a missing/corrupt file or
    mismatched weights.
    """
    path = Path(path)
    if path.is_file() and path.name == MODEL_FILE:
        path = path.parent
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    meta = read_meta(path)
    state = load_state_dict(path)
    try:
        model = build_model(meta["model_config"]) if build_model is not None else build_model_from_meta(meta)
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"cannot build the model described by {path / META_FILE}: "
                              f"{type(e).__name__}: {e}") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"weights in {path} do not fit the model described by meta.json: {e}") from e
    model.to(map_location).eval()
    return model, meta


def pin_version(version_dir: str | os.PathLike, reason: str = "served") -> None:
    """Mark a version as kept by :func:`prune_versions` (idempotent; the reason is the file's content)."""
    path = Path(version_dir) / PIN_FILE
    if not path.exists():
        path.write_text(reason + "\n")


def unpin_version(version_dir: str | os.PathLike, reason: str = "served") -> None:
    """Remove a pin written with the same ``reason`` (a version pinned for another reason stays pinned)."""
    path = Path(version_dir) / PIN_FILE
    try:
        if path.read_text().strip() == reason:
            path.unlink()
    except FileNotFoundError:
        pass


def prune_versions(directory: str | os.PathLike, task: str, *, keep_last: int,
                   keep: Sequence[int] = ()) -> list[int]:
    """Remove versions of ``task`` older than the newest ``keep_last``, except pinned ones and those in ``keep``
    (e.g. every promoted version, so a rollback always finds them); returns the removed.

    ``keep_last`` <= 0 keeps everything. Invalid version directories count like valid ones (their
    number decides). Each removed directory is first renamed to a ``.tmp-`` name (atomic: a reader
    sees it whole or not at all), then deleted.
    """
    if keep_last <= 0:
        return []
    task_dir = Path(directory) / task
    if not task_dir.is_dir():
        return []
    for leftover in task_dir.glob(".tmp-pruned-*"):  # a prune that was killed mid-delete
        shutil.rmtree(leftover, ignore_errors=True)
    numbered = sorted((int(m.group(1)), p) for p in task_dir.iterdir() if (m := _VERSION_RE.match(p.name)))
    removed = []
    for version, p in numbered[:-keep_last]:
        if (p / PIN_FILE).exists() or version in keep:
            continue
        doomed = task_dir / f".tmp-pruned-{version:05d}-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(p, doomed)
        except OSError as e:
            LOG.warning("could not prune %s: %s", p, e)
            continue
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(version)
    return removed
