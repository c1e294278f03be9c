"""Keypoint matching benchmark for dense descriptors on held-out simulated image pairs.

Data: TabletopSim scenes (train split objects; training and test scenes use disjoint seeds), each rendered from
random viewpoints around the workspace (``look_at``). Ground-truth correspondences of query pixels on objects
in view A come from depth + camera poses (backproject, transform, project) with a Dense-Object-Nets occlusion
check (observed depth in B >= projected depth - tol). Metrics: PCK@3/5/10/25/50 px, AUC of PCK over 1..50 px,
mean pixel error normalised by the image diagonal.

Methods (every network trained through the shared ``Trainer`` and written as a real checkpoint, then evaluated on
the model rebuilt from that checkpoint with the inference node's calls, i.e. the served path): identical view;
cycle, cycle + 0.1 identical, and cycle + identical with cross-appearance alignment, each initialised from the
identical-view pre-training checkpoint as in the paper (``--no-init-from-identical``: random init); geometric
(depth + pose correspondences, distributional loss, random init). Every method gets the same total step budget
``--steps`` (identical-view rows: ``--pretrain-steps`` of pre-training + the rest); an untrained network, SIFT and
ORB for reference. Then the same pairs with B rendered under a random appearance. Finally the descriptor services
of an inference node process at 640x480 (median ms per call) and the core steps behind them.

    PYTHONPATH=. python bench/descriptor_matching.py            # full: 950 s measured at load 7-9.6 (280 s CPU); ~7 min at load 4 (extrapolated)
    PYTHONPATH=. python bench/descriptor_matching.py --quick    # smoke run (~1 min), numbers meaningless
    (export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS_DOMAIN_ID of your own for the service part)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from selfsup_perception.core.descriptors.classical_baseline import match_classical
from selfsup_perception.core.descriptors.matching import compute_descriptor_image, find_correspondences
from selfsup_perception.core.descriptors.metrics import matching_metrics, pixel_errors
from selfsup_perception.core.descriptors.sparse import compute_descriptor_map, match_on_grid
from selfsup_perception.core.geometry.camera import backproject_pixels, project, transform_points
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.tasks.descriptors import DescriptorTask, DescriptorTaskConfig
from selfsup_perception.core.descriptors.spatial_expectation import grid_to_image, image_to_grid
from selfsup_perception.core.learning.models.backbone import BackboneConfig, normalize_image
from selfsup_perception.core.learning.models.descriptor_net import DescriptorNetConfig
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig
from selfsup_perception.core.types import RgbdFrame
from selfsup_perception.sim.tabletop import WORLDS, CameraConfig, SimConfig, TabletopSim, look_at


def random_view(rng: np.random.Generator) -> np.ndarray:
    """camera_to_world of a random viewpoint looking at the workspace (azimuth +-50 deg about the default)."""
    target = np.array([0.55 + rng.uniform(-0.05, 0.05), rng.uniform(-0.06, 0.06), 0.0])
    az = math.radians(rng.uniform(-50, 50))
    el = math.radians(rng.uniform(35, 62))
    r = rng.uniform(0.55, 0.8)
    eye = target + r * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    return look_at(eye, target)


def gt_correspondences(fa: RgbdFrame, fb: RgbdFrame, pixels_a: np.ndarray, tol: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """Pixels in B (N, 2) of integer pixels (N, 2) of A and a visibility mask (N,) (inside B, not occluded)."""
    u, v = pixels_a[:, 0].astype(int), pixels_a[:, 1].astype(int)
    z = fa.depth[v, u].astype(np.float64)
    ok = np.isfinite(z)
    pts_w = transform_points(fa.camera_to_world, backproject_pixels(pixels_a, np.nan_to_num(z, nan=1.0), fa.intrinsics))
    uv_b, zb = project(transform_points(np.linalg.inv(fb.camera_to_world), pts_w), fb.intrinsics)
    h, w = fb.depth.shape
    ub, vb = np.round(uv_b[:, 0]), np.round(uv_b[:, 1])
    ok &= np.isfinite(ub) & (ub >= 0) & (ub <= w - 1) & (vb >= 0) & (vb <= h - 1)
    zobs = np.full(len(z), np.nan)
    zobs[ok] = fb.depth[vb[ok].astype(int), ub[ok].astype(int)]
    ok &= np.isfinite(zobs) & (zobs >= zb - tol)
    return uv_b, ok


def render_pair_set(sim: TabletopSim, seeds: list[int], rng: np.random.Generator, with_alt: bool, n_corr: int,
                    exact_depth: bool = False):
    """Per scene: view A, view B, (A under a random appearance), GT correspondences for geometric training.

    Correspondences come from the sensor's depth (noisy, with holes, in the realistic world), as
    a robot would have them; ``exact_depth``: from the renderer's exact depth (evaluation ground truth)."""
    out = []
    default_appearance = sim.appearance
    for seed in seeds:
        sim.reset_scene(seed, split="train", clutter=str(rng.choice(["low", "medium"])))
        sim.set_camera_pose(random_view(rng))
        fa, gta = sim.render_with_ground_truth()
        sim.set_camera_pose(random_view(rng))
        fb, gtb = sim.render_with_ground_truth()
        item = {"a": fa, "b": fb, "inst_a": gta["instance_mask"], "sem_a": gta["semantic_mask"]}
        if with_alt:
            sim.set_camera_pose(fa.camera_to_world)
            sim.set_appearance(sim.random_appearance(rng))
            item["a_alt"] = sim.render()
            sim.set_camera_pose(fb.camera_to_world)
            item["b_alt"] = sim.render()
            sim.set_appearance(default_appearance)
        h, w = fa.depth.shape
        px = np.stack([rng.integers(0, w, n_corr), rng.integers(0, h, n_corr)], 1).astype(np.float64)
        if exact_depth:
            uv_b, ok = gt_correspondences(dataclasses.replace(fa, depth=gta["depth"]),
                                          dataclasses.replace(fb, depth=gtb["depth"]), px)
        else:
            uv_b, ok = gt_correspondences(fa, fb, px)
        item["corr_a"], item["corr_b"], item["corr_valid"] = px, np.nan_to_num(uv_b), ok
        out.append(item)
    return out


def to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W) uint8


def batches(data: list[dict], batch_size: int, seed: int, use_alt: bool) -> Iterator[dict]:
    """Endless random batches in the DescriptorTask batch contract."""
    rng = np.random.default_rng(seed)
    while True:
        items = [data[i] for i in rng.choice(len(data), size=batch_size, replace=False)]
        batch = {"rgb_a": to_tensor([it["a"].rgb for it in items]), "rgb_b": to_tensor([it["b"].rgb for it in items]),
                 "corr_a": torch.from_numpy(np.stack([it["corr_a"] for it in items])),
                 "corr_b": torch.from_numpy(np.stack([it["corr_b"] for it in items])),
                 "corr_valid": torch.from_numpy(np.stack([it["corr_valid"] for it in items]))}
        if use_alt:
            batch["rgb_a_alt"] = to_tensor([it["a_alt"].rgb for it in items])
            batch["semantic_a"] = torch.from_numpy(np.stack([it["sem_a"] for it in items]))
        yield batch


@dataclasses.dataclass
class RunResult:
    checkpoint: Path  # version directory written by Trainer.save_checkpoint
    steps: int  # optimizer steps in this run (pre-training not included)
    wall_s: float
    cpu_s: float  # process CPU time (all threads) -- meaningful when the machine is shared
    final: dict  # mean task metrics over the last steps


def train_run(task_cfg: DescriptorTaskConfig, trainer_cfg: TrainerConfig, data: list[dict], steps: int,
              batch_size: int, seed: int, use_alt: bool) -> RunResult:
    """Train ``steps`` steps through the shared Trainer (the trainer node's loop) and write a real checkpoint into
    ``trainer_cfg.checkpoint_dir``. With ``task_cfg.init_checkpoint`` the network starts from that checkpoint's
    weights (fresh optimizer, its own warm-up + cosine schedule over ``steps``)."""
    w0, c0 = time.perf_counter(), time.process_time()
    trainer = Trainer(DescriptorTask(task_cfg), trainer_cfg)
    records = trainer.train_steps(batches(data, batch_size, seed, use_alt), steps)
    if len(records) != steps:
        raise RuntimeError(f"took {len(records)} of {steps} steps ({trainer.skipped_steps} skipped)")
    path = trainer.save_checkpoint()
    return RunResult(path, steps, time.perf_counter() - w0, time.process_time() - c0,
                     trainer.recent_metrics(max(1, min(20, steps))))


def make_queries(test: list[dict], rng: np.random.Generator, per_pair: int, appearance: bool):
    """Query pixels on objects in A with a visible GT match in B; returns a list of (item, px_a, gt_b, rgb_b)."""
    out = []
    for it in test:
        ys, xs = np.nonzero(it["inst_a"] > 0)
        if len(xs) == 0:
            continue
        pick = rng.permutation(len(xs))[: per_pair * 4]
        px = np.stack([xs[pick], ys[pick]], 1).astype(np.float64)
        uv_b, ok = gt_correspondences(it["a"], it["b"], px)
        px, uv_b = px[ok][:per_pair], uv_b[ok][:per_pair]
        if len(px):
            out.append((it, px, uv_b, (it["b_alt"] if appearance else it["b"]).rgb))
    return out


def evaluate(match_fn, queries, width: int, height: int) -> dict[str, float]:
    errors = []
    for it, px, gt_b, rgb_b in queries:
        pred, _ = match_fn(it["a"].rgb, rgb_b, px)
        errors.append(pixel_errors(pred, gt_b))
    return matching_metrics(np.concatenate(errors), width, height)


def checkpoint_matcher(version_dir: Path):
    """Matcher on the model *as served*: rebuilt from the checkpoint (load_model_for_inference), then the same
    compute_descriptor_image + find_correspondences calls as the inference node."""
    model, _ = ckpt.load_model_for_inference(version_dir)

    def fn(rgb_a, rgb_b, px):
        return find_correspondences(compute_descriptor_image(model, rgb_a), compute_descriptor_image(model, rgb_b), px)
    return fn


def served_size_evaluation(version_dir: Path, args) -> dict:
    """PCK/AUC on pairs rendered at the serving size (default 640x480) for four paths of one checkpoint.

    The inference node runs the network on the image resized to the checkpoint's training size and
    matches on a grid of its map with local refinement (``match_on_grid``); before, it ran the
    network on the full image. Ground truth from exact depth and poses, as in the main table.
    """
    rng = np.random.default_rng(args.seed + 7)
    with TabletopSim(SimConfig(seed=args.seed, world=args.world,
                               camera=CameraConfig(width=args.serve_width, height=args.serve_height))) as sim:
        test = render_pair_set(sim, list(range(10_000, 10_000 + args.serve_scenes)), rng, with_alt=False, n_corr=1,
                               exact_depth=True)
    queries = make_queries(test, np.random.default_rng(args.seed + 1), args.queries_per_pair, appearance=False)
    model, meta = ckpt.load_model_for_inference(version_dir)
    size = ckpt.serving_input_size(meta)

    def exhaustive(input_size):
        return lambda a, b, p: find_correspondences(compute_descriptor_image(model, a, input_size=input_size),
                                                    compute_descriptor_image(model, b, input_size=input_size), p)

    def on_grid(input_size):
        return lambda a, b, p: match_on_grid(compute_descriptor_map(model, a, input_size=input_size), a.shape[:2],
                                             compute_descriptor_map(model, b, input_size=input_size), b.shape[:2], p)

    paths = {
        "full image, exhaustive (served before)": exhaustive(None),
        "full image, grid + refinement": on_grid(None),
        f"training size {size[0]}x{size[1]}, exhaustive": exhaustive(size),
        f"training size {size[0]}x{size[1]}, grid + refinement (served now)": on_grid(size),
    }
    out = {}
    for name, fn in paths.items():
        t = time.perf_counter()
        out[name] = evaluate(fn, queries, args.serve_width, args.serve_height)
        out[name]["ms_per_pair"] = (time.perf_counter() - t) * 1000.0 / max(len(queries), 1)
    return {"results": out, "pairs": len(queries), "queries": int(sum(len(q[1]) for q in queries)),
            "training_size": list(size)}


def median_ms(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return float(statistics.median(times))


def service_round_trip(checkpoint_root: Path, calls: int, n_pixels: int, threads: int, seed: int,
                       width: int = 640, height: int = 480, world: str = "simple") -> dict[str, float]:
    """Median ms of ``compute_descriptors`` / ``find_correspondences`` calls to an inference node process serving
    the newest descriptors model in ``checkpoint_root``, plus the core steps timed in this process."""
    import array

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from selfsup_perception.graph import INFERENCE
    from selfsup_perception.launcher import GraphProcess
    from selfsup_perception.ros.conversions import rgb_to_msg
    from selfsup_perception.ros.service_calls import call_service
    from selfsup_perception.srv import ComputeDescriptors, FindCorrespondences

    rng = np.random.default_rng(seed)
    with TabletopSim(SimConfig(seed=seed, world=world, camera=CameraConfig(width=width, height=height))) as sim:
        sim.reset_scene(10_500, split="train", clutter="medium")
        sim.set_camera_pose(random_view(rng))
        rgb_a = sim.render().rgb
        sim.set_camera_pose(random_view(rng))
        rgb_b = sim.render().rgb
    px = np.stack([rng.uniform(0, width - 1, n_pixels), rng.uniform(0, height - 1, n_pixels)], 1)
    out: dict[str, float] = {}

    # core steps in this process (what the node does per request)
    model, _ = ckpt.load_model_for_inference(ckpt.latest_version(checkpoint_root, "descriptors").path)
    n_core = max(2, calls // 2)
    desc = compute_descriptor_image(model, rgb_a)
    desc_b = compute_descriptor_image(model, rgb_b)
    out["core_compute_descriptor_image_ms"] = median_ms(lambda: compute_descriptor_image(model, rgb_a), n_core)
    out["core_find_correspondences_ms"] = median_ms(lambda: find_correspondences(desc, desc_b, px), n_core)
    out["core_tolist_ms"] = median_ms(lambda: desc.reshape(-1).tolist(), n_core)
    # alternative: match on the stride-s grid the network outputs (no upsampling), then map back to pixels
    x_a = normalize_image(torch.from_numpy(rgb_a).permute(2, 0, 1).unsqueeze(0))
    x_b = normalize_image(torch.from_numpy(rgb_b).permute(2, 0, 1).unsqueeze(0))
    with torch.no_grad():
        low = lambda x: model(x)[0].permute(1, 2, 0).contiguous().numpy()  # noqa: E731  (h, w, D)
        out["core_descriptor_grid_ms"] = median_ms(lambda: low(x_a), n_core)
        low_a, low_b = low(x_a), low(x_b)
    stride = model.stride
    g = image_to_grid(px, stride).clip(0, [low_a.shape[1] - 1, low_a.shape[0] - 1])
    out["core_find_correspondences_grid_ms"] = median_ms(lambda: find_correspondences(low_a, low_b, g), n_core)
    full_match = find_correspondences(desc, desc_b, px)[0]
    grid_match = grid_to_image(find_correspondences(low_a, low_b, g)[0], stride)
    out["grid_vs_full_match_median_px"] = float(np.median(np.linalg.norm(full_match - grid_match, axis=1)))
    msg = ComputeDescriptors.Response()
    out["msg_assign_list_ms"] = median_ms(lambda: setattr(msg.descriptors, "data", desc.reshape(-1).tolist()), n_core)

    def assign_buffer():
        buf = array.array("f")
        buf.frombytes(np.ascontiguousarray(desc, dtype=np.float32).tobytes())
        msg.descriptors.data = buf
    out["msg_assign_array_ms"] = median_ms(assign_buffer, n_core)

    overrides = {"inference": {"checkpoint_dir": str(checkpoint_root), "torch_threads": threads}}
    with rclpy.init(), GraphProcess([INFERENCE], overrides, echo=False) as graph:
        node = rclpy.create_node("bench_descriptor_client")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        cd = node.create_client(ComputeDescriptors, "compute_descriptors")
        fc = node.create_client(FindCorrespondences, "find_correspondences")
        if not (cd.wait_for_service(timeout_sec=60) and fc.wait_for_service(timeout_sec=60)):
            raise SystemExit(f"inference node did not come up: {graph.logs.get('inference', [])[-5:]}")
        req_d = ComputeDescriptors.Request(image=rgb_to_msg(rgb_a))
        req_f = FindCorrespondences.Request(reference_image=rgb_to_msg(rgb_a), target_image=rgb_to_msg(rgb_b),
                                            reference_pixels=px.astype(np.float32).reshape(-1).tolist())
        warm = {}
        for req, client in ((req_d, cd), (req_f, fc)):  # warm-up, and check the answer
            warm[client.srv_name] = res = call_service(client, req, 120.0)
            if not res.success:
                raise SystemExit(f"{client.srv_name} failed: {res.message}")
        d = warm[cd.srv_name].descriptors
        served = np.asarray(d.data, dtype=np.float32).reshape(d.height, d.width, d.dimension)
        out["service_matches_core_max_abs"] = float(np.abs(served - desc).max())
        out["compute_descriptors_ms"] = median_ms(lambda: call_service(cd, req_d, 120.0), calls)
        out["find_correspondences_ms"] = median_ms(lambda: call_service(fc, req_f, 120.0), calls)
        executor.shutdown()
        node.destroy_node()
    out["response_mb"] = width * height * int(desc.shape[2]) * 4 / 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", choices=WORLDS, default="realistic", help="simulated world")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (< 2 min), numbers meaningless")
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--train-scenes", type=int, default=48)
    ap.add_argument("--test-scenes", type=int, default=24)
    ap.add_argument("--steps", type=int, default=400, help="total optimizer steps per method (pre-training included)")
    ap.add_argument("--pretrain-steps", type=int, default=-1,
                    help="identical-view pre-training steps the cycle modes start from (default: steps / 2)")
    ap.add_argument("--no-init-from-identical", dest="init_from_identical", action="store_false",
                    help="train the cycle modes from random init for all --steps (the paper initialises them from "
                         "the identical-view checkpoint)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--queries-per-pair", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-dir", type=str, default="", help="keep the checkpoints here (default: a temp dir)")
    ap.add_argument("--no-service", dest="service", action="store_false",
                    help="skip the 640x480 descriptor-service round trip")
    ap.add_argument("--service-calls", type=int, default=5)
    ap.add_argument("--service-pixels", type=int, default=100)
    ap.add_argument("--json", type=str, default="", help="write the results here as JSON")
    ap.add_argument("--methods", type=str, default="",
                    help="comma-separated slugs of the trained methods to run (e.g. cycle_identical,geometric); "
                         "default: all")
    ap.add_argument("--served-size-eval", action="store_true",
                    help="evaluate cycle+identical on test pairs rendered at --serve-width x --serve-height: the "
                         "network at its training size (as served) against the network on the full image")
    ap.add_argument("--serve-width", type=int, default=640)
    ap.add_argument("--serve-height", type=int, default=480)
    ap.add_argument("--serve-scenes", type=int, default=8)
    args = ap.parse_args()
    if args.quick:
        args.train_scenes, args.test_scenes, args.steps, args.service_calls = 8, 4, 6, 1
    steps = args.steps
    pre = (steps // 2 if args.pretrain_steps < 0 else args.pretrain_steps) if args.init_from_identical else 0
    if not 0 <= pre < steps:
        raise SystemExit("--pretrain-steps must be in [0, --steps)")
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    tmp = None if args.checkpoint_dir else tempfile.TemporaryDirectory(prefix="desc_bench_")
    root = Path(args.checkpoint_dir or tmp.name)
    with TabletopSim(SimConfig(seed=args.seed, world=args.world,
                               camera=CameraConfig(width=args.width, height=args.height))) as sim:
        train_data = render_pair_set(sim, list(range(args.train_scenes)), rng, with_alt=True, n_corr=400)
        test_data = render_pair_set(sim, list(range(10_000, 10_000 + args.test_scenes)), rng, with_alt=True, n_corr=1,
                                    exact_depth=True)
    n_gt = np.mean([it["corr_valid"].mean() for it in train_data])
    print(f"data ({args.world} world): {len(train_data)} train / {len(test_data)} test scene pairs at {args.width}x{args.height}, "
          f"{time.perf_counter() - t0:.0f} s; geometric GT valid fraction {n_gt:.2f}", flush=True)
    qrng = np.random.default_rng(args.seed + 1)
    queries = make_queries(test_data, qrng, args.queries_per_pair, appearance=False)
    queries_app = [(it, px, gt, it["b_alt"].rgb) for it, px, gt, _ in queries]
    print(f"queries: {sum(len(q[1]) for q in queries)} object pixels over {len(queries)} test pairs", flush=True)

    model_cfg = DescriptorNetConfig(descriptor_dim=64, head_channels=64,
                                    backbone=BackboneConfig(widths=(16, 32, 48, 64), output_stride=8))
    base = DescriptorTaskConfig(model=model_cfg, num_keypoints=128, seed=args.seed)

    def trainer_cfg(sub: str, n: int) -> TrainerConfig:
        return TrainerConfig(lr=args.lr, warmup_steps=min(20, max(1, n // 10)), schedule="cosine", total_steps=n,
                             log_every=0, checkpoint_dir=str(root / sub), dataset_size=len(train_data), seed=args.seed,
                             input_size=(args.width, args.height))  # in the metadata: serving runs the net at it

    results: dict[str, dict] = {}
    timing: dict[str, dict] = {}

    def record(name: str, matcher, run: RunResult | None = None) -> None:
        results[name] = {"same": evaluate(matcher, queries, args.width, args.height),
                         "appearance": evaluate(matcher, queries_app, args.width, args.height)}
        if run is not None:
            results[name].update(checkpoint=str(run.checkpoint), final=run.final)
            timing[name] = {"steps": run.steps, "wall_s": run.wall_s, "cpu_s": run.cpu_s}
            print(f"trained {name}: {run.steps} steps in {run.wall_s:.0f} s wall / {run.cpu_s:.0f} s CPU "
                  f"({run.wall_s / run.steps:.2f} s/step) -> {run.checkpoint.relative_to(root)}; last metrics "
                  f"{json.dumps({k: round(v, 3) for k, v in run.final.items() if k in KEY_METRICS})}", flush=True)

    # floor: random-init network, saved and served like the others
    untrained = Trainer(DescriptorTask(base), trainer_cfg("untrained", 1)).save_checkpoint()
    record("untrained network", checkpoint_matcher(untrained))

    # identical view: pre-training (the cycle modes' initialisation), then the rest of the budget
    ident = dataclasses.replace(base, mode="identical")
    if pre:
        pretrain = train_run(ident, trainer_cfg("pretrain_identical", pre), train_data, pre, args.batch_size,
                             args.seed, False)
        timing["identical pre-training"] = {"steps": pre, "wall_s": pretrain.wall_s, "cpu_s": pretrain.cpu_s}
        print(f"pre-trained identical view: {pre} steps in {pretrain.wall_s:.0f} s -> "
              f"{pretrain.checkpoint.relative_to(root)}", flush=True)
    init = str(pretrain.checkpoint) if pre else ""
    seed2 = args.seed + 1  # fresh batches/augmentations after pre-training
    wanted = set(args.methods.split(",")) if args.methods else None
    runs = [
        ("identical-view", dataclasses.replace(ident, init_checkpoint=init, seed=seed2), False),
        ("cycle", dataclasses.replace(base, mode="cycle", init_checkpoint=init, seed=seed2), False),
        ("cycle+identical", dataclasses.replace(base, mode="cycle_identical", init_checkpoint=init, seed=seed2), False),
        ("cycle+identical +align", dataclasses.replace(base, mode="cycle_identical", init_checkpoint=init, seed=seed2,
                                                       alignment_weight=1.0, mix_probability=0.5), True),
    ]
    for name, cfg, use_alt in runs:
        if wanted is not None and slug(name) not in wanted:
            continue
        run = train_run(cfg, trainer_cfg(slug(name), steps - pre), train_data, steps - pre, args.batch_size, seed2,
                        use_alt)
        record(name, checkpoint_matcher(run.checkpoint), run)
    if wanted is None or "geometric" in wanted:
        geo = dataclasses.replace(base, mode="geometric")  # supervised reference: random init, the full budget
        run = train_run(geo, trainer_cfg("geometric", steps), train_data, steps, args.batch_size, args.seed, False)
        record("geometric (depth+pose)", checkpoint_matcher(run.checkpoint), run)
    for method in ("sift", "orb"):
        record(method.upper(), lambda a, b, p, m=method: match_classical(a, b, p, method=m))
    train_eval_s, train_eval_cpu = time.perf_counter() - t0, time.process_time() - c0

    keys = ["pck@3", "pck@5", "pck@10", "pck@25", "pck@50", "auc", "nme"]
    for cond, title in (("same", "same appearance (viewpoint change)"), ("appearance", "viewpoint + appearance change")):
        print(f"\n### {title}")
        print("| method | " + " | ".join(k.upper() if k != "nme" else "norm. mean err" for k in keys) + " |")
        print("|---" * (len(keys) + 1) + "|")
        for name, r in results.items():
            print(f"| {name} | " + " | ".join(f"{r[cond][k]:.3f}" for k in keys) + " |")
    budget = f"{pre} identical-view pre-training + {steps - pre}" if pre else f"{steps}"
    print(f"\nstep budget per method: {steps} ({budget} for the identical/cycle rows; geometric {steps} from "
          f"random init); data + training + evaluation {train_eval_s:.0f} s wall, {train_eval_cpu:.0f} s CPU "
          f"(this process)", flush=True)

    served = None
    if args.served_size_eval:
        version = ckpt.latest_version(root / slug("cycle+identical"), "descriptors")
        if version is None:
            raise SystemExit("--served-size-eval needs the cycle+identical run (see --methods)")
        served = served_size_evaluation(version.path, args)
        print(f"\n### served at the training size vs the network on the full image: cycle+identical, "
              f"{served['pairs']} pairs / {served['queries']} queries at {args.serve_width}x{args.serve_height} "
              f"({args.world} world), network trained at {args.width}x{args.height}")
        print("| path | " + " | ".join(k.upper() if k != "nme" else "norm. mean err" for k in keys) + " | ms per pair |")
        print("|---" * (len(keys) + 2) + "|")
        for name, r in served["results"].items():
            print(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + f" | {r['ms_per_pair']:.0f} |")

    service = None
    if args.service:
        service = service_round_trip(root / slug("cycle+identical"), args.service_calls, args.service_pixels,
                                     args.threads, args.seed, world=args.world)
        print(f"\n### descriptor services at 640x480 (inference node process, {args.threads} torch thread(s), "
              f"median of {args.service_calls} calls, {args.service_pixels} query pixels)")
        for k, v in service.items():
            print(f"{k}: {v:.4g}")
    total = time.perf_counter() - t0
    print(f"\ntotal {total:.0f} s wall, {time.process_time() - c0:.0f} s CPU (this process); "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results, "timing": timing, "service": service, "served_size": served,
                       "total_s": total}, f, indent=1, default=float)
    if tmp is not None:
        tmp.cleanup()


KEY_METRICS = ("loss", "identical", "cycle", "cycle_kept_error_px", "geometric", "alignment")


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


if __name__ == "__main__":
    main()
