"""`make demo`: the self-supervised loop on the simulated tabletop, end to end.

0. camera moves (``--camera-move-scenes``, default the first 4 scenes): before the pushes of a
   scene the registration node moves the simulated camera on an arc over it
   (``registration/collect``, ``drive_sim_camera``) and stores registered view pairs; the trainer
   pre-trains the instance net's own backbone on them (``auxiliary_tasks``, descriptors by default)
   until enough labels exist, then alternates that task with the instance task. The camera goes
   back to its home pose before the robot pushes.
1. interaction: the simulated world, camera capture, interaction, labeler, trainer and
   inference nodes run as separate processes over DDS. The robot pushes objects through the
   ExecuteInteraction action on fresh random scenes; once the trainer has published a model,
   the interaction node chooses objects from the inference node's hypotheses (the robot
   tests its belief). Samples go to disk and to a rosbag2 MCAP bag. The demo, not the
   robot's nodes, asks the simulator for ground truth before and after each push and keeps
   it apart (``ground_truth/``), with the recall of the served model's hypotheses.
2. labels: the labeler node labels each push with optical flow while the robot works;
   label quality is measured against simulator ground truth, frame differencing alongside.
3. online learning: the trainer keeps training on the growing label set and publishes model
   versions; the inference node hot-swaps to each.
4. evaluation: AP on held-out scenes of novel objects, before (random weights, first version)
   vs after (newest version), next to a bottom-up baseline; recall of the hypotheses over
   time; a report (Markdown + PNG) in the run directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import rclpy
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rcl_interfaces.srv import SetParameters

from selfsup_perception.action import ExecuteInteraction
from selfsup_perception.cli.demo_report import build_report, camera_move_summary, camera_move_text, promotion_table
from selfsup_perception.core.dataset.sample_store import SampleStore
from selfsup_perception.graph import data_overrides, learning_graph, merge_overrides
from selfsup_perception.launcher import GraphProcess, exit_on_sigterm, parse_overrides
from selfsup_perception.ros.service_calls import call_service
from selfsup_perception.srv import SimGroundTruth, SimResetScene, SimSetCamera
from std_srvs.srv import Trigger

TASK = "instance_segmentation"


def _wait(future, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while not future.done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer within {timeout_s:.0f} s")
        time.sleep(0.02)
    return future.result()


class DemoClient:
    """The demo's own node: drives the action and services of the running graph."""

    def __init__(self):
        self.node = rclpy.create_node("demo_client")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()
        self.action = ActionClient(self.node, ExecuteInteraction, "execute_interaction")
        self.reset = self.node.create_client(SimResetScene, "/sim/reset_scene")
        self.ground_truth = self.node.create_client(SimGroundTruth, "/sim/ground_truth")
        self.interaction_params = self.node.create_client(SetParameters, "/interaction/set_parameters")
        self.collect_views = self.node.create_client(Trigger, "registration/collect")
        self.set_camera = self.node.create_client(SimSetCamera, "/sim/set_camera")

    def set_scene_id(self, scene_id: str) -> None:
        """Tell the interaction node which scene its next samples belong to (label provenance, validation split)."""
        req = SetParameters.Request(parameters=[Parameter("scene_id", value=scene_id).to_parameter_msg()])
        res = call_service(self.interaction_params, req, 10.0)
        if not res.results[0].successful:
            raise RuntimeError(f"interaction node refused scene_id: {res.results[0].reason}")

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        if not self.action.wait_for_server(timeout_sec=timeout_s):
            raise TimeoutError(f"the interaction node did not come up within {timeout_s:.0f} s")

    def push(self) -> ExecuteInteraction.Result:
        goal = ExecuteInteraction.Goal(kind=ExecuteInteraction.Goal.KIND_PUSH, auto_select=True, record=True)
        handle = _wait(self.action.send_goal_async(goal), 30.0)
        if not handle.accepted:
            raise RuntimeError("goal rejected")
        return _wait(handle.get_result_async(), 180.0).result

    def sim_ground_truth(self) -> SimGroundTruth.Response:
        res = call_service(self.ground_truth, SimGroundTruth.Request(), 30.0)
        if not res.success:
            raise RuntimeError(f"/sim/ground_truth failed: {res.message}")
        return res

    def hypotheses(self, rgb):
        """(masks, model version) the inference node serves for ``rgb``; ([], '') without a model."""
        import numpy as np

        from selfsup_perception.ros.conversions import instance_masks_from_msg, rgb_to_msg
        from selfsup_perception.srv import SegmentImage

        client = self.node.create_client(SegmentImage, "segment_image")
        try:
            res = call_service(client, SegmentImage.Request(image=rgb_to_msg(np.ascontiguousarray(rgb))), 30.0)
        finally:
            self.node.destroy_client(client)
        if not res.success:
            return [], ""
        return instance_masks_from_msg(res.segmentation, rgb.shape[:2])[0], res.segmentation.model_version

    def segment_round_trip(self, rgb) -> tuple[float, str]:
        from selfsup_perception.ros.conversions import rgb_to_msg
        from selfsup_perception.srv import SegmentImage

        client = self.node.create_client(SegmentImage, "segment_image")
        t = time.perf_counter()
        res = call_service(client, SegmentImage.Request(image=rgb_to_msg(rgb)), 30.0)
        ms = (time.perf_counter() - t) * 1000
        return ms, (f"{len(res.segmentation.instances)} instances from {res.segmentation.model_version}"
                    if res.success else res.message)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def record_evaluation(client: DemoClient, result, before, after, run_dir: Path) -> None:
    """Ground truth of one push and the recall of the served model's hypotheses on its before image."""
    from selfsup_perception.core.evaluation.ground_truth import GroundTruthStore
    from selfsup_perception.core.evaluation.hypotheses import hypothesis_recall
    from selfsup_perception.ros.conversions import ground_truth_from_sim, image_to_array

    sample_id = result.sample.sample_id
    gt = ground_truth_from_sim(before, after)
    GroundTruthStore(run_dir / "ground_truth").write(sample_id, gt)
    masks, version = client.hypotheses(image_to_array(result.sample.before.rgb))
    if not version:
        return
    recall, n_objects = hypothesis_recall(masks, gt["instance_mask_before"])
    record = {"sample_id": sample_id, "model_version": version, "num_hypotheses": len(masks),
              "num_objects": n_objects, "recall": recall, "candidate_source": "model"}
    with open(run_dir / "hypotheses.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


class CameraMoves:
    """The camera-move phase: the registration node moves the simulated camera over a scene and registers
    ``views`` views (view pairs for the trainer's auxiliary tasks); then the camera goes back home."""

    def __init__(self, client: DemoClient, pair_dir: Path, scenes: int, views: int, timeout_s: float = 120.0):
        from selfsup_perception.ros.conversions import view_msg_to_frame

        self.client, self.scenes, self.views, self.timeout_s = client, scenes, views, timeout_s
        self.pair_dir = pair_dir
        self.home = view_msg_to_frame(client.sim_ground_truth().view).camera_to_world  # before any push
        self.records: list[dict] = []

    def _registered(self) -> int:
        from selfsup_perception.core.registration.pair_store import PairStore

        return len(PairStore(self.pair_dir).registered_view_ids())

    def over_scene(self, scene: int, log=print) -> None:
        from selfsup_perception.ros.conversions import matrix_to_pose_msg

        if len(self.records) >= self.scenes:
            return
        t0, before = time.monotonic(), self._registered()
        res = call_service(self.client.collect_views, Trigger.Request(), 10.0)
        if not res.success:
            raise RuntimeError(f"registration/collect refused: {res.message}")
        deadline = t0 + self.timeout_s
        while self._registered() < before + self.views and time.monotonic() < deadline:
            time.sleep(0.2)
        added = self._registered() - before
        home = SimSetCamera.Request(camera_pose=matrix_to_pose_msg(self.home))
        res = call_service(self.client.set_camera, home, 10.0)
        if not res.success:
            raise RuntimeError(f"/sim/set_camera could not bring the camera home: {res.message}")
        dt = time.monotonic() - t0
        self.records.append({"scene": scene, "views_added": added, "seconds": dt})
        log(f"  camera moves over scene {scene}: {added} of {self.views} views registered ({dt:.1f} s)")


def run_interactions(client: DemoClient, num_pushes: int, scene_every: int, clutter: str, seed: int,
                     run_dir: Path, log=print, camera_moves: Optional[CameraMoves] = None) -> list[dict]:
    records = []
    for i in range(num_pushes):
        if i % scene_every == 0:
            res = call_service(client.reset, SimResetScene.Request(seed=seed + i, split="train", clutter=clutter), 30.0)
            client.set_scene_id(f"train-{seed + i}")
            log(f"  scene {seed + i}: {res.message}")
            if camera_moves is not None:
                camera_moves.over_scene(seed + i, log)
        t0 = time.monotonic()
        before = client.sim_ground_truth()
        result = client.push()
        dt = time.monotonic() - t0
        if result.success:
            record_evaluation(client, result, before, client.sim_ground_truth(), run_dir)
        records.append({"ok": result.success, "code": result.error_code, "s": dt})
        status = "ok " if result.success else f"failed [{result.error_code}]"
        log(f"  push {i + 1:2d}/{num_pushes}: {status} {result.message} ({dt:.1f} s)")
    return records


def wait_for_labels(store: SampleStore, labeler: str, timeout_s: float) -> None:
    """Wait until every stored sample has a label from ``labeler`` (the node works asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while store.unlabeled_ids(labeler) and time.monotonic() < deadline:
        time.sleep(0.5)


def wait_for_training(checkpoint_dir: Path, min_steps: int, timeout_s: float, log=print) -> None:
    from selfsup_perception.core.learning.serving import checkpoints as ckpt

    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        latest = ckpt.latest_version(checkpoint_dir, TASK)
        if latest is not None and latest.version != last:
            last = latest.version
            log(f"  model v{latest.version}: step {latest.meta['step']}, "
                f"loss {latest.meta.get('metrics', {}).get('loss', float('nan')):.4f}, "
                f"{latest.meta.get('dataset_size')} labels")
            if latest.meta["step"] >= min_steps:
                return
        time.sleep(1.0)


def label_report(store: SampleStore, run_dir: Path) -> str:
    """Label quality against simulator ground truth, and a contact sheet for people."""
    from selfsup_perception.core.dataset.visualization import contact_sheet, overlay_mask
    from selfsup_perception.core.labeling import FrameDifferenceLabeler
    from selfsup_perception.core.labeling.quality import label_quality_table, mask_iou

    from selfsup_perception.core.evaluation.ground_truth import GroundTruthStore

    baseline = FrameDifferenceLabeler()
    truth = GroundTruthStore(run_dir / "ground_truth")
    rows, tiles, captions = [], [], []
    for sample in store.iter_samples():
        gt = truth.read(sample.sample_id) or {}
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
            status = "discarded" if not flow.kept else ("negative" if flow.is_negative else "kept")
            captions.append(f"{sample.sample_id[-8:]} {status}{iou}")
    if not rows:
        return "  no labels yet"
    sheet = contact_sheet(tiles, captions, run_dir / "labels_contact_sheet.png") if tiles else None
    return label_quality_table(rows) + (f"\n  contact sheet: {sheet}" if sheet else "")


def evaluation(checkpoint_dir: Path, num_scenes: int, seed: int,
               max_versions: int = 5, world: str = "simple") -> dict:
    """AP on held-out test scenes of novel objects: {'table': [(name, metrics)], 'curve': [...],
    'evaluated': {version: metrics}, 'with_depth': {version: metrics}, 'baselines': {'colour', 'depth'},
    'bottom_up': the better baseline's metrics}.

    Rows: untrained weights, every promoted version and the served one, up to ``max_versions``
    evenly spaced others (first and newest included), the promoted versions and the served one combined
    with the depth-aware segments (:func:`combine_with_depth`, the robot's hypotheses), both bottom-up
    baselines. Curve: one point per evaluated version with the number of labels it was trained on. Each
    model runs at the input size its checkpoint records, as the inference node serves it.
    """
    import torch

    from selfsup_perception.cli.demo_report import versions_to_evaluate
    from selfsup_perception.core.evaluation.bottom_up import bottom_up_instances, depth_bottom_up
    from selfsup_perception.core.evaluation.hypotheses import combine_with_depth
    from selfsup_perception.sim.evaluation_scenes import evaluate_segmenter, render_test_scenes
    from selfsup_perception.core.learning.serving import checkpoints as ckpt
    from selfsup_perception.core.learning.serving.inference import segment_instances
    from selfsup_perception.core.learning.serving.mask_refinement import MaskRefinementConfig
    from selfsup_perception.core.learning.serving.promotions import PromotionLedger, served_version
    from selfsup_perception.core.learning.models.instance_segmentation import build_instance_model

    scenes = render_test_scenes(num_scenes, seed=seed, world=world)
    depth_segments = {id(s): depth_bottom_up(s.frame).instances for s in scenes}  # by scene object
    versions = ckpt.list_versions(checkpoint_dir, TASK)
    ledger = PromotionLedger.load(checkpoint_dir, TASK)
    served = served_version(checkpoint_dir, TASK)
    promoted = set(ledger.promoted_versions()) | ({served} if served is not None else set())
    rows = []
    if versions:
        torch.manual_seed(0)
        untrained = build_instance_model(versions[0].meta["model_config"]).eval()
        rows.append(("untrained (random weights)", untrained, versions[0].meta))
        picks = versions_to_evaluate([v.version for v in versions], ledger.promoted_versions(), served,
                                     max_versions)
        for info in [v for v in versions if v.version in picks]:
            model, meta = ckpt.load_model_for_inference(info.path)
            gate = "served" if info.version == served else (
                "promoted" if ledger.is_promoted(info.version) else "candidate")
            rows.append((f"v{info.version} (step {meta['step']}, {meta.get('dataset_size')} labels) {gate}",
                         model, meta))
    table, curve, evaluated, with_depth, combined_rows = [], [], {}, {}, []
    for i, (name, model, meta) in enumerate(rows):
        size = ckpt.serving_input_size(meta)
        cache: dict[int, list] = {}  # this model's instances by scene object, reused with depth

        def segment(s, m=model, size=size):  # as the inference node serves them
            cache[id(s)] = segment_instances(m, s.rgb, size, refinement=MaskRefinementConfig())
            return cache[id(s)]

        metrics = evaluate_segmenter(segment, scenes)
        table.append((name, metrics))
        if i > 0:  # row 0: untrained weights
            version = int(meta["version"])
            curve.append({"labels": meta.get("dataset_size") or 0, "step": meta["step"], **metrics})
            evaluated[version] = metrics
            if version in promoted:
                with_depth[version] = evaluate_segmenter(
                    lambda s: combine_with_depth(cache[id(s)], depth_segments[id(s)]), scenes)
                combined_rows.append((f"v{version} + depth-aware segments", with_depth[version]))
    table.extend(combined_rows)
    colour = evaluate_segmenter(lambda s: bottom_up_instances(s.frame), scenes)
    table.append(("bottom-up baseline (graph-based RGB-D)", colour))
    depth = evaluate_segmenter(lambda s: depth_segments[id(s)], scenes)
    table.append(("bottom-up baseline (depth, above the table)", depth))
    bottom_up = max((colour, depth), key=lambda m: m["AP50"])  # the best baseline is the bar
    return {"table": table, "curve": curve, "evaluated": evaluated, "with_depth": with_depth,
            "baselines": {"colour": colour, "depth": depth}, "bottom_up": bottom_up}


def format_ap_table(table: list[tuple]) -> str:
    lines = [f"  {'model':44s} {'AP@0.3':>7s} {'AP@0.5':>7s} {'AP@0.75':>8s} {'AP':>6s}"]
    for name, m in table:
        lines.append(f"  {name:44s} {m['AP30']:7.3f} {m['AP50']:7.3f} {m['AP75']:8.3f} {m['AP']:6.3f}")
    return "\n".join(lines)


def hypothesis_summary(path: Path) -> str:
    if not path.exists():
        return "  no hypotheses recorded"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    model = [r for r in records if r["candidate_source"] == "model"]
    lines = [f"  pushes made while a model was served: {len(model)} (its hypotheses on each before image)"]
    if model:
        half = max(len(model) // 2, 1)
        early, late = model[:half], model[half:] or model[-1:]
        lines.append(f"  hypothesis recall (IoU>=0.5 with ground-truth objects): first half "
                     f"{sum(r['recall'] for r in early) / len(early):.2f}, second half "
                     f"{sum(r['recall'] for r in late) / len(late):.2f}")
    return "\n".join(lines)


def write_report(run_dir: Path, checkpoint_dir: Path, sections: dict[str, str], curve: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup_perception.core.dataset.atomic_io import atomic_write_bytes
    from selfsup_perception.core.learning.serving import checkpoints as ckpt

    versions = ckpt.list_versions(checkpoint_dir, TASK)
    if versions:
        steps = [v.meta["step"] for v in versions]
        losses = [v.meta.get("metrics", {}).get("loss", float("nan")) for v in versions]
        sizes = [v.meta.get("dataset_size") or 0 for v in versions]
        fig, ax = plt.subplots(1, 3, figsize=(13, 3.2))
        ax[0].plot(steps, losses, marker="o")
        ax[0].set_xlabel("training step")
        ax[0].set_ylabel("loss (mean of the round)")
        ax[1].plot(steps, sizes, marker="o")
        ax[1].set_xlabel("training step")
        ax[1].set_ylabel("labels in the training set")
        for key, label in (("AP30", "AP@0.3"), ("AP50", "AP@0.5")):
            ax[2].plot([c["labels"] for c in curve], [c[key] for c in curve], marker="o", label=label)
        ax[2].set_xlabel("labels the version was trained on")
        ax[2].set_ylabel("AP on held-out novel objects")
        ax[2].legend()
        fig.tight_layout()
        fig.savefig(run_dir / "training.png", dpi=100)
        plt.close(fig)
    text = "# selfsup_perception demo report\n\n" + "\n\n".join(
        f"## {title}\n\n```\n{body}\n```" for title, body in sections.items())
    if versions:
        text += "\n\n![training](training.png)\n\n![labels](labels_contact_sheet.png)\n"
    path = run_dir / "report.md"
    atomic_write_bytes(path, lambda f: f.write(text.encode()))
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=36, help="number of push interactions")
    parser.add_argument("--scene-every", type=int, default=3, help="new random scene every K pushes")
    parser.add_argument("--clutter", default="low", choices=["low", "medium", "high"])
    parser.add_argument("--world", default="simple", choices=["simple", "realistic"],
                        help="simulated world (realistic: mesh objects, textures, depth noise, camera shake)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--train-steps", type=int, default=600, help="keep training until this many steps")
    parser.add_argument("--train-minutes", type=float, default=5.0, help="... or for at most this long")
    parser.add_argument("--eval-scenes", type=int, default=12, help="held-out scenes of novel objects")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--camera-move-scenes", type=int, default=4,
                        help="camera-move phase: the camera moves over the first N scenes before their pushes; the "
                        "view pairs pre-train the instance net's backbone (0 = no phase)")
    parser.add_argument("--views-per-scene", type=int, default=6, help="views registered per camera-move scene")
    parser.add_argument("--auxiliary-tasks", default="descriptors",
                        help="the trainer's auxiliary tasks on the view pairs (descriptors, region_consistency)")
    parser.add_argument("--out", default="data/demo", help="runs are stored under OUT/run_<time>/")
    parser.add_argument("-p", "--param", action="append", default=[],
                        help="node.param:=value override on top of the demo's (e.g. trainer.validation_split_by:=sample)")
    parser.add_argument("--evaluate", metavar="RUN_DIR", default="",
                        help="only evaluate a finished run again (step 4: AP table, report.json) and exit")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    if args.evaluate:
        return evaluate_run(Path(args.evaluate), args)

    run_dir = Path(args.out) / time.strftime("run_%Y%m%d_%H%M%S")
    layout = data_overrides(run_dir)  # the folders the nodes hand data through
    dataset_dir = Path(layout["interaction"]["dataset_dir"])
    bag_dir, checkpoint_dir = Path(layout["interaction"]["bag_dir"]), Path(layout["inference"]["checkpoint_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"selfsup_perception demo -> {run_dir}")
    camera_phase = args.camera_move_scenes > 0 and args.views_per_scene > 0
    pair_dir = Path(layout["registration"]["dataset_dir"])
    overrides = merge_overrides(data_overrides(run_dir), {
        "sim_world": {"width": args.width, "height": args.height, "seed": args.seed, "clutter": args.clutter,
                      "world": args.world},
        "interaction": {"record_bag": True, "seed": args.seed, "use_model_hypotheses": True},
        "trainer": {"torch_threads": 1, "steps_per_round": 20, "update_interval_s": 1.0,
                    "auxiliary_tasks": args.auxiliary_tasks if camera_phase else ""},
        "inference": {"torch_threads": 1},
        "registration": {"drive_sim_camera": True, "views_per_collection": args.views_per_scene,
                         "seed": args.seed, "compute_regions": "region_consistency" in args.auxiliary_tasks},
    }, parse_overrides(args.param))
    t0 = time.monotonic()
    sections: dict[str, str] = {}
    with rclpy.init():
        graph = GraphProcess(learning_graph(with_simulator=True, with_registration=camera_phase), overrides,
                             log_dir=run_dir / "logs", echo=False)
        camera_moves = None
        with graph:
            client = DemoClient()
            try:
                client.wait_ready()
                if camera_phase:
                    if not client.collect_views.wait_for_service(timeout_sec=60.0):
                        raise TimeoutError("the registration node did not come up within 60 s")
                    camera_moves = CameraMoves(client, pair_dir, args.camera_move_scenes, args.views_per_scene)
                    print(f"[0/4] camera moves: over the first {args.camera_move_scenes} scenes, "
                          f"{args.views_per_scene} views each; the trainer pre-trains the instance backbone "
                          f"({args.auxiliary_tasks}) on the view pairs")
                print(f"[1/4] interaction: {args.pushes} pushes on the {args.world} simulated tabletop "
                      f"({args.width}x{args.height}),"
                      " labeled, trained on and served while the robot works")
                records = run_interactions(client, args.pushes, args.scene_every, args.clutter, args.seed, run_dir,
                                           camera_moves=camera_moves)
                store = SampleStore(dataset_dir)
                wait_for_labels(store, "flow", timeout_s=120.0)
                print(f"  the trainer keeps training until step {args.train_steps} "
                      f"(at most {args.train_minutes:.0f} min)")
                wait_for_training(checkpoint_dir, args.train_steps, args.train_minutes * 60)
                from selfsup_perception.sim.tabletop import CameraConfig, SimConfig, TabletopSim

                with TabletopSim(SimConfig(world=args.world, camera=CameraConfig(width=640, height=480))) as sim:
                    sim.reset_scene(99_999, split="test", clutter="medium")
                    rgb = sim.render().rgb
                client.segment_round_trip(rgb)  # first call warms the model up
                ms, answer = client.segment_round_trip(rgb)
                sections["serving"] = f"segment_image round trip at 640x480: {ms:.0f} ms ({answer})"
            except (TimeoutError, RuntimeError) as exc:
                print(f"demo failed: {exc}; node logs in {run_dir / 'logs'}", file=sys.stderr)
                return 1
            finally:
                client.close()
            dead = graph.dead()
        if dead:
            print(f"warning: nodes exited during the demo: {dead}", file=sys.stderr)

    samples = list(store.iter_samples())
    from selfsup_perception.msg import InteractionSample
    from selfsup_perception.ros.bag_io import NoMatchingTopicError, read_bag

    def samples_in(bag) -> int:
        try:
            return sum(1 for _ in read_bag(bag, InteractionSample))
        except NoMatchingTopicError:  # a bag closed before its first sample
            return 0

    bags = sorted(bag_dir.glob("*"))
    bag_count = sum(samples_in(b) for b in bags)
    from selfsup_perception.core.evaluation.ground_truth import GroundTruthStore

    truth = GroundTruthStore(run_dir / "ground_truth")
    moved = sum(1 for s in samples if (truth.read(s.sample_id) or {}).get("moved_instance", 0))
    ok = sum(r["ok"] for r in records)
    sections["interaction"] = "\n".join([
        f"  pushes attempted / executed      {len(records)} / {ok}",
        f"  samples on disk (read back)      {len(samples)}  ({dataset_dir})",
        f"  samples in rosbag2 MCAP          {bag_count}  ({', '.join(str(b) for b in bags)})",
        f"  pushes that moved an object (GT) {moved}",
        f"  median time per push             {sorted(r['s'] for r in records)[len(records) // 2]:.1f} s",
    ])
    print(sections["interaction"])
    print("[2/4] labels: flow labels made online by the labeler node, frame differencing as the baseline")
    sections["labels"] = label_report(store, run_dir)
    print(sections["labels"])
    print("[3/4] online learning and serving: model versions hot-swapped into the inference node")
    sections["hypotheses"] = hypothesis_summary(run_dir / "hypotheses.jsonl")
    print(sections["hypotheses"])
    print(f"  {sections.get('serving', '')}")
    print(f"[4/4] evaluation: AP on {args.eval_scenes} held-out scenes of novel objects (640x480)")
    ev = evaluation(checkpoint_dir, args.eval_scenes, seed=10_000 + args.seed, world=args.world)
    curve = ev["curve"]
    sections["evaluation"] = format_ap_table(ev["table"])
    print(sections["evaluation"])
    result = run_result(checkpoint_dir, ev, args.eval_scenes, 10_000 + args.seed)
    if camera_moves is not None:
        result["camera_moves"] = camera_move_summary(
            camera_moves.records, pair_dir, checkpoint_dir,
            [t.strip() for t in args.auxiliary_tasks.split(",") if t.strip()])
        sections["camera moves"] = camera_move_text(result["camera_moves"])
        print("  camera-move phase:")
        print(sections["camera moves"])
    sections["promotion gate"] = promotion_table(result)
    print("  promotion gate (validation on held-out self-labels; AP on the held-out scenes):")
    print(sections["promotion gate"])
    report = write_report(run_dir, checkpoint_dir, sections, curve)
    from selfsup_perception.core.dataset.sample_store import atomic_write_json

    atomic_write_json(run_dir / "report.json", result)
    print(f"\nreport: {report} (and report.json)\nwall time {time.monotonic() - t0:.0f} s")
    return 0 if len(samples) >= min(20, args.pushes) else 1


def evaluate_run(run_dir: Path, args) -> int:
    """Step 4 again on a finished run: the AP table, the promotion table and report.json."""
    from selfsup_perception.core.dataset.sample_store import atomic_write_json

    checkpoint_dir = Path(data_overrides(run_dir)["inference"]["checkpoint_dir"])
    if not checkpoint_dir.is_dir():
        print(f"no checkpoints in {checkpoint_dir}", file=sys.stderr)
        return 1
    print(f"[4/4] evaluation of {run_dir}: AP on {args.eval_scenes} held-out scenes of novel objects (640x480)")
    ev = evaluation(checkpoint_dir, args.eval_scenes, seed=10_000 + args.seed, world=args.world)
    print(format_ap_table(ev["table"]))
    result = run_result(checkpoint_dir, ev, args.eval_scenes, 10_000 + args.seed)
    print(promotion_table(result))
    atomic_write_json(run_dir / "report.json", result)
    return 0


def run_result(checkpoint_dir: Path, ev: dict, eval_scenes: int, seed: int) -> dict:
    """The content of report.json (cli/demo_report.py)."""
    from selfsup_perception.core.learning.serving import checkpoints as ckpt
    from selfsup_perception.core.learning.serving.promotions import PromotionLedger, served_version

    versions = [{"version": v.version, "meta": v.meta} for v in ckpt.list_versions(checkpoint_dir, TASK)]
    ledger = PromotionLedger.load(checkpoint_dir, TASK)
    return build_report(versions, ev["evaluated"], ledger.events, served_version(checkpoint_dir, TASK),
                        ev["bottom_up"], eval_scenes=eval_scenes, seed=seed, with_depth=ev["with_depth"],
                        baselines=ev["baselines"])


if __name__ == "__main__":
    sys.exit(main())
