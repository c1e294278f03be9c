"""Label efficiency: AP on novel objects after 10/30/60/120 labels, from random weights or a pre-trained backbone.

Does multi-view self-supervised pre-training (the robot moving its camera around its own table)
make the interaction labels go further? Steps:

1. Pushes and their labels: ``bench/ap_table.py``'s collection (train objects, low + medium
   clutter, 3 pushes per scene, cached under ``bench/results/ap_table_cache_<world>/``, shared
   with that bench). The label pool is ``--labels``: ``flow`` (the robot's own labels: the flow
   labeler's kept positives and negatives, as the online trainer uses them) or ``ground_truth``
   (the moved object's true mask of every push: an upper bound, named as such).
2. Pre-training, once per seed, without labels: ``--views`` views of each of ``--pretrain-scenes``
   train-object scenes (the robot's own tables; ``sim/multiview.py``, camera on an arc) at the
   training input size, view pairs with overlap IoU in [0.3, 0.9], registered by depth and pose.
   ``--pretrain descriptors`` (default): the cycle-correspondence + identical-view descriptor loss
   on the view pairs, training a descriptor network whose backbone has the instance network's
   config; ``--pretrain region_consistency``: Barlow Twins on pixel pairs of matched Felzenszwalb
   regions (balanced sampling, region matching: the best row of ``bench/region_consistency.py``)
   training a semantic network with that backbone. Pre-trained checkpoints are cached under
   ``bench/results/label_efficiency_pretrain/`` by their settings. The checkpoint is written with the shared ``Trainer``
   and read back through ``InstanceTaskConfig.pretrained_backbone``, the path the trainer node and
   ``train_offline --pretrained-backbone`` take.
3. For each seed and label count N: N labels drawn from the pool (nested: the first N of a
   per-seed permutation), one instance model per *variant* with the same heads' initialisation,
   steps, batch, input size (160x120) and learning rate (``ap_table.py``'s). The default variants
   are ``random`` (random backbone) and ``pretrained`` (the pre-trained backbone, fine-tuned with
   ``FineTuneConfig()``'s defaults, what the trainer node gets). ``--variants`` compares fine-tuning
   choices side by side: ``NAME[:key=value,...]`` with keys ``init`` (random | pretrained; default
   pretrained unless NAME is ``random``), ``objective`` (region_consistency | descriptors),
   ``psteps`` (pre-training steps), ``pscenes`` (pre-training scenes), ``blr`` (backbone learning-rate
   scale), ``freeze`` (steps the backbone is held still), ``stages`` (backbone stages transferred,
   -1 all); unset keys take the command line's values.
4. AP@0.5 (and AP@0.3, AP@0.75) on held-out scenes at 640x480, mean +- std over the seeds:
   ``--eval-split test`` (default) scenes of *novel* objects (``render_test_scenes(split='test')``,
   seeds 10000+); ``--eval-split validation`` scenes of the *train* objects at seeds 20000+ (no
   push or pre-training scene), for choosing settings without looking at the test scenes. Target
   (issue 14): with pre-training, 30 labels reach the AP@0.5 that random initialisation reaches with 120.

Usage::

    PYTHONPATH=. python bench/label_efficiency.py --quick             # ~6 min CPU with a warm push cache
    PYTHONPATH=. python bench/label_efficiency.py --json out.json     # 3 seeds x 4 counts x 2 inits
    PYTHONPATH=. python bench/label_efficiency.py --labels ground_truth --world simple
    PYTHONPATH=. python bench/label_efficiency.py --eval-split validation --counts 30 \
        --variants random pre pre_blr:blr=0.1 pre_freeze:freeze=100      # choosing fine-tuning settings
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ap_table import batches, cpu_s, label_set, load_or_collect  # bench/ is on sys.path when run as a script
from selfsup_perception.core.dataset.atomic_io import atomic_write_json
from selfsup_perception.core.learning.models.descriptor_net import DescriptorNetConfig
from selfsup_perception.core.learning.models.instance_segmentation import InferenceConfig, InstanceSegConfig
from selfsup_perception.core.learning.models.semantic_segmentation import SemanticSegConfig
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.serving.inference import segment_instances
from selfsup_perception.core.learning.tasks.backbone_transfer import FineTuneConfig
from selfsup_perception.core.learning.tasks.descriptors import DescriptorTask, DescriptorTaskConfig
from selfsup_perception.core.learning.tasks.instance import InstanceSegmentationTask, InstanceTaskConfig
from selfsup_perception.core.learning.tasks.region_consistency import (
    RegionConsistencyConfig,
    RegionConsistencyData,
    RegionConsistencyDataConfig,
    RegionConsistencyTask,
)
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig
from selfsup_perception.core.registration import FelzenszwalbConfig, PixelPairSamplerConfig, RegionMatchConfig
from selfsup_perception.core.registration.view_pairs import ViewPair, select_view_pairs
from selfsup_perception.sim.evaluation_scenes import evaluate_segmenter, render_test_scenes
from selfsup_perception.sim.multiview import MultiViewConfig, capture_scene
from selfsup_perception.sim.tabletop import WORLDS, SimConfig, TabletopSim, replace_camera

COUNTS = (10, 30, 60, 120)
VARIANT_KEYS = {"init": str, "objective": str, "psteps": int, "pscenes": int, "blr": float, "freeze": int,
                "stages": int}
VALIDATION_SEED = 20_000  # validation scenes: train objects, seeds far from the pushes' (1000+) and the test's


# --------------------------------------------------------------------------- 2. pre-training


def capture_pretraining_views(world: str, scenes: int, views: int, size: tuple[int, int], seed0: int):
    """Views of ``scenes`` train-object scenes (clutter low/medium alternating, as the pushes) and their
    registered pairs (overlap IoU in [0.3, 0.9]); no labels are used."""
    all_views, pairs = [], []
    with TabletopSim(replace_camera(SimConfig(seed=0, world=world), width=size[0], height=size[1])) as sim:
        for s in range(scenes):
            scene = capture_scene(seed0 + s, split="train", clutter=("low", "medium")[s % 2], width=size[0],
                                  height=size[1], config=MultiViewConfig(num_views=views), sim=sim)
            offset = len(all_views)
            pairs += [ViewPair(p.index_a + offset, p.index_b + offset, p.iou)
                      for p in select_view_pairs(scene, iou_low=0.3, iou_high=0.9)]
            all_views += scene
    return all_views, pairs


def pretrain(objective: str, views, pairs, *, steps: int, lr: float, batch_size: int, pixel_pairs: int,
             seed: int, out_dir: Path) -> Path:
    """Pre-train a network whose backbone is the instance network's; returns its checkpoint version directory."""
    backbone = InstanceSegConfig().backbone_config()
    rng = np.random.default_rng([seed, 5])
    if objective == "region_consistency":
        size = views[0].rgb.shape[1::-1]
        felz = FelzenszwalbConfig(scale=100.0, sigma=0.8, min_size=max(10, int(30 * size[0] * size[1] / 19200)))
        data = RegionConsistencyData(views, pairs, RegionConsistencyDataConfig(
            sampler=PixelPairSamplerConfig(sampling="balanced", matching="region", num_pairs=pixel_pairs),
            felzenszwalb=felz, region_match=RegionMatchConfig(criterion="iou", min_overlap=0.3)))
        task = RegionConsistencyTask(RegionConsistencyConfig(model=SemanticSegConfig(widths=backbone.widths), seed=seed))

        def next_batches():
            while True:
                yield data.sample_batch(batch_size, rng)
    else:
        task = DescriptorTask(DescriptorTaskConfig(mode="cycle_identical", seed=seed,
                                                   model=DescriptorNetConfig(backbone=backbone)))
        rgb = [v.rgb for v in views]

        def next_batches():
            to_tensor = lambda imgs: torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
            while True:
                idx = rng.choice(len(pairs), size=batch_size, replace=len(pairs) < batch_size)
                ab = [(pairs[i].index_a, pairs[i].index_b)[:: 1 if rng.random() < 0.5 else -1] for i in idx]
                yield {"rgb_a": to_tensor([rgb[a] for a, _ in ab]), "rgb_b": to_tensor([rgb[b] for _, b in ab])}
    trainer = Trainer(task, TrainerConfig(lr=lr, warmup_steps=max(1, steps // 20), schedule="cosine",
                                          total_steps=max(1, steps), seed=seed, log_every=0))
    records = trainer.train_steps(next_batches(), steps)
    k = max(1, len(records) // 10)
    losses = (float(np.mean([r["loss"] for r in records[:k]])), float(np.mean([r["loss"] for r in records[-k:]])))
    return trainer.save_checkpoint(out_dir, extra_meta={"pretraining": {
        "objective": objective, "views": len(views), "view_pairs": len(pairs), "steps": steps,
        "loss_first_last": list(losses)}})


def cached_pretraining(cache: Path, settings: dict, make) -> Path:
    """The checkpoint of ``make(out_dir)`` for ``settings``, reused when a run with the same settings wrote one."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    out_dir = cache / key
    info = ckpt.latest_version(out_dir, "semantic_segmentation" if settings["objective"] == "region_consistency"
                               else "descriptors")
    if info is not None:
        return info.path
    path = make(out_dir)
    atomic_write_json(out_dir / "settings.json", settings)
    return path


# --------------------------------------------------------------------------- variants


def parse_variant(spec: str, args) -> dict:
    """``NAME[:key=value,...]`` -> {name, init, objective, psteps, pscenes, blr, freeze, stages} (module doc)."""
    name, _, rest = spec.partition(":")
    ft = FineTuneConfig()
    v = {"name": name, "init": "random" if name == "random" else "pretrained", "objective": args.pretrain,
         "psteps": args.pretrain_steps, "pscenes": args.pretrain_scenes, "blr": ft.backbone_lr_scale,
         "freeze": ft.freeze_backbone_steps, "stages": ft.transfer_stages}
    for kv in filter(None, rest.split(",")):
        key, sep, value = kv.partition("=")
        if not sep or key not in VARIANT_KEYS:
            raise SystemExit(f"variant {spec!r}: {kv!r} is not key=value with a key in {sorted(VARIANT_KEYS)}")
        v[key] = VARIANT_KEYS[key](value)
    if not name or v["init"] not in ("random", "pretrained") or \
            v["objective"] not in ("region_consistency", "descriptors"):
        raise SystemExit(f"variant {spec!r}: needs a name, init random|pretrained, "
                         f"objective region_consistency|descriptors")
    if v["init"] == "random":  # pre-training and fine-tuning settings do not apply to random weights
        return {"name": name, "init": "random"}
    FineTuneConfig(backbone_lr_scale=v["blr"], freeze_backbone_steps=v["freeze"], transfer_stages=v["stages"])
    return v


# --------------------------------------------------------------------------- main


def mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", choices=WORLDS, default="realistic", help="simulated world")
    ap.add_argument("--quick", action="store_true",
                    help="2 seeds, 150 fine-tuning and 100 pre-training steps, 8 test scenes")
    ap.add_argument("--labels", choices=["flow", "ground_truth"], default="flow",
                    help="label pool: the flow labeler's kept labels, or the true masks (upper bound)")
    ap.add_argument("--counts", type=int, nargs="+", default=list(COUNTS), help="label counts")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pushes", type=int, default=0,
                    help="pushes collected (0: enough for the largest count: 130 with ground-truth labels, "
                         "150 with flow labels on realistic (the labeler keeps ~89 %% there), 170 on simple)")
    ap.add_argument("--push-seed", type=int, default=1000, help="first training-scene seed (ap_table.py's --seed)")
    ap.add_argument("--steps", type=int, default=400, help="fine-tuning steps per model (ap_table.py's)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3, help="fine-tuning learning rate (ap_table.py's)")
    ap.add_argument("--input", type=int, nargs=2, default=[160, 120], metavar=("W", "H"))
    ap.add_argument("--test-scenes", type=int, default=30, help="evaluation scenes")
    ap.add_argument("--eval-split", choices=["test", "validation"], default="test",
                    help="test: novel-object scenes (report); validation: train-object scenes at seeds 20000+ "
                         "(for choosing settings)")
    ap.add_argument("--variants", nargs="+", default=["random", "pretrained"],
                    help="NAME[:key=value,...] (module doc); default: random and pretrained")
    ap.add_argument("--pretrain", choices=["region_consistency", "descriptors"], default="descriptors")
    ap.add_argument("--pretrain-scenes", type=int, default=8)
    ap.add_argument("--views", type=int, default=12, help="camera views per pre-training scene")
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--pretrain-lr", type=float, default=1e-3)
    ap.add_argument("--pretrain-batch", type=int, default=4, help="view pairs per pre-training batch")
    ap.add_argument("--pixel-pairs", type=int, default=512, help="region consistency: pixel pairs per view pair")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--cache-dir", default="", help="push cache (default: bench/results/ap_table_cache_<world>)")
    ap.add_argument("--json", default="", help="write settings, every run and the summary here")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.steps, args.pretrain_steps, args.test_scenes = min(args.seeds, 2), 150, 100, 8
    variants = [parse_variant(v, args) for v in args.variants]
    if len({v["name"] for v in variants}) != len(variants):
        raise SystemExit("variant names must differ")
    if not args.pushes:
        args.pushes = 130 if args.labels == "ground_truth" else (150 if args.world == "realistic" else 170)
    args.cache_dir = args.cache_dir or f"bench/results/ap_table_cache_{args.world}"
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    size = (args.input[0], args.input[1])
    t_start, c_start = time.perf_counter(), cpu_s()
    print(f"# label efficiency, world {args.world}, {args.labels} labels, counts {args.counts}, {args.seeds} seeds; "
          f"fine-tuning {args.steps} steps, batch {args.batch_size}, lr {args.lr}, input {size[0]}x{size[1]}; "
          f"pre-training {args.pretrain} on {args.pretrain_scenes} scenes x {args.views} views, "
          f"{args.pretrain_steps} steps, lr {args.pretrain_lr}; {args.test_scenes} {args.eval_split} scenes "
          f"({'novel' if args.eval_split == 'test' else 'train'} objects, 640x480); variants "
          f"{[v['name'] for v in variants]}; torch threads {args.threads}; load average {os.getloadavg()[0]:.1f}",
          flush=True)
    for v in variants:
        print(f"  variant {v}", flush=True)

    # -- 1. pushes and the label pool
    pushes, collect_s = load_or_collect(Path(args.cache_dir), args.pushes, args.push_seed, 3, ("low", "medium"),
                                        args.world)
    pool = label_set(pushes, args.labels, size)
    n_pos = sum(not it["is_negative"] for it in pool)
    print(f"{len(pushes)} pushes ({collect_s:.0f} s collection/cache): {len(pool)} {args.labels} labels "
          f"({n_pos} positive, {len(pool) - n_pos} negative)", flush=True)
    counts = [n for n in sorted(set(args.counts)) if n <= len(pool)]
    if len(counts) < len(set(args.counts)):
        print(f"  skipping counts {sorted(set(args.counts) - set(counts))}: only {len(pool)} labels in the pool "
              f"(collect more with --pushes)", flush=True)
    if not counts:
        raise SystemExit("no label count fits the pool")

    # -- test scenes
    t = time.perf_counter()
    if args.eval_split == "test":
        scenes = render_test_scenes(args.test_scenes, split="test", world=args.world)
    else:
        scenes = render_test_scenes(args.test_scenes, seed=VALIDATION_SEED, split="train", world=args.world)
    print(f"{len(scenes)} {args.eval_split} scenes rendered in {time.perf_counter() - t:.0f} s", flush=True)
    infer = InferenceConfig()

    def evaluate(model) -> dict:
        return evaluate_segmenter(lambda s: segment_instances(model, s.rgb, size, config=infer), scenes)

    # -- 2. pre-training views (label-free), shared by the seeds and variants
    view_sets: dict[int, tuple] = {}

    def pretraining_views(n_scenes: int):
        if n_scenes not in view_sets:
            t = time.perf_counter()
            view_sets[n_scenes] = capture_pretraining_views(args.world, n_scenes, args.views, size, args.push_seed)
            views, pairs = view_sets[n_scenes]
            print(f"pre-training data: {len(views)} views of {n_scenes} scenes, {len(pairs)} view pairs "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)
        return view_sets[n_scenes]

    runs: list[dict] = []
    pretrain_info: list[dict] = []
    for seed in range(args.seeds):
        order = np.random.default_rng([seed, 99]).permutation(len(pool))
        backbone_of: dict[str, str] = {}
        for v in variants:
            if v["init"] != "pretrained":
                continue
            t, c = time.perf_counter(), cpu_s()
            settings = {"objective": v["objective"], "world": args.world, "scenes": v["pscenes"],
                        "views": args.views, "size": list(size), "steps": v["psteps"], "lr": args.pretrain_lr,
                        "batch": args.pretrain_batch, "pixel_pairs": args.pixel_pairs, "seed": seed,
                        "scene_seed": args.push_seed, "backbone": InstanceSegConfig().backbone_config().to_dict()}
            path = cached_pretraining(
                Path("bench/results/label_efficiency_pretrain"), settings,
                lambda out: pretrain(v["objective"], *pretraining_views(v["pscenes"]), steps=v["psteps"],
                                     lr=args.pretrain_lr, batch_size=args.pretrain_batch,
                                     pixel_pairs=args.pixel_pairs, seed=seed, out_dir=out))
            backbone_of[v["name"]] = str(path)
            meta = ckpt.read_meta(path)
            pretrain_info.append({"seed": seed, "variant": v["name"], "checkpoint": str(path),
                                  **meta.get("pretraining", {}), "wall_s": time.perf_counter() - t,
                                  "cpu_s": cpu_s() - c})
            print(f"seed {seed} {v['name']}: pre-trained backbone {path} (loss first->last "
                  f"{meta.get('pretraining', {}).get('loss_first_last')}; {time.perf_counter() - t:.0f} s)", flush=True)
        for n in counts:
            items = [pool[i] for i in order[:n]]
            for v in variants:
                t, c = time.perf_counter(), cpu_s()
                task = InstanceSegmentationTask(InstanceTaskConfig(
                    pretrained_backbone=backbone_of.get(v["name"], ""),
                    fine_tune=FineTuneConfig() if v["init"] == "random" else FineTuneConfig(
                        backbone_lr_scale=v["blr"], freeze_backbone_steps=v["freeze"], transfer_stages=v["stages"])))
                trainer = Trainer(task, TrainerConfig(lr=args.lr, warmup_steps=20, schedule="cosine",
                                                      total_steps=args.steps, log_every=0, seed=seed))
                records = trainer.train_steps(batches(items, args.batch_size, np.random.default_rng([seed, n])),
                                              args.steps)
                train_s, train_cpu = time.perf_counter() - t, cpu_s() - c
                r = evaluate(trainer.model.eval())
                runs.append({"seed": seed, "labels": n, "variant": v["name"], "init": v["init"],
                             "positives": sum(not i["is_negative"] for i in items),
                             "ap": r, "train_wall_s": train_s, "train_cpu_s": train_cpu,
                             "final_loss": float(np.mean([x["loss"] for x in records[-20:]])),
                             "load_average": os.getloadavg()[0]})
                print(f"  seed {seed} {n:4d} labels {v['name']:14s} AP@0.5 {r['AP50']:.3f} AP@0.3 {r['AP30']:.3f} "
                      f"AP@0.75 {r['AP75']:.3f} (train {train_s:.0f} s wall / {train_cpu:.0f} s CPU; "
                      f"load {os.getloadavg()[0]:.1f})", flush=True)
                if args.json:  # after every run: an interrupted bench keeps what it measured
                    atomic_write_json(Path(args.json), {"settings": vars(args), "variants": variants, "runs": runs,
                                                        "complete": False, "pretraining": pretrain_info})

    # -- 4. tables: one per AP threshold, a column per variant
    names = [v["name"] for v in variants]
    summary: dict = {}
    for n in counts:
        summary[n] = {name: {k: mean_std([r["ap"][k] for r in runs if r["labels"] == n and r["variant"] == name])
                             for k in ("AP30", "AP50", "AP75", "AP")} for name in names}
    for k, title in (("AP50", "AP@0.5"), ("AP30", "AP@0.3"), ("AP75", "AP@0.75")):
        print(f"\n{title} ({args.eval_split} scenes, {args.seeds} seeds, mean ± std)\n"
              f"| labels ({args.labels}) | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for n in counts:
            print(f"| {n} | " + " | ".join(f"{summary[n][name][k][0]:.3f} ± {summary[n][name][k][1]:.3f}"
                                          for name in names) + " |")
    verdict: dict[str, bool] = {}
    random_names = [v["name"] for v in variants if v["init"] == "random"]
    if 30 in summary and 120 in summary and random_names:
        rnd120 = summary[120][random_names[0]]["AP50"][0]
        print()
        for v in variants:
            if v["init"] == "pretrained":
                pre30 = summary[30][v["name"]]["AP50"][0]
                verdict[v["name"]] = pre30 >= rnd120
                print(f"target: {v['name']} with 30 labels AP@0.5 {pre30:.3f} vs {random_names[0]} with 120 labels "
                      f"{rnd120:.3f}: {'met' if verdict[v['name']] else 'not met'} (means over {args.seeds} seeds)")
    wall, cpu = time.perf_counter() - t_start, cpu_s() - c_start
    print(f"# total {wall:.0f} s wall, {cpu:.0f} s CPU, load average {os.getloadavg()[0]:.1f}")
    if args.json:
        atomic_write_json(Path(args.json), {
            "settings": vars(args), "variants": variants, "label_pool": {"labels": len(pool), "positives": n_pos},
            "pretraining": pretrain_info, "runs": runs,
            "summary": {str(n): {name: {k: {"mean": m, "std": s} for k, (m, s) in row[name].items()}
                                 for name in names} for n, row in summary.items()},
            "target_30_pretrained_reaches_120_random": verdict, "wall_s": wall, "cpu_s": cpu, "complete": True,
            "load_average_end": os.getloadavg()[0]})


if __name__ == "__main__":
    main()
