"""Distributed offline training: the sampler's global batches, and real 2-process torchrun runs (gloo on CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.training.distributed import DistributedBatchSampler, micro_batch_seed

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def test_a_global_batch_is_the_same_for_any_number_of_processes():
    one = DistributedBatchSampler(10, 4, seed=3)
    two = [DistributedBatchSampler(10, 4, rank=r, world_size=2, seed=3) for r in range(2)]
    accumulating = DistributedBatchSampler(10, 4, seed=3, micro_batch_size=2)
    for step in range(7):
        union = np.concatenate([idx for s in two for _, idx in s.micro_batches(step)])
        np.testing.assert_array_equal(union, one.global_batch(step))
        # rank r's slice == micro-batch r of one accumulating process, at the same place in the global batch
        assert [(p, list(i)) for s in two for p, i in s.micro_batches(step)] == \
               [(p, list(i)) for p, i in accumulating.micro_batches(step)]
    # the stream of batches visits every sample once per epoch (10 samples, 5 steps of 4 = 2 epochs)
    stream = np.concatenate([one.global_batch(s) for s in range(5)])
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert micro_batch_seed(0, 5, 2) == micro_batch_seed(0, 5, 2) != micro_batch_seed(0, 5, 0)


def test_sampler_refuses_batches_that_do_not_split():
    with pytest.raises(ValueError, match=r"global batch size \(5\) must be a positive multiple of the number of "
                                         r"processes \(2\)"):
        DistributedBatchSampler(10, 5, world_size=2)
    with pytest.raises(ValueError, match=r"per-process batch \(4\) must be a multiple of the micro-batch size \(3\)"):
        DistributedBatchSampler(10, 4, micro_batch_size=3)
    with pytest.raises(ValueError, match="the dataset is empty"):
        DistributedBatchSampler(0, 4)


def _env(marker: str = "") -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", SELFSUP_TEST_RUN=marker)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _params(run: Path) -> dict[str, torch.Tensor]:
    info = ckpt.latest_version(run / "checkpoints", "instance_segmentation")
    assert info is not None
    state = ckpt.load_state_dict(info.path)
    # BatchNorm running statistics are buffers, not weights: under DDP they are rank 0's
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}


TRAIN = ["-m", "selfsup_perception.cli.train_offline", "--synthetic", "16", "--batch-size", "4", "--no-eval",
         "--threads", "1", "--warmup-steps", "0", "--checkpoint-every", "0", "--seed", "5"]


@pytest.mark.slow
def test_two_processes_give_the_weights_of_one_process_with_the_same_global_batch(tmp_path):
    single = subprocess.run([sys.executable, *TRAIN, "--steps", "3", "--micro-batch-size", "2",
                             "--out", str(tmp_path / "one")], env=_env(), capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    double = subprocess.run([*TORCHRUN, "--standalone", "--nproc_per_node=2", *TRAIN, "--steps", "3",
                             "--out", str(tmp_path / "two")], env=_env(), capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    assert "trained instance_segmentation for 3 steps on 2 process(es)" in double.stdout
    one, two = _params(tmp_path / "one"), _params(tmp_path / "two")
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=1e-4, msg=k)
    # and the runs did train: the weights moved away from the seed's initialisation
    from selfsup_perception.core.learning.tasks.instance import InstanceSegmentationTask

    torch.manual_seed(5)  # what the trainer does with --seed 5 before building the model
    init = InstanceSegmentationTask().build_model().state_dict()
    moved = max(float((one[k] - init[k]).abs().max()) for k in one)
    assert moved > 1e-3
    # resume continues every rank from rank 0's checkpoint
    resumed = subprocess.run([*TORCHRUN, "--standalone", "--nproc_per_node=2", *TRAIN, "--steps", "4",
                              "--resume", "--out", str(tmp_path / "two")], env=_env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [i.meta["step"] for i in ckpt.list_versions(tmp_path / "two" / "checkpoints", "instance_segmentation")] \
        == [3, 4]


def _rank_pid(marker: str, rank: int) -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SELFSUP_TEST_RUN={marker}".encode() in env and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


@pytest.mark.slow
def test_killing_one_rank_stops_the_job_with_a_clear_error_and_no_partial_checkpoint(tmp_path):
    marker = uuid.uuid4().hex
    out = tmp_path / "run"
    job = subprocess.Popen([*TORCHRUN, "--standalone", "--nproc_per_node=2", *TRAIN[:-2],
                            "--checkpoint-every", "1", "--steps", "100000", "--out", str(out)],
                           env=_env(marker), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(ckpt.list_versions(out / "checkpoints", "instance_segmentation")) < 2:
            assert job.poll() is None, job.stdout.read()[-3000:]
            time.sleep(0.2)
        victim = _rank_pid(marker, 1)
        assert victim is not None, "rank 1 not found"
        os.kill(victim, signal.SIGKILL)
        output, _ = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode != 0
    assert "FAILED" in output and "Signal 9 (SIGKILL)" in output, output[-3000:]
    assert _rank_pid(marker, 0) is None  # rank 0 stopped too
    task_dir = out / "checkpoints" / "instance_segmentation"
    assert not list(task_dir.glob(".tmp-*")), list(task_dir.iterdir())
    versions = ckpt.list_versions(out / "checkpoints", "instance_segmentation", valid_only=False)
    assert versions and all(ckpt.validate_version(v.path, "instance_segmentation") for v in versions)


def _check_worker(rank: int, store: str, values: list, results: str) -> None:
    import torch.distributed as dist

    from selfsup_perception.core.learning.training.distributed import (
        DistributedContext,
        DistributedError,
        check_same_on_all_ranks,
    )

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        check_same_on_all_ranks(DistributedContext(rank, 2, rank, "gloo", "cpu"), values[rank], "the answer")
        message = "ok"
    except DistributedError as exc:
        message = str(exc)
    finally:
        dist.destroy_process_group()
    Path(results, f"rank{rank}").write_text(message)


@pytest.mark.slow
def test_a_value_that_differs_between_processes_stops_every_rank(tmp_path):
    """E.g. a machine whose copy of the dataset has another size: every rank gets the same clear error."""
    import torch.multiprocessing as mp

    mp.spawn(_check_worker, args=(str(tmp_path / "store"), [7, 9], str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"rank{r}").read_text() for r in range(2)] == [
        "the answer differs between processes (7 .. 9; this rank: 7)",
        "the answer differs between processes (7 .. 9; this rank: 9)"]


def test_the_distributed_trainer_keeps_the_ema_it_checkpoints(tmp_path):
    """With ema_decay > 0 the checkpoint holds the averaged weights: the DDP loop must update them too."""
    from selfsup_perception.core.learning.serving import checkpoints as ckpt
    from selfsup_perception.core.learning.tasks.instance import (
        InstanceSegmentationTask,
        InstanceTaskConfig,
        collate_samples,
        synthetic_items,
    )
    from selfsup_perception.core.learning.models.instance_segmentation import InstanceSegConfig
    from selfsup_perception.core.learning.training.distributed import DDPTrainer, DistributedContext
    from selfsup_perception.core.learning.training.trainer import TrainerConfig

    task = InstanceSegmentationTask(InstanceTaskConfig(model=InstanceSegConfig(widths=(8, 8, 8, 8), decoder_channels=8,
                                                                               embedding_dim=4)))
    trainer = DDPTrainer(task, TrainerConfig(lr=1e-2, warmup_steps=0, ema_decay=0.5, log_every=0), DistributedContext())
    before = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
    items = synthetic_items(4, height=32, width=48, seed=0)
    rng = np.random.default_rng(0)
    records = trainer.train_steps(([(i, collate_samples(items, rng=rng))] for i in range(3)), 3)
    assert len(records) == 3
    changed = [k for k, v in trainer.ema.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed, "the EMA weights never moved"
    saved = ckpt.load_state_dict(trainer.save_checkpoint(tmp_path))
    for k, v in trainer.ema.state_dict().items():
        assert torch.equal(saved[k], v)
