"""Keypoint matching benchmark for dense descriptors on held-out simulated image pairs.

Data: TabletopSim scenes (train split objects; training and test scenes use disjoint seeds), each rendered from
random viewpoints around the workspace (``look_at``). Ground-truth correspondences of query pixels on objects
in view A come from depth + camera poses (backproject, transform, project) with a Dense-Object-Nets occlusion
check (observed depth in B >= projected depth - tol). Metrics: PCK@3/5/10/25/50 px, AUC of PCK over 1..50 px,
mean pixel error normalised by the image diagonal.

Methods: descriptor networks trained for the same number of steps from random init with identical-view,
cycle, cycle + 0.1 identical, and geometric (depth + pose correspondences, distributional loss) supervision;
SIFT and ORB matching of the query pixels. Then the same pairs with B rendered under a random appearance
(lighting/colours), for the networks and for cycle + identical trained with cross-appearance feature alignment.

    PYTHONPATH=. python bench/descriptor_matching.py            # full (~10-12 min on 2 CPU cores)
    PYTHONPATH=. python bench/descriptor_matching.py --quick    # smoke run (< 2 min), numbers meaningless
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import numpy as np
import torch

from selfsup_perception.core.descriptors.classical_baseline import match_classical
from selfsup_perception.core.descriptors.matching import compute_descriptor_image, find_correspondences
from selfsup_perception.core.descriptors.metrics import matching_metrics, pixel_errors
from selfsup_perception.core.geometry import backproject_pixels, project, transform_points
from selfsup_perception.core.learning.descriptor_task import DescriptorTask, DescriptorTaskConfig
from selfsup_perception.core.learning.models.backbone import BackboneConfig
from selfsup_perception.core.learning.models.descriptor_net import DescriptorNetConfig
from selfsup_perception.core.types import RgbdFrame
from selfsup_perception.sim.tabletop import CameraConfig, SimConfig, TabletopSim, look_at


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


def render_pair_set(sim: TabletopSim, seeds: list[int], rng: np.random.Generator, with_alt: bool, n_corr: int):
    """Per scene: view A, view B, (A under a random appearance), GT correspondences for geometric training."""
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
        uv_b, ok = gt_correspondences(fa, fb, px)
        item["corr_a"], item["corr_b"], item["corr_valid"] = px, np.nan_to_num(uv_b), ok
        out.append(item)
    return out


def to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W) uint8


def train(task_cfg: DescriptorTaskConfig, data: list[dict], steps: int, batch_size: int, lr: float, seed: int,
          use_alt: bool) -> tuple[torch.nn.Module, float, dict]:
    torch.manual_seed(seed)
    task = DescriptorTask(task_cfg)
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    stats: dict = {}
    model.train()
    for step in range(steps):
        idx = rng.choice(len(data), size=batch_size, replace=False)
        items = [data[i] for i in idx]
        batch = {"rgb_a": to_tensor([it["a"].rgb for it in items]), "rgb_b": to_tensor([it["b"].rgb for it in items]),
                 "corr_a": torch.from_numpy(np.stack([it["corr_a"] for it in items])),
                 "corr_b": torch.from_numpy(np.stack([it["corr_b"] for it in items])),
                 "corr_valid": torch.from_numpy(np.stack([it["corr_valid"] for it in items]))}
        if use_alt:
            batch["rgb_a_alt"] = to_tensor([it["a_alt"].rgb for it in items])
            batch["semantic_a"] = torch.from_numpy(np.stack([it["sem_a"] for it in items]))
        loss, stats = task.compute_loss(model, batch)
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss at step {step}: {stats}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    model.eval()
    return model, time.time() - t0, stats


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


def net_matcher(model):
    def fn(rgb_a, rgb_b, px):
        return find_correspondences(compute_descriptor_image(model, rgb_a), compute_descriptor_image(model, rgb_b), px)
    return fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (< 2 min)")
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--train-scenes", type=int, default=48)
    ap.add_argument("--test-scenes", type=int, default=24)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--queries-per-pair", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=str, default="", help="write the results here as JSON")
    args = ap.parse_args()
    if args.quick:
        args.train_scenes, args.test_scenes, args.steps = 8, 4, 6
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    sim = TabletopSim(SimConfig(seed=args.seed, camera=CameraConfig(width=args.width, height=args.height)))
    try:
        train_data = render_pair_set(sim, list(range(args.train_scenes)), rng, with_alt=True, n_corr=400)
        test_data = render_pair_set(sim, list(range(10_000, 10_000 + args.test_scenes)), rng, with_alt=True, n_corr=1)
    finally:
        sim.close()
    n_gt = np.mean([it["corr_valid"].mean() for it in train_data])
    print(f"data: {len(train_data)} train / {len(test_data)} test scene pairs at {args.width}x{args.height}, "
          f"{time.time() - t0:.0f} s; geometric GT valid fraction {n_gt:.2f}")
    qrng = np.random.default_rng(args.seed + 1)
    queries = make_queries(test_data, qrng, args.queries_per_pair, appearance=False)
    queries_app = [(it, px, gt, it["b_alt"].rgb) for it, px, gt, _ in queries]
    print(f"queries: {sum(len(q[1]) for q in queries)} object pixels over {len(queries)} test pairs")

    model_cfg = DescriptorNetConfig(descriptor_dim=64, head_channels=64,
                                    backbone=BackboneConfig(widths=(16, 32, 48, 64), output_stride=8))
    base = DescriptorTaskConfig(model=model_cfg, num_keypoints=128, seed=args.seed)
    runs = {
        "identical-view": (dataclasses.replace(base, mode="identical"), False),
        "cycle": (dataclasses.replace(base, mode="cycle"), False),
        "cycle+identical": (dataclasses.replace(base, mode="cycle_identical"), False),
        "geometric (depth+pose)": (dataclasses.replace(base, mode="geometric"), False),
        "cycle+identical +align": (dataclasses.replace(base, mode="cycle_identical", alignment_weight=1.0,
                                                        mix_probability=0.5), True),
    }
    results: dict[str, dict] = {}
    torch.manual_seed(args.seed)
    untrained = DescriptorTask(base).build_model().eval()  # sanity floor: random-init network, BN in eval mode
    fn = net_matcher(untrained)
    results["untrained network"] = {"same": evaluate(fn, queries, args.width, args.height),
                                    "appearance": evaluate(fn, queries_app, args.width, args.height)}
    for name, (cfg, use_alt) in runs.items():
        model, secs, stats = train(cfg, train_data, args.steps, args.batch_size, args.lr, args.seed, use_alt)
        fn = net_matcher(model)
        results[name] = {"same": evaluate(fn, queries, args.width, args.height),
                         "appearance": evaluate(fn, queries_app, args.width, args.height),
                         "train_s": secs, "final": stats}
        print(f"trained {name}: {args.steps} steps in {secs:.0f} s, last stats {json.dumps({k: round(v, 3) for k, v in stats.items()})}")
    for method in ("sift", "orb"):
        fn = lambda a, b, p, m=method: match_classical(a, b, p, method=m)  # noqa: E731
        results[method.upper()] = {"same": evaluate(fn, queries, args.width, args.height),
                                   "appearance": evaluate(fn, queries_app, args.width, args.height)}

    keys = ["pck@3", "pck@5", "pck@10", "pck@25", "pck@50", "auc", "nme"]
    for cond, title in (("same", "same appearance (viewpoint change)"), ("appearance", "viewpoint + appearance change")):
        print(f"\n### {title}")
        print("| method | " + " | ".join(k.upper() if k != "nme" else "norm. mean err" for k in keys) + " |")
        print("|---" * (len(keys) + 1) + "|")
        for name, r in results.items():
            print(f"| {name} | " + " | ".join(f"{r[cond][k]:.3f}" for k in keys) + " |")
    print(f"\ntotal {time.time() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    main()
