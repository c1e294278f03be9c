"""Offline training throughput on 1 vs N processes (torchrun, DistributedDataParallel, gloo on CPU / NCCL on GPU).

Runs ``cli/train_offline.py`` as a user would (``python -m`` for 1 process, ``torchrun --standalone
--nproc_per_node=N`` for N) on synthetic instance-segmentation scenes (no simulator, no disk data) with the
same global batch, and reads the training time that rank 0 writes into ``report/metrics.json`` (training
loop only: start-up, data loading and the checkpoint at the end are excluded).

    python bench/train_distributed.py                     # 1 and 2 processes, table
    python bench/train_distributed.py --procs 1 2 4 --steps 60 --json /tmp/ddp.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(procs: int, args, out: Path) -> dict:
    train = ["-m", "selfsup_perception.cli.train_offline", "--task", args.task, "--synthetic", str(args.scenes),
             "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--no-eval", "--checkpoint-every", "0",
             "--threads", str(args.threads), "--device", args.device, "--out", str(out)]
    cmd = ([sys.executable, *train] if procs == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *train])
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{procs} process(es) failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    return {"processes": procs, "global_batch": args.batch_size, "steps": metrics["steps"],
            "train_seconds": round(metrics["train_seconds"], 2),
            "samples_per_second": round(metrics["samples_per_second"], 2),
            "final_loss": round(metrics["final_loss"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--task", default="instance_segmentation", choices=["instance_segmentation"])
    ap.add_argument("--scenes", type=int, default=64, help="synthetic 128x96 scenes")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8, help="global batch (a multiple of every --procs)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="train_distributed_") as tmp:
        for n in args.procs:
            rows.append(run(n, args, Path(tmp) / f"p{n}"))
    base = rows[0]["samples_per_second"]
    print(f"{'processes':>9} {'global batch':>12} {'steps':>6} {'train s':>8} {'samples/s':>10} {'speed-up':>9}")
    for r in rows:
        r["speedup"] = round(r["samples_per_second"] / base, 2)
        print(f"{r['processes']:>9} {r['global_batch']:>12} {r['steps']:>6} {r['train_seconds']:>8.2f} "
              f"{r['samples_per_second']:>10.2f} {r['speedup']:>9.2f}")
    print(f"cpu cores: {os.cpu_count()}, torch threads per process: {args.threads}, device: {args.device}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "cpu_cores": os.cpu_count(), "threads": args.threads,
                                         "device": args.device, "task": args.task}, indent=2))


if __name__ == "__main__":
    main()
