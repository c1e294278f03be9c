"""A contact sheet of simulated scenes: RGB, depth (missing depth in black) and ground-truth instances.

Usage: python -m selfsup_perception.cli.sim_contact_sheet --world realistic --out docs/realistic_world.png
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from selfsup_perception.sim.tabletop import WORLDS, SimConfig, TabletopSim, replace_camera


def depth_image(depth: np.ndarray, near: float = 0.5, far: float = 1.6) -> np.ndarray:
    """Depth as a grey RGB image (near = bright), missing depth black."""
    t = np.clip((far - np.nan_to_num(depth, nan=far)) / (far - near), 0, 1)
    g = (40 + 215 * t).astype(np.uint8)
    g[~np.isfinite(depth)] = 0
    return np.repeat(g[..., None], 3, axis=2)


def instance_image(instance: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(3)
    colours = rng.integers(60, 255, size=(int(instance.max()) + 1, 3)).astype(np.uint8)
    colours[0] = 30
    return colours[instance]


def contact_sheet(world: str, scenes: list[tuple[int, str, str]], width: int, height: int,
                  shake_pairs: bool = True) -> np.ndarray:
    """One row per ``(seed, split, clutter)`` scene: RGB | depth | instances | |after - before| of a
    free arm motion (camera shake only)."""
    rows = []
    with TabletopSim(replace_camera(SimConfig(seed=0, world=world), width=width, height=height)) as sim:
        for seed, split, clutter in scenes:
            sim.reset_scene(seed, split=split, clutter=clutter)
            frame, gt = sim.render_with_ground_truth()
            tiles = [frame.rgb, depth_image(frame.depth), instance_image(gt["instance_mask"])]
            if shake_pairs:
                ok, _ = sim.execute_free_motion((0.55, 0.0, 0.0))
                after = sim.render()
                diff = np.abs(after.rgb.astype(np.int16) - frame.rgb.astype(np.int16)).max(axis=2)
                tiles.append(np.repeat(np.clip(diff * 3, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
            rows.append(np.hstack(tiles))
    return np.vstack(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", choices=WORLDS, default="realistic")
    ap.add_argument("--out", default="docs/realistic_world.png")
    ap.add_argument("--width", type=int, default=200)
    ap.add_argument("--height", type=int, default=150)
    ap.add_argument("--seed", type=int, default=20)
    args = ap.parse_args()
    import cv2

    scenes = [(args.seed, "train", "low"), (args.seed + 1, "train", "medium"), (args.seed + 2, "train", "high"),
              (args.seed + 3, "test", "high")]
    t = time.time()
    sheet = contact_sheet(args.world, scenes, args.width, args.height)
    coarse = (sheet // 16) * 16 + 8  # 16 levels per channel keep the PNG small (noise compresses badly)
    cv2.imwrite(args.out, coarse[..., ::-1].astype(np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]}) in {time.time() - t:.1f} s")


if __name__ == "__main__":
    main()
