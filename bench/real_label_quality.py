"""Label quality on real RGB-D frames: synthetic pushes and shake-only pairs (used by ``label_quality.py --real``).

Data: a folder of real frames (``NNNNNN-color.png`` / ``-depth.png`` + ``camera_params.json``, e.g.
``../shared/realdata/ucn_tabletop``), no camera pose, no ground truth. Pairs made from each frame:

* **Synthetic pushes** (:mod:`selfsup_perception.core.evaluation.synthetic_push`): one object moved
  3-6 cm on the table, hole filled from the table; ``pushes`` per frame without camera shake and as
  many with a shake of up to ``SHAKE_PX`` px and ``SHAKE_DEG`` deg. Known mask: the object in the
  before image.
* **Shake-only pairs**: the frame against itself warped by a shift of 1, 2, 3 or 5 px, a rotation of
  0.3 or 0.8 deg about the image centre, or a small homography; the action pixel on each of the
  ``actions`` largest objects. Nothing moved: any kept positive label is a wrong positive.

Figures per labeler: mIoU of the kept positive labels of the pushes against the known mask (kept /
pushes), wrong positives on the shake-only pairs, wall and CPU ms per ``label()`` call (p50, p95 over
all pairs; OpenCV on one thread). Bottom-up baselines: the best segment IoU of the depth-aware and
the colour baseline against each push's known mask (before image; the known masks were cut out with
depth, which favours the depth baseline).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from selfsup_perception.core.dataset.rgbd_folder import load_folder
from selfsup_perception.core.evaluation.bottom_up import bottom_up_instances, depth_bottom_up
from selfsup_perception.core.evaluation.synthetic_push import (
    SyntheticPushConfig,
    shake_frame,
    shake_homography,
    synthetic_push,
)
from selfsup_perception.core.labeling.quality import mask_iou
from selfsup_perception.core.types import InteractionKind, InteractionOutcome, InteractionSample

SHAKE_PX, SHAKE_DEG = 4.0, 0.5
SHAKES = {  # name -> (shift (du, dv) px, rotation deg, scale)
    "shift 1 px": ((1.0, 0.0), 0.0, 1.0),
    "shift 2 px": ((0.0, -2.0), 0.0, 1.0),
    "shift 3 px": ((-2.1, 2.1), 0.0, 1.0),
    "shift 5 px": ((4.0, 3.0), 0.0, 1.0),
    "rotate 0.3 deg": ((0.0, 0.0), 0.3, 1.0),
    "rotate 0.8 deg": ((0.0, 0.0), -0.8, 1.0),
    "homography": ((1.5, -1.0), 0.4, 1.004),
}


def push_pairs(frames, pushes: int, seed: int):
    """Synthetic pushes: (frame id, shaken, SyntheticPush)."""
    out = []
    for shaken in (False, True):
        cfg = SyntheticPushConfig(shake_px=SHAKE_PX if shaken else 0.0, shake_deg=SHAKE_DEG if shaken else 0.0)
        for f in frames:
            rng = np.random.default_rng([seed, int(f.frame_id) if f.frame_id.isdigit() else 0, int(shaken)])
            for j in range(pushes):
                push, _ = synthetic_push(f, rng, cfg, sample_id=f"{f.frame_id}-push{j}{'-shake' if shaken else ''}")
                if push is not None:
                    out.append((f.frame_id, shaken, push))
    return out


def shake_pairs(frames, actions: int):
    """Shake-only pairs: (frame id, shake name, InteractionSample) with the action on an object."""
    out = []
    for f in frames:
        seg = depth_bottom_up(f)
        targets = sorted((m for m, _ in seg.instances), key=lambda m: -int(m.sum()))[:actions]
        pixels = []
        for m in targets:
            ys, xs = np.nonzero(m)
            i = len(ys) // 2
            pixels.append((float(xs[i]), float(ys[i])))
        if not pixels:  # no object found: still test the image centre
            pixels = [((f.shape[1] - 1) / 2.0, (f.shape[0] - 1) / 2.0)]
        for name, (shift, deg, scale) in SHAKES.items():
            after = shake_frame(f, shake_homography(f.shape, shift, deg, scale))
            for k, px in enumerate(pixels):
                out.append((f.frame_id, name, InteractionSample(f"{f.frame_id}-{name}-{k}", InteractionKind.PUSH, f,
                                                                after, px, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0),
                                                                InteractionOutcome.EXECUTED, "shake only")))
    return out


def evaluate_real(folder, labelers, pushes: int = 3, actions: int = 3, seed: int = 0, log=print) -> dict:
    """Figures per labeler and per bottom-up baseline on the real frames of ``folder`` (see the module doc)."""
    frames = load_folder(folder)
    if not frames:
        raise FileNotFoundError(f"no frames (NNNNNN-color.png + -depth.png) in {folder}")
    pp = push_pairs(frames, pushes, seed)
    sp = shake_pairs(frames, actions)
    log(f"# real frames: {Path(folder)} ({len(frames)} frames): {len(pp)} synthetic pushes "
        f"({sum(s for _, s, _ in pp)} with camera shake), {len(sp)} shake-only pairs")
    result: dict = {"data": str(folder), "frames": len(frames), "pushes": len(pp), "shake_pairs": len(sp)}
    for lab in labelers:
        ious, kept, wrong, wall, cpu, skipped = [], 0, 0, [], [], 0
        wrong_cases = []
        for _, _, push in pp:
            t, c = time.perf_counter(), time.process_time()
            label = lab.label(push.sample)
            wall.append(1000 * (time.perf_counter() - t))
            cpu.append(1000 * (time.process_time() - c))
            skipped += int(label.reason.startswith("skipped"))
            if label.kept and not label.is_negative:
                kept += 1
                ious.append(mask_iou(label.mask, push.mask))
        for fid, name, sample in sp:
            t, c = time.perf_counter(), time.process_time()
            label = lab.label(sample)
            wall.append(1000 * (time.perf_counter() - t))
            cpu.append(1000 * (time.process_time() - c))
            skipped += int(label.reason.startswith("skipped"))
            if label.kept and not label.is_negative:
                wrong += 1
                wrong_cases.append(f"{fid} {name}")
        result[lab.name] = {
            "miou": float(np.mean(ious)) if ious else float("nan"),
            "median_iou": float(np.median(ious)) if ious else float("nan"),
            "kept": kept, "pushes": len(pp),
            "wrong_positives": wrong, "shake_pairs": len(sp), "skipped": skipped,
            "p50_ms": float(np.percentile(wall, 50)), "p95_ms": float(np.percentile(wall, 95)),
            "max_ms": float(np.max(wall)),
            "cpu_p50_ms": float(np.percentile(cpu, 50)), "cpu_p95_ms": float(np.percentile(cpu, 95)),
        }
        if wrong_cases:
            log(f"  {lab.name}: wrong positives on {', '.join(wrong_cases[:10])}")
    depth_best, colour_best = [], []
    for _, shaken, push in pp:
        if shaken:
            continue  # the before image is the same as the unshaken pushes'
        frame = push.sample.before
        depth_best.append(max((mask_iou(m, push.mask) for m, _ in depth_bottom_up(frame).instances), default=0.0))
        colour_best.append(max((mask_iou(m, push.mask) for m, _ in bottom_up_instances(frame)), default=0.0))
    result["bottom_up"] = {
        "depth": {"mean_best_iou": float(np.mean(depth_best)) if depth_best else float("nan"), "n": len(depth_best)},
        "colour": {"mean_best_iou": float(np.mean(colour_best)) if colour_best else float("nan"),
                   "n": len(colour_best)},
    }
    return result


def real_table(result: dict, labeler_names) -> str:
    """The printable table of :func:`evaluate_real`'s figures."""
    lines = [f"{'real':8s} {'labeler':17s} {'pushes':>6s} {'kept':>4s} {'mIoU kept':>9s} {'shake pairs':>11s} "
             f"{'wrong pos':>9s} {'p50 ms':>7s} {'p95 ms':>7s} {'cpu p50':>7s} {'cpu p95':>7s}"]
    for name in labeler_names:
        r = result[name]
        lines.append(f"{'real':8s} {name:17s} {r['pushes']:6d} {r['kept']:4d} {r['miou']:9.3f} {r['shake_pairs']:11d} "
                     f"{r['wrong_positives']:9d} {r['p50_ms']:7.1f} {r['p95_ms']:7.1f} {r['cpu_p50_ms']:7.1f} "
                     f"{r['cpu_p95_ms']:7.1f}")
    bu = result["bottom_up"]
    lines.append(f"bottom-up best segment IoU vs the synthetic-push masks ({bu['depth']['n']} pushes): "
                 f"depth-aware {bu['depth']['mean_best_iou']:.3f}, colour {bu['colour']['mean_best_iou']:.3f}")
    return "\n".join(lines)
