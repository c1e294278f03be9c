"""Full-resolution mask refinement: AP of one trained model with nearest-neighbour vs edge-aware masks.

Trains the instance model once on the flow labels of ``bench/ap_table.py``'s simulated pushes (same
cache, same settings), then evaluates it on held-out scenes of novel objects at 640x480 twice: masks
mapped back to full size by nearest neighbour (today's serving default), and refined at full
resolution by the guided filter of ``core/learning/serving/mask_refinement.py``. Same model, same
scenes: the difference is the refinement alone. Prints a table; ``--json PATH`` writes the figures.

Usage: PYTHONPATH=. python bench/mask_refinement.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import torch

from ap_table import label_set, load_or_collect, train_model  # bench/ is on sys.path when run as a script
from selfsup_perception.core.learning.models.instance_segmentation import InferenceConfig
from selfsup_perception.core.learning.serving.inference import segment_instances
from selfsup_perception.core.learning.serving.mask_refinement import MaskRefinementConfig
from selfsup_perception.core.learning.tasks.instance import InstanceTaskConfig
from selfsup_perception.core.learning.training.trainer import TrainerConfig
from selfsup_perception.sim.evaluation_scenes import evaluate_segmenter, render_test_scenes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="40 pushes, 150 steps, 9 test scenes")
    ap.add_argument("--pushes", type=int, default=120)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--test-scenes", type=int, default=30)
    ap.add_argument("--labels", default="flow", choices=["flow", "frame_difference", "ground_truth"])
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--cache-dir", default="bench/results/ap_table_cache")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = ap.parse_args()
    if args.quick:
        args.pushes, args.steps, args.test_scenes = min(args.pushes, 40), 150, 9
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    size = (160, 120)
    pushes, _ = load_or_collect(Path(args.cache_dir), args.pushes, args.seed, 3, ("low", "medium"))
    scenes = render_test_scenes(args.test_scenes, split="test")
    items = label_set(pushes, args.labels, size)
    trainer_config = TrainerConfig(lr=3e-3, warmup_steps=20, schedule="cosine", total_steps=args.steps, log_every=0,
                                   seed=0)
    model, _ = train_model(items, InstanceTaskConfig(), trainer_config, args.steps, 8, seed=0)
    model.eval()
    results = {}
    for name, refinement in (("nearest", None), ("guided", MaskRefinementConfig())):
        t = time.perf_counter()
        r = evaluate_segmenter(lambda s, ref=refinement: segment_instances(model, s.rgb, size, config=InferenceConfig(),
                                                                           refinement=ref), scenes)
        results[name] = {**{k: round(float(v), 4) for k, v in r.items()},
                         "ms_per_image": round(1000 * (time.perf_counter() - t) / len(scenes), 1)}
    print(f"# {args.labels} labels from {len(pushes)} simulated pushes (simple world), {args.steps} steps at "
          f"{size[0]}x{size[1]}, {len(scenes)} held-out scenes of novel objects at 640x480; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| masks at full size | AP@0.3 | AP@0.5 | AP@0.75 | AP@[.5:.95] | ms/image |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['AP30']:.3f} | {r['AP50']:.3f} | {r['AP75']:.3f} | {r['AP']:.3f} | {r['ms_per_image']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"world": "simple", "labels": args.labels, "pushes": len(pushes),
                                               "steps": args.steps, "test_scenes": len(scenes), **results}, indent=2))


if __name__ == "__main__":
    main()
