"""Where models run: device names (``cpu``, ``cuda``, ``cuda:N``, ``auto``) and mixed precision on CUDA.

* :func:`resolve_device` turns a name into a ``torch.device`` or a clear error
  (:class:`DeviceUnavailableError`) when CUDA is asked for and absent.
* :func:`autocast` is ``torch.autocast("cuda", dtype=float16)`` on a CUDA device and a
  no-op elsewhere (CPU inference and training keep float32).
* :func:`grad_scaler` is a ``torch.amp.GradScaler`` enabled on CUDA only: float16 gradients
  need loss scaling (dynamic, as in the PyTorch AMP recipe); on CPU it passes through.
* :func:`release_device_memory` returns cached CUDA blocks after models are dropped.
"""

from __future__ import annotations

import contextlib
import re

import torch

DEVICE_HELP = "cpu | cuda | cuda:N | auto (CUDA when available)"


class DeviceUnavailableError(RuntimeError):
    """A CUDA device was requested on a machine (or a torch build) without it."""


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` -> a usable ``torch.device``."""
    key = str(name).strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", key)
    if match is None:
        raise ValueError(f"device must be {DEVICE_HELP}, got {name!r}")
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"device {name!r} requested but CUDA is not available (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda or 'none'}); use cpu or auto")
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceUnavailableError(f"device {name!r} requested but only {count} CUDA device(s) exist")
    return torch.device("cuda", index)


def autocast(device: torch.device | str, enabled: bool = True):
    """Mixed precision (float16) for CUDA devices; a null context on CPU."""
    device = torch.device(device)
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device | str) -> torch.amp.GradScaler:
    """Loss scaling for float16 training on CUDA; disabled (a pass-through) elsewhere."""
    device = torch.device(device)
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda")


def release_device_memory(device: torch.device | str | None) -> None:
    """Give cached CUDA memory back to the driver (after the last reference to a model is gone)."""
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
