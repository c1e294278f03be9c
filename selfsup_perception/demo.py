"""`make demo`: the self-supervised loop on the simulated tabletop, end to end.

Stage 1 (interaction): starts the simulated world, camera capture and interaction nodes as
separate processes (real DDS), performs N pushes through the ExecuteInteraction action on
fresh random scenes, records every sample to disk and to a rosbag2 MCAP bag, and reads
both back. Later stages label, train and evaluate on what was recorded.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import rclpy
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor

from selfsup_perception.action import ExecuteInteraction
from selfsup_perception.core.dataset.sample_store import SampleStore
from selfsup_perception.graph import interaction_graph
from selfsup_perception.launcher import GraphProcess
from selfsup_perception.ros.service_calls import call_service
from selfsup_perception.srv import SimResetScene


def _wait(future, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while not future.done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer within {timeout_s:.0f} s")
        time.sleep(0.02)
    return future.result()


def run_interactions(num_pushes: int, scene_every: int, clutter: str, seed: int, log=print) -> list[dict]:
    """Drive the running graph: reset scenes and push; returns one record per attempt."""
    records = []
    node = rclpy.create_node("demo_client")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        action = ActionClient(node, ExecuteInteraction, "execute_interaction")
        reset = node.create_client(SimResetScene, "/sim/reset_scene")
        if not action.wait_for_server(timeout_sec=60.0):
            raise TimeoutError("the interaction node did not come up within 60 s")
        for i in range(num_pushes):
            if i % scene_every == 0:
                res = call_service(reset, SimResetScene.Request(seed=seed + i, split="train", clutter=clutter), 30.0)
                log(f"  scene {seed + i}: {res.message}")
            t0 = time.monotonic()
            goal = ExecuteInteraction.Goal(kind=ExecuteInteraction.Goal.KIND_PUSH, auto_select=True, record=True)
            handle = _wait(action.send_goal_async(goal), 30.0)
            if not handle.accepted:
                log(f"  push {i + 1:2d}/{num_pushes}: goal rejected")
                continue
            result = _wait(handle.get_result_async(), 120.0).result
            dt = time.monotonic() - t0
            records.append({"ok": result.success, "code": result.error_code, "path": result.stored_path, "s": dt})
            status = "ok " if result.success else f"failed [{result.error_code}]"
            log(f"  push {i + 1:2d}/{num_pushes}: {status} {result.message} ({dt:.1f} s)")
    finally:
        executor.shutdown()
        node.destroy_node()
    return records


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=24, help="number of push interactions")
    parser.add_argument("--scene-every", type=int, default=3, help="new random scene every K pushes")
    parser.add_argument("--clutter", default="low", choices=["low", "medium", "high"])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="data/demo", help="runs are stored under OUT/run_<time>/")
    args = parser.parse_args(argv)

    run_dir = Path(args.out) / time.strftime("run_%Y%m%d_%H%M%S")
    dataset_dir, bag_dir = run_dir / "interactions", run_dir / "bags"
    print(f"selfsup_perception demo -> {run_dir}")
    print(f"[1/1] interaction: {args.pushes} pushes on the simulated tabletop ({args.width}x{args.height})")
    overrides = {
        "sim_world": {"width": args.width, "height": args.height, "seed": args.seed, "clutter": args.clutter},
        "interaction": {"dataset_dir": str(dataset_dir), "bag_dir": str(bag_dir), "record_bag": True,
                        "sim_ground_truth": True, "seed": args.seed},
        "labeler": {"dataset_dir": str(dataset_dir)},
    }
    t0 = time.monotonic()
    with rclpy.init():
        graph = GraphProcess(interaction_graph(with_simulator=True), overrides, log_dir=run_dir / "logs", echo=False)
        with graph:
            try:
                records = run_interactions(args.pushes, args.scene_every, args.clutter, args.seed)
            except TimeoutError as exc:
                print(f"demo failed: {exc}; node logs in {run_dir / 'logs'}", file=sys.stderr)
                return 1
            wait_for_labels(SampleStore(dataset_dir), "flow", timeout_s=120.0)
            dead = graph.dead()
        if dead:
            print(f"warning: nodes exited during the demo: {dead}", file=sys.stderr)

    store = SampleStore(dataset_dir)
    samples = list(store.iter_samples())
    bags = sorted(bag_dir.glob("*"))
    from selfsup_perception.msg import InteractionSample
    from selfsup_perception.ros.bag_io import read_bag

    bag_count = sum(1 for b in bags for _ in read_bag(b, InteractionSample))
    ok = sum(r["ok"] for r in records)
    moved = sum(1 for s in store.iter_samples(with_ground_truth=True) if s.ground_truth.get("moved_instance", 0))
    print("\nsummary")
    print(f"  pushes attempted / executed      {len(records)} / {ok}")
    print(f"  samples on disk (read back)      {len(samples)}  ({dataset_dir})")
    print(f"  samples in rosbag2 MCAP          {bag_count}  ({', '.join(str(b) for b in bags)})")
    print(f"  pushes that moved an object (GT) {moved}")
    print(f"  median time per push             {sorted(r['s'] for r in records)[len(records) // 2]:.1f} s"
          if records else "")
    print(f"  wall time                        {time.monotonic() - t0:.0f} s")

    print("\n[2/2] labels: flow labels made online by the labeler node, frame differencing as the baseline")
    report = label_report(store, run_dir)
    print(report)
    return 0 if len(samples) >= min(20, args.pushes) else 1


def wait_for_labels(store: SampleStore, labeler: str, timeout_s: float) -> None:
    """Wait until every stored sample has a label from ``labeler`` (the node works asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while store.unlabeled_ids(labeler) and time.monotonic() < deadline:
        time.sleep(0.5)


def label_report(store: SampleStore, run_dir: Path) -> str:
    """Label quality against simulator ground truth, and a contact sheet for people."""
    from selfsup_perception.core.dataset.visualization import contact_sheet, overlay_mask
    from selfsup_perception.core.labeling import FrameDifferenceLabeler
    from selfsup_perception.core.labeling.quality import label_quality_table, mask_iou

    baseline = FrameDifferenceLabeler()
    rows, tiles, captions = [], [], []
    for sample in store.iter_samples(with_ground_truth=True):
        gt = sample.ground_truth or {}
        moved = int(gt.get("moved_instance", 0))
        gt_mask = (gt["instance_mask_before"] == moved) if moved and "instance_mask_before" in gt else None
        try:
            flow = store.read_label(sample.sample_id, "flow")
        except FileNotFoundError:
            continue
        rows.append(("flow", flow, gt_mask))
        rows.append(("frame_difference", baseline.label(sample), gt_mask))
        if len(tiles) < 24:
            color = (40, 220, 40) if flow.kept else (220, 40, 40)
            tiles.append(overlay_mask(sample.before.rgb, flow.mask, sample.action_pixel, color=color))
            iou = ""
            if gt_mask is not None and flow.kept and not flow.is_negative:
                iou = f" IoU {mask_iou(flow.mask, gt_mask):.2f}"
            captions.append(f"{sample.sample_id[-8:]} {'kept' if flow.kept else 'discarded'}{iou}")
    if not rows:
        return "  no labels yet"
    sheet = contact_sheet(tiles, captions, run_dir / "labels_contact_sheet.png") if tiles else None
    table = label_quality_table(rows)
    return table + (f"\n  contact sheet: {sheet}" if sheet else "")


if __name__ == "__main__":
    sys.exit(main())
