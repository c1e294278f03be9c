"""Data-parallel training on several processes / machines with PyTorch's engine (torchrun + DDP).

Launch any offline training with ``torchrun`` instead of ``python``::

    torchrun --nproc_per_node=2 -m selfsup_perception.cli.train_offline --task descriptors ...     # one machine
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=4 --rdzv-backend=c10d \\
        --rdzv-endpoint=HOST:29500 --rdzv-id=run1 -m selfsup_perception.cli.train_offline ...        # each machine

Pieces (all inert in a plain single-process run, which keeps working unchanged):

* :func:`init_distributed` reads torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and joins the
  process group: NCCL when the process has a GPU, gloo on CPU, with a finite timeout so a rank whose
  peer died stops with an error instead of waiting forever.
* :class:`DistributedBatchSampler`: step ``s`` uses the same *global* batch of ``B`` dataset indices
  whatever the number of processes (a stream of per-epoch permutations seeded by ``seed + epoch``, as
  ``torch.utils.data.DistributedSampler`` seeds them); rank ``r`` takes the contiguous slice
  ``[r B/W, (r + 1) B/W)``. Torch's sampler interleaves ranks (``perm[r::W]``), which gives the same
  set of samples per epoch but not per step; contiguous slices make a W-process step equal to one
  process accumulating W micro-batches.
* :class:`DDPTrainer`: the :class:`~.trainer.Trainer` loop itself (schedule, forward, loss, guard, clip,
  step, log, checkpoint) over ``DistributedDataParallel`` (gradients averaged over ranks), with
  gradient accumulation over micro-batches, a non-finite guard that all ranks agree on, and
  checkpoints written by rank 0 only (atomically, in the format the inference node loads) while the
  other ranks wait at a barrier. Each micro-batch runs under ``torch.manual_seed`` of its seed, so the
  random draws inside a task's loss depend on the samples, not on how the batch was split. The loop is
  ``Trainer.train_steps`` itself (DDPTrainer overrides only its per-step hooks), so autocast and float16
  loss scaling on CUDA apply under DDP as in one process.

BatchNorm normalises per process (per micro-batch): W processes with global batch ``B`` therefore equal
one process with ``--micro-batch-size B/W``, not one process with ``B`` in a single pass.
(``SyncBatchNorm`` would remove that difference but runs on GPUs only.)
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from selfsup_perception.core.learning.tasks.base import TrainingTask
from selfsup_perception.core.learning.device import autocast
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig, _to_device

LOG = logging.getLogger(__name__)


class DistributedError(RuntimeError):
    """A rank could not join the job, or another rank failed or left during training."""


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""  # '' single process, else 'gloo' | 'nccl'
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or bool(self.backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def init_distributed(device: str = "auto", timeout_s: float = 300.0) -> DistributedContext:
    """Join the torchrun job (or a single-process context when not launched by torchrun).

    ``device``: 'auto' (this rank's GPU if there is one, else CPU), 'cpu' or 'cuda'.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise DistributedError("--device cuda asked for, but PyTorch sees no GPU")
    if not launched_by_torchrun():
        return DistributedContext(device="cuda" if use_cuda else "cpu")
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise DistributedError(f"local rank {local} has no GPU: this machine has {torch.cuda.device_count()}; "
                                   f"start at most that many processes per node (--nproc_per_node)")
        torch.cuda.set_device(local)
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except Exception as exc:  # noqa: BLE001 - rendezvous failures come in many types
        raise DistributedError(f"rank {rank} could not join the {backend} process group: {exc}") from exc
    return DistributedContext(rank, world, local, backend, f"cuda:{local}" if use_cuda else "cpu")


def shutdown(ctx: DistributedContext) -> None:
    if ctx.backend and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    if ctx.backend:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.local_rank])
        else:
            dist.barrier()


def all_ranks_max(ctx: DistributedContext, value: float) -> float:
    """The maximum of ``value`` over all ranks (the value itself in a single process)."""
    if not ctx.backend:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def check_same_on_all_ranks(ctx: DistributedContext, value: int, what: str) -> None:
    """:class:`DistributedError` on every rank unless ``value`` is equal on all ranks."""
    if not ctx.backend:
        return
    high, low = all_ranks_max(ctx, float(value)), -all_ranks_max(ctx, -float(value))
    if high != low:
        raise DistributedError(f"{what} differs between processes ({int(low)} .. {int(high)}; this rank: {value})")


def all_ranks_mean(ctx: DistributedContext, values: dict[str, float]) -> dict[str, float]:
    if not ctx.backend or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, t.tolist())}


# ============================================================================ sampling
class DistributedBatchSampler:
    """Global batches of dataset indices, identical for any number of ranks; each rank takes its slice."""

    def __init__(self, dataset_size: int, global_batch_size: int, *, rank: int = 0, world_size: int = 1,
                 seed: int = 0, micro_batch_size: Optional[int] = None):
        if dataset_size < 1:
            raise ValueError("the dataset is empty")
        if global_batch_size < 1 or global_batch_size % world_size:
            raise ValueError(f"the global batch size ({global_batch_size}) must be a positive multiple of the "
                             f"number of processes ({world_size})")
        self.n = dataset_size
        self.batch = global_batch_size
        self.rank, self.world = rank, world_size
        self.per_rank = global_batch_size // world_size
        self.micro = micro_batch_size or self.per_rank
        if self.per_rank % self.micro:
            raise ValueError(f"the per-process batch ({self.per_rank}) must be a multiple of the micro-batch "
                             f"size ({self.micro})")
        self.seed = seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g).numpy()}
        return self._perms[epoch]

    def global_batch(self, step: int) -> np.ndarray:
        """The ``global_batch_size`` indices of step ``step`` (a stream of per-epoch permutations)."""
        positions = np.arange(step * self.batch, (step + 1) * self.batch)
        return np.array([self._perm(int(p // self.n))[int(p % self.n)] for p in positions], dtype=np.int64)

    def micro_batches(self, step: int) -> list[tuple[int, np.ndarray]]:
        """This rank's micro-batches of step ``step`` as (position of the first sample in the global batch, indices)."""
        mine = self.global_batch(step)[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]
        start = self.rank * self.per_rank
        return [(start + j, mine[j:j + self.micro]) for j in range(0, self.per_rank, self.micro)]


def micro_batch_seed(seed: int, step: int, position: int) -> int:
    """The seed of one micro-batch: a function of the run seed, the step and its place in the global batch."""
    return int(np.random.SeedSequence([seed, step, position]).generate_state(1)[0])


def step_batches(sampler: DistributedBatchSampler, make_batch, seed: int, start_step: int = 0
                 ) -> Iterator[list[tuple[int, dict]]]:
    """Forever: this rank's [(seed, batch)] micro-batches of each step from ``start_step``.

    ``make_batch(indices, rng)`` builds one task batch; ``rng`` is seeded per micro-batch.
    """
    step = start_step
    while True:
        out = []
        for position, indices in sampler.micro_batches(step):
            s = micro_batch_seed(seed, step, position)
            out.append((s, make_batch(indices, np.random.default_rng(s))))
        yield out
        step += 1


# ============================================================================ training
class _LossModule(nn.Module):
    """The task's loss as a module, so DDP's forward hook sees every parameter the loss uses."""

    def __init__(self, task: TrainingTask, model: nn.Module):
        super().__init__()
        self.task = task
        self.model = model

    def forward(self, batch: dict):
        return self.task.compute_loss(self.model, batch)


class DDPTrainer(Trainer):
    """:class:`Trainer` over DistributedDataParallel; ``train_steps`` takes one list of micro-batches per step."""

    def __init__(self, task: TrainingTask, config: TrainerConfig, ctx: DistributedContext,
                 find_unused_parameters: bool = True):
        super().__init__(task, config)
        self.ctx = ctx
        self.loss_module = _LossModule(task, self.model)
        if ctx.backend:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp: nn.Module = DistributedDataParallel(
                self.loss_module, device_ids=[ctx.local_rank] if ctx.backend == "nccl" else None,
                # a branch can idle on one rank's batch (the segmentation head in pre-training, the mask loss on
                # a batch of negatives): DDP must look for it, or the ranks' gradient buckets fall out of step
                find_unused_parameters=find_unused_parameters)
        else:
            self.ddp = self.loss_module

    # Trainer.train_steps is the loop; each of its items is here one step's [(seed, micro-batch)] list.
    def _forward_backward(self, micro: list[tuple[int, dict]]) -> tuple[float, dict[str, float]]:
        """Forward, loss and backward of each micro-batch (gradients all-reduced on the last one);
        (mean loss, mean task metrics of this rank). NaN if any micro-batch's loss was not finite."""
        total, metrics_sum, finite = 0.0, {}, True
        for j, (seed, batch) in enumerate(micro):
            torch.manual_seed(seed)
            batch = _to_device(dict(batch), self.device)
            batch["step"] = self.step
            sync = j == len(micro) - 1 or not self.ctx.backend
            with (contextlib.nullcontext() if sync else self.ddp.no_sync()):
                with autocast(self.device, self.config.mixed_precision):
                    loss, metrics = self.ddp(batch)
                loss = loss.float()
                # every rank runs backward even on a bad loss: a rank that skipped it would hang the others
                self.scaler.scale(loss / len(micro)).backward()
            value = float(loss.detach())
            finite &= math.isfinite(value)
            total += value / len(micro)
            for k, v in metrics.items():
                metrics_sum[k] = metrics_sum.get(k, 0.0) + float(v) / len(micro)
        return (total if finite else math.nan), metrics_sum

    def _loss_is_finite(self, loss: float) -> bool:
        """All ranks decide together (the gradient norm is the same on all ranks after the all-reduce)."""
        return all_ranks_max(self.ctx, 0.0 if math.isfinite(loss) else 1.0) == 0

    def _mean_loss(self, loss: float) -> float:
        """The loss logged is the mean over ranks; task metrics are this rank's (their keys can differ between
        ranks, e.g. with or without negative samples, so they are not reduced)."""
        return all_ranks_mean(self.ctx, {"loss": loss})["loss"]

    @property
    def _logs(self) -> bool:
        return self.ctx.is_main

    def save_checkpoint(self, directory=None):
        """Rank 0 writes (atomically); every rank returns after it is written. Other ranks get None."""
        path = super().save_checkpoint(directory) if self.ctx.is_main else None
        barrier(self.ctx)
        return path
