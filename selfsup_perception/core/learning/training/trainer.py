"""One training loop for every :class:`~selfsup_perception.core.learning.tasks.base.TrainingTask`.

``Trainer.train_steps`` is a single loop with labelled phases (schedule, forward, loss, guard,
backward + clip, step, log, checkpoint), after nanoGPT ``train.py`` and dinov2 ``train/train.py``:

* schedule: linear warm-up over ``warmup_steps`` then constant or cosine decay to
  ``min_lr_ratio * lr`` at ``total_steps``; ``cyclic_cosine`` repeats warm-up + cosine decay
  every ``total_steps`` steps (one cycle per online training round);
* EMA: with ``ema_decay`` > 0 an exponential moving average of the weights is kept after
  every step (decay ``min(ema_decay, (1 + t) / (10 + t))`` at step t, as TensorFlow's
  ``ExponentialMovingAverage`` with ``num_updates``); it is :attr:`Trainer.serving_model`,
  what checkpoints hold in ``model.safetensors`` (evaluated and served), while the raw
  weights travel in ``optimizer.pt`` for resuming;
* non-finite guard: a step whose loss or gradient norm is NaN/inf is skipped (no parameter
  update) and counted; after ``max_nonfinite_steps`` skipped steps :class:`NonFiniteLossError`
  is raised (dinov2 stops at the first NaN; we tolerate a few noisy batches);
* checkpoint every ``checkpoint_every`` steps through :mod:`.checkpoint` (atomic).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from selfsup_perception.core.learning.device import autocast, grad_scaler, resolve_device
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.tasks.base import TrainingTask

LOG = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Too many steps produced a NaN/inf loss or gradient."""


@dataclass(frozen=True)
class TrainerConfig:
    optimizer: str = "adamw"  # 'adamw' | 'sgd' (momentum 0.9, as Eitel et al. fine-tuning)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    warmup_steps: int = 20
    schedule: str = "constant"  # 'constant' | 'cosine' | 'cyclic_cosine'
    total_steps: int = 1000  # cosine horizon (cyclic_cosine: the cycle length)
    min_lr_ratio: float = 0.1
    grad_clip_norm: float = 5.0  # <= 0 disables clipping (the norm is still measured)
    max_nonfinite_steps: int = 5
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only explicit save_checkpoint()
    checkpoint_dir: str | None = None
    dataset_size: int | None = None  # recorded in checkpoint metadata
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (core/learning/device.py)
    mixed_precision: bool = True  # torch.autocast float16 + loss scaling on CUDA; no effect on CPU
    seed: int | None = 0  # torch.manual_seed before building the model; None leaves the RNG alone
    ema_decay: float = 0.0  # > 0: keep an EMA of the weights and checkpoint/serve it (see module docstring)
    # what serving needs, written into every checkpoint's metadata (serving.checkpoints.inference_info):
    # the (width, height) images are resized to for this model, and class names of semantic models
    input_size: tuple[int, int] | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine", "cyclic_cosine"):
            raise ValueError(f"schedule must be 'constant', 'cosine' or 'cyclic_cosine', got {self.schedule!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.max_nonfinite_steps < 1:
            raise ValueError("max_nonfinite_steps must be >= 1")
        if self.checkpoint_every < 0 or self.warmup_steps < 0 or self.total_steps < 1:
            raise ValueError("checkpoint_every/warmup_steps must be >= 0 and total_steps >= 1")


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


class Trainer:
    """Runs a task's model through optimisation, guarding against NaNs and checkpointing.

    Attributes: ``model``, ``optimizer``, ``step`` (optimizer steps taken), ``skipped_steps``,
    ``history`` (one record per step taken, across calls).
    """

    def __init__(self, task: TrainingTask, config: TrainerConfig = TrainerConfig(),
                 model: torch.nn.Module | None = None) -> None:
        """``model``: train this model instead of ``task.build_model()`` (e.g. one whose backbone is shared
        with another task's model, ``training/multitask.py``); it must be what the task would build."""
        if not isinstance(task, TrainingTask):
            raise TypeError(f"{type(task).__name__} does not implement TrainingTask")
        self.task = task
        self.config = config
        self.device = resolve_device(config.device)
        if config.seed is not None:
            torch.manual_seed(config.seed)
        self.model = (task.build_model() if model is None else model).to(self.device)
        groups = getattr(task, "param_groups", None)  # optional (TrainingTask): per-group lr_scale, frozen_steps
        groups = groups(self.model) if callable(groups) else None
        params = groups if groups else [p for p in self.model.parameters() if p.requires_grad]
        if config.optimizer == "adamw":
            self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(
                params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
            )
        self.scaler = grad_scaler(self.device if config.mixed_precision else "cpu")  # a pass-through on CPU
        self.ema: torch.nn.Module | None = None
        if config.ema_decay > 0:
            self.ema = copy.deepcopy(self.model).eval()
            for p in self.ema.parameters():
                p.requires_grad_(False)
        self.step = 0
        self.skipped_steps = 0
        self.history: list[dict] = []
        self._resumed_initialization: dict | None = None

    @property
    def serving_model(self) -> torch.nn.Module:
        """What is evaluated, checkpointed and served: the EMA of the weights if kept, else the model."""
        return self.ema if self.ema is not None else self.model

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        ema_state, state = self.ema.state_dict(), self.model.state_dict()
        for k, e in ema_state.items():
            if e.dtype.is_floating_point:
                e.mul_(decay).add_(state[k].detach(), alpha=1.0 - decay)
            else:
                e.copy_(state[k])

    # ------------------------------------------------------------------ schedule
    def lr_at(self, step: int) -> float:
        c = self.config
        if c.schedule == "cyclic_cosine":
            step = step % c.total_steps
        if c.warmup_steps > 0 and step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        if c.schedule == "constant":
            return c.lr
        t = min(1.0, (step - c.warmup_steps) / max(1, c.total_steps - c.warmup_steps))
        return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

    # ------------------------------------------------------------------ loop
    def train_steps(self, batches: Iterable, num_steps: int) -> list[dict]:
        """Take up to ``num_steps`` optimizer steps (fewer if ``batches`` runs out).

        Each item of ``batches`` is one step's data as :meth:`_forward_backward` takes it (a task batch
        here; a list of micro-batches in :class:`~.distributed.DDPTrainer`).
        Returns one record per step taken: {'step', 'loss', 'lr', 'grad_norm', 'time_s', **task metrics}.
        Raises :class:`NonFiniteLossError` after ``max_nonfinite_steps`` skipped steps in total.
        """
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        c = self.config
        records: list[dict] = []
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        it = iter(batches)
        while len(records) < num_steps:
            try:
                item = next(it)
            except StopIteration:
                break
            t0 = time.perf_counter()
            # -- schedule
            lr = self.lr_at(self.step)
            for group in self.optimizer.param_groups:
                frozen = self.step < group.get("frozen_steps", 0)
                group["lr"] = 0.0 if frozen else lr * group.get("lr_scale", 1.0)
            # -- forward + loss + backward (scaled when float16 loss scaling is on)
            self.optimizer.zero_grad(set_to_none=True)
            loss, metrics = self._forward_backward(item)
            # -- guard (loss)
            if not self._loss_is_finite(loss):
                self._skip(f"loss is {loss}")
                continue
            # -- clip (gradients unscaled first)
            self.scaler.unscale_(self.optimizer)
            max_norm = c.grad_clip_norm if c.grad_clip_norm > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            if not math.isfinite(grad_norm):
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler.is_enabled():  # float16 overflow: AMP lowers the scale and retries, not a NaN
                    self.scaler.update()
                    continue
                self._skip(f"gradient norm is {grad_norm}")
                continue
            # -- step
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            # -- ema
            if self.ema is not None:
                self._update_ema()
            # -- log
            record = {
                "step": self.step,
                "lr": lr,
                "grad_norm": grad_norm,
                "time_s": time.perf_counter() - t0,
                **metrics,
                "loss": self._mean_loss(loss),
            }
            records.append(record)
            self.history.append(record)
            if c.log_every > 0 and self.step % c.log_every == 0 and self._logs:
                LOG.info("step %d loss %.4f lr %.2e grad %.3f", self.step, record["loss"], lr, grad_norm)
            # -- checkpoint
            if c.checkpoint_every > 0 and self.step % c.checkpoint_every == 0:
                if c.checkpoint_dir is None:
                    raise ValueError("checkpoint_every > 0 needs checkpoint_dir")
                self.save_checkpoint(c.checkpoint_dir)
        return records

    # -- the loop's per-step hooks (DDPTrainer overrides them; the loop itself is one)
    def _forward_backward(self, batch: dict) -> tuple[float, dict[str, float]]:
        """Forward, loss and backward of one step's batch: (loss, task metrics). A non-finite loss is
        returned without a backward pass (the step is skipped)."""
        batch = _to_device(dict(batch), self.device)
        batch["step"] = self.step
        with autocast(self.device, self.config.mixed_precision):
            loss, metrics = self.task.compute_loss(self.model, batch)
        loss = loss.float()
        value = float(loss.detach())
        if math.isfinite(value):
            self.scaler.scale(loss).backward()
        return value, {k: float(v) for k, v in metrics.items()}

    def _loss_is_finite(self, loss: float) -> bool:
        return math.isfinite(loss)

    def _mean_loss(self, loss: float) -> float:
        return loss

    @property
    def _logs(self) -> bool:
        return True

    def _skip(self, why: str) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        LOG.warning("skipping step %d: %s (%d skipped so far)", self.step, why, self.skipped_steps)
        if self.skipped_steps >= self.config.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"{self.skipped_steps} steps had a non-finite loss or gradient (last: {why}); stopping"
            )

    # ------------------------------------------------------------------ checkpoints
    def recent_metrics(self, window: int = 20) -> dict[str, float]:
        """Mean of each numeric metric over the last ``window`` steps."""
        recent = self.history[-window:]
        keys = {k for r in recent for k in r if k not in ("step", "time_s")}
        return {k: float(sum(r[k] for r in recent if k in r) / sum(1 for r in recent if k in r)) for k in sorted(keys)}

    def save_checkpoint(self, directory: str | Path | None = None, extra_meta: dict | None = None) -> Path:
        """Write the next checkpoint version atomically (the serving model's weights); returns its directory."""
        directory = directory if directory is not None else self.config.checkpoint_dir
        if directory is None:
            raise ValueError("no checkpoint directory given (argument or TrainerConfig.checkpoint_dir)")
        return ckpt.save_checkpoint(
            directory,
            task=self.task.name,
            model=self.serving_model,
            model_config=self.task.model_config(),
            step=self.step,
            optimizer_state={
                "optimizer": self.optimizer.state_dict(),
                "trainer": {"step": self.step, "skipped_steps": self.skipped_steps},
                **({"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}}
                   if self.ema is not None else {}),
            },
            dataset_size=self.config.dataset_size,
            metrics=self.recent_metrics(),
            inference=(ckpt.inference_info(self.config.input_size, self.config.class_names)
                       if self.config.input_size is not None else None),
            extra_meta={**({"ema_decay": self.config.ema_decay} if self.ema is not None else {}),
                        **self._initialization_meta(),
                        **(extra_meta or {})},
        )

    def _initialization_meta(self) -> dict:
        """{'initialization': provenance of the initial weights} for tasks that report it (TrainingTask);
        after :meth:`resume`, the provenance recorded in the resumed checkpoint (its weights are what continue)."""
        if self._resumed_initialization is not None:
            return {"initialization": self._resumed_initialization}
        report = getattr(self.task, "initialization", None)
        return {"initialization": report()} if callable(report) else {}

    def resume(self, directory: str | Path | None = None) -> ckpt.CheckpointInfo | None:
        """Load the newest valid checkpoint of this task; None (and nothing changed) if there is none.

        Corrupt or partial versions are skipped with a warning (see :func:`checkpoint.list_versions`);
        if the newest version's optimizer state is unreadable, the next older one is used.
        """
        directory = directory if directory is not None else self.config.checkpoint_dir
        if directory is None:
            raise ValueError("no checkpoint directory given (argument or TrainerConfig.checkpoint_dir)")
        for info in reversed(ckpt.list_versions(directory, self.task.name)):
            if info.meta["model_config"] != self.task.model_config():
                LOG.warning("ignoring %s: its model_config differs from this task's", info.path)
                continue
            try:
                opt_state = ckpt.load_optimizer_state(info.path)
                state = ckpt.load_state_dict(info.path)
            except ckpt.CheckpointError as e:
                LOG.warning("ignoring invalid checkpoint: %s", e)
                continue
            if self.ema is not None:
                self.ema.load_state_dict(state, strict=True)
                raw = (opt_state or {}).get("model")
                self.model.load_state_dict(raw if raw is not None else state, strict=True)
            else:
                self.model.load_state_dict(state, strict=True)
            self.step = int(info.meta["step"])
            init = info.meta.get("initialization")
            self._resumed_initialization = init if isinstance(init, dict) else None
            if opt_state is not None:
                try:
                    self.optimizer.load_state_dict(opt_state["optimizer"])
                except ValueError as e:  # other parameter groups (e.g. fine-tuning groups since changed)
                    LOG.warning("%s: optimizer state does not fit (%s); optimizer starts fresh", info.path, e)
                self.skipped_steps = int(opt_state.get("trainer", {}).get("skipped_steps", 0))
            else:
                LOG.warning("%s has no optimizer state; optimizer starts fresh", info.path)
            LOG.info("resumed %s at step %d", info.path, self.step)
            return info
        return None
