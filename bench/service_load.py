"""Service load: what another robot node sees when it calls our services in its own loops.

Starts the inference and trainer nodes as their own processes (``launcher.GraphProcess``, as in
deployment), then for ``--seconds``:

* 8 threads call ``segment_image`` back to back on 640x480 renders of the simulated tabletop;
* 2 descriptor clients: ``find_correspondences`` of 100 pixels between a fixed 640x480 reference
  and a fresh target each call (the render plus new noise, so the target is never cached), and
  ``compute_descriptors`` in MODE_KEYPOINTS (up to 500) on a fresh 640x480 image;
* ``load_model`` hot-swaps the instance model between two versions every 2 s;
* the trainer trains on a labelled sample store (its own checkpoint directory).

Then, with the load stopped: 300 ``segment_image`` requests each naming another explicit version
(300 versions on disk) and the inference node's RSS growth over them (the model cache bound), and
``find_correspondences`` (100 pixels, 640x480) alone. Models are the default configurations with
untrained weights (speed does not depend on the weights). A failure is any answer with
``success: false`` or no answer within 30 s; a node death is a node process that exited.

Run: ``.venv/bin/python bench/service_load.py [--seconds 60] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import torch
from rclpy.executors import MultiThreadedExecutor
from rclpy.serialization import serialize_message

from selfsup_perception.core.dataset.sample_store import SampleStore
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.tasks.descriptors import DescriptorTask
from selfsup_perception.core.learning.tasks.instance import InstanceSegmentationTask
from selfsup_perception.core.types import CameraIntrinsics, InteractionKind, InteractionOutcome, InteractionSample, \
    MaskLabel, RgbdFrame
from selfsup_perception.graph import INFERENCE, TRAINER
from selfsup_perception.launcher import GraphProcess
from selfsup_perception.ros.conversions import rgb_to_msg
from selfsup_perception.ros.dds_transport import apply_transport_profile
from selfsup_perception.ros.service_calls import ServiceCallError, call_service
from selfsup_perception.sim.tabletop import CameraConfig, SimConfig, TabletopSim
from selfsup_perception.srv import ComputeDescriptors, FindCorrespondences, LoadModel, SegmentImage

from bench_report import write_json  # bench/ is on sys.path when run as a script

W, H = 640, 480


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def renders(n: int) -> list[np.ndarray]:
    out = []
    with TabletopSim(SimConfig(camera=CameraConfig(width=W, height=H))) as sim:
        for seed in range(n):
            sim.reset_scene(100 + seed, split="test", clutter="medium")
            out.append(sim.render().rgb)
    return out


TRAINED_SIZE = (160, 120)  # (width, height): the trainer's input size in config/trainer.yaml, every task


def write_versions(root: Path, n_versions: int) -> None:
    """Instance versions 1..n (one weight file hard-linked n times) and one descriptors version.

    Their metadata says they were trained at ``TRAINED_SIZE``, as the trainer node's checkpoints
    do: serving runs both networks at that size.
    """
    torch.manual_seed(0)
    task = InstanceSegmentationTask()
    inference = ckpt.inference_info(TRAINED_SIZE)
    first = ckpt.save_checkpoint(root, task=task.name, model=task.build_model(), model_config=task.model_config(),
                                 step=0, inference=inference)
    meta = json.loads((first / ckpt.META_FILE).read_text())
    for v in range(2, n_versions + 1):
        d = root / task.name / f"v{v:05d}"
        d.mkdir()
        os.link(first / ckpt.MODEL_FILE, d / ckpt.MODEL_FILE)
        (d / ckpt.META_FILE).write_text(json.dumps({**meta, "version": v, "step": v}))
    dtask = DescriptorTask()
    ckpt.save_checkpoint(root, task=dtask.name, model=dtask.build_model(), model_config=dtask.model_config(), step=0,
                         inference=inference)


def write_dataset(root: Path, images: list[np.ndarray], n: int = 12) -> None:
    store = SampleStore(root)
    rng = np.random.default_rng(0)
    k = CameraIntrinsics(500.0, 500.0, W / 2 - 0.5, H / 2 - 0.5, W, H)
    for i in range(n):
        rgb = images[i % len(images)]
        frame = RgbdFrame(rgb, np.full((H, W), 0.8, np.float32), k, np.eye(4), stamp=float(i))
        u, v = int(rng.integers(100, W - 100)), int(rng.integers(100, H - 100))
        sample = InteractionSample(f"bench{i}", InteractionKind.PUSH, frame, frame, (float(u), float(v)),
                                   (0.5, 0.0, 0.02), (0.4, 0.0, 0.02), InteractionOutcome.EXECUTED)
        store.write_sample(sample)
        mask = np.zeros((H, W), bool)
        mask[v - 20:v + 20, u - 30:u + 30] = True
        store.write_label(sample.sample_id, MaskLabel(mask, False, True, "bench", "flow"))


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = {}
        self.failures: dict[str, list[str]] = {}
        self.response_bytes: dict[str, list[int]] = {}

    def add(self, name: str, ms: float, ok: bool, why: str = "", nbytes: int = 0) -> None:
        with self.lock:
            if ok:
                self.times.setdefault(name, []).append(ms)
                if nbytes:
                    self.response_bytes.setdefault(name, []).append(nbytes)
            else:
                self.failures.setdefault(name, []).append(why)


def timed(stats: Stats, name: str, client, request, measure_bytes: bool = False):
    t = time.perf_counter()
    try:
        res = call_service(client, request, 30.0)
    except ServiceCallError as exc:
        stats.add(name, 0.0, False, str(exc))
        return None
    ms = (time.perf_counter() - t) * 1000
    stats.add(name, ms, res.success, res.message, len(serialize_message(res)) if measure_bytes else 0)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--versions", type=int, default=300, help="explicit versions requested for the RSS figure")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    apply_transport_profile()  # this process sends the image requests: the same transport as the nodes
    load_avg_start = os.getloadavg()[0]
    images = renders(4)
    rng = np.random.default_rng(1)
    pixels = np.stack([rng.uniform(20, W - 20, 100), rng.uniform(20, H - 20, 100)], 1).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        write_versions(tmp / "ck", args.versions)
        write_dataset(tmp / "ds", images)
        overrides = {"inference": {"checkpoint_dir": str(tmp / "ck"), "follow_trainer": False},
                     "trainer": {"dataset_dir": str(tmp / "ds"), "checkpoint_dir": str(tmp / "ck_trainer"),
                                 "update_interval_s": 0.5, "steps_per_round": 20, "min_samples": 4}}
        graph = GraphProcess([INFERENCE, TRAINER], overrides, echo=False)
        stats = Stats()
        with graph, rclpy.init():
            node = rclpy.create_node("service_load_clients")
            executor = MultiThreadedExecutor(num_threads=4)
            executor.add_node(node)
            threading.Thread(target=executor.spin, daemon=True).start()
            seg = node.create_client(SegmentImage, "segment_image")
            desc = node.create_client(ComputeDescriptors, "compute_descriptors")
            match = node.create_client(FindCorrespondences, "find_correspondences")
            load = node.create_client(LoadModel, "load_model")
            for c in (seg, desc, match, load):
                if not c.wait_for_service(timeout_sec=120):
                    raise SystemExit(f"{c.srv_name} did not come up: {graph.logs}")
            inference_pid = graph.procs["inference"].pid
            seg_msgs = [rgb_to_msg(im) for im in images]
            call_service(seg, SegmentImage.Request(image=seg_msgs[0]), 60.0)  # warm-up
            ref_msg = rgb_to_msg(images[0])
            stop = threading.Event()

            def fresh(i: int) -> np.ndarray:
                noise = np.random.default_rng(i).integers(-3, 4, (H, W, 3))
                return np.clip(images[1].astype(int) + noise, 0, 255).astype(np.uint8)

            def segment_loop(k: int) -> None:
                i = k
                while not stop.is_set():
                    timed(stats, "segment_image", seg, SegmentImage.Request(image=seg_msgs[i % len(seg_msgs)]))
                    i += 1

            def match_loop() -> None:
                i = 0
                while not stop.is_set():
                    req = FindCorrespondences.Request(reference_image=ref_msg, target_image=rgb_to_msg(fresh(i)),
                                                      reference_pixels=pixels.reshape(-1).tolist())
                    timed(stats, "find_correspondences", match, req, measure_bytes=True)
                    i += 1

            def keypoint_loop() -> None:
                i = 10**6
                while not stop.is_set():
                    req = ComputeDescriptors.Request(image=rgb_to_msg(fresh(i)),
                                                     mode=ComputeDescriptors.Request.MODE_KEYPOINTS)
                    timed(stats, "compute_descriptors", desc, req, measure_bytes=True)
                    i += 1

            def swap_loop() -> None:
                v = 1
                while not stop.wait(2.0):
                    v = 2 if v == 1 else 1
                    timed(stats, "load_model", load, LoadModel.Request(task="instance_segmentation", version=v))

            threads = ([threading.Thread(target=segment_loop, args=(k,)) for k in range(8)]
                       + [threading.Thread(target=match_loop), threading.Thread(target=keypoint_loop),
                          threading.Thread(target=swap_loop)])
            rss_load_start = rss_mb(inference_pid)
            t0 = time.monotonic()
            for t in threads:
                t.start()
            time.sleep(args.seconds)
            stop.set()
            for t in threads:
                t.join(60)
            load_s = time.monotonic() - t0
            rss_load_end = rss_mb(inference_pid)

            # explicit versions: the cache bound keeps the RSS flat
            for v in (1, 2, 3):  # warm-up of the allocator
                call_service(seg, SegmentImage.Request(image=seg_msgs[0], model_version=f"v{v}"), 60.0)
            rss_before = rss_mb(inference_pid)
            for v in range(1, args.versions + 1):
                timed(stats, "segment_image(explicit version)", seg,
                      SegmentImage.Request(image=seg_msgs[v % len(seg_msgs)], model_version=f"v{v}"))
            rss_after = rss_mb(inference_pid)

            # find_correspondences alone
            quiet = Stats()
            for i in range(20):
                req = FindCorrespondences.Request(reference_image=ref_msg, target_image=rgb_to_msg(fresh(10**7 + i)),
                                                  reference_pixels=pixels.reshape(-1).tolist())
                timed(quiet, "find_correspondences", match, req, measure_bytes=True)
            versions_trained = len(ckpt.list_versions(tmp / "ck_trainer", "instance_segmentation"))
            deaths = graph.dead()
            executor.shutdown()
            node.destroy_node()

    def pct(name, q, s=stats):
        v = s.times.get(name, [])
        return float(np.percentile(v, q)) if v else float("nan")

    failures = sum(len(v) for v in stats.failures.values()) + sum(len(v) for v in quiet.failures.values())
    out = {
        "seconds": round(load_s, 1),
        "load_average_start_end": [round(load_avg_start, 2), round(os.getloadavg()[0], 2)],
        "failures": failures,
        "failure_examples": {k: v[:3] for k, v in {**stats.failures, **quiet.failures}.items()},
        "node_deaths": len(deaths),
        "trainer_versions_written": versions_trained,
        "rss_growth_mb": round(rss_after - rss_before, 1),
        "rss_during_load_mb": [round(rss_load_start, 1), round(rss_load_end, 1)],
        "find_correspondences.p50_ms": round(pct("find_correspondences", 50), 1),
        "find_correspondences.quiet_p50_ms": round(pct("find_correspondences", 50, quiet), 1),
        "find_correspondences.response_bytes": int(statistics.median(
            stats.response_bytes.get("find_correspondences") or quiet.response_bytes["find_correspondences"])),
        "compute_descriptors.response_bytes": int(statistics.median(stats.response_bytes.get("compute_descriptors", [0]))),
    }
    for name in ("segment_image", "find_correspondences", "compute_descriptors", "load_model",
                 "segment_image(explicit version)"):
        out[f"{name}.calls"] = len(stats.times.get(name, []))
        out[f"{name}.p50_ms"] = round(pct(name, 50), 1)
        out[f"{name}.p99_ms"] = round(pct(name, 99), 1)
        out[f"{name}.p90_ms"] = round(pct(name, 90), 1)
        out[f"{name}.max_ms"] = round(max(stats.times.get(name, [float("nan")])), 1)
        out[f"{name}.over_1s"] = sum(t > 1000.0 for t in stats.times.get(name, []))
    print(f"service load, {out['seconds']} s: 8 segment_image clients + find_correspondences + compute_descriptors "
          f"(keypoints) + load_model every 2 s + trainer ({versions_trained} versions written); images {W}x{H}")
    print(f"{'service':34s} {'calls':>6s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'max ms':>8s} {'>1 s':>5s}")
    for name in ("segment_image", "find_correspondences", "compute_descriptors", "load_model",
                 "segment_image(explicit version)"):
        print(f"{name:34s} {out[name + '.calls']:6d} {out[name + '.p50_ms']:8.1f} {out[name + '.p90_ms']:8.1f} "
              f"{out[name + '.p99_ms']:8.1f} {out[name + '.max_ms']:8.1f} {out[name + '.over_1s']:5d}")
    print(f"load average {out['load_average_start_end'][0]} at the start, {out['load_average_start_end'][1]} at the end "
          f"(2 cores)")
    print(f"failures {failures}, node deaths {len(deaths)}")
    print(f"find_correspondences (100 px) alone: p50 {out['find_correspondences.quiet_p50_ms']:.1f} ms, "
          f"response {out['find_correspondences.response_bytes']} bytes")
    print(f"inference RSS growth over {args.versions} explicit-version requests: {out['rss_growth_mb']:.1f} MB")
    if args.json:
        write_json(args.json, out)  # atomic, strict JSON (a service without calls: null, not NaN)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
