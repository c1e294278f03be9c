"""Online trainer: keeps learning from the growing label store while the robot works.

A worker thread (never the executor) runs training rounds: pick up new labels from
``dataset_dir``, train ``steps_per_round`` steps, write a checkpoint version atomically to
``checkpoint_dir`` and publish it on ``trainer/model_versions`` (ModelVersion, latched:
late subscribers get the newest). ``trainer/status`` (TrainerStatus) reports progress once
a second. ``trainer/pause`` (std_srvs/SetBool) pauses and resumes. After a restart the
node resumes from the newest valid checkpoint.

Retention: after each version, versions older than the newest ``keep_versions`` are deleted,
except pinned ones (the version the inference node serves, promoted ones); see
``checkpoints.prune_versions``. Shutdown (SIGINT/SIGTERM) interrupts a running round between
two steps and saves nothing partial; the node exits within about one training step.

A lifecycle node (``lifecycle_msgs`` services ``~/change_state``, ``~/get_state``): configure
resolves ``device``, creates ``checkpoint_dir``, builds the model and resumes from the newest
checkpoint (an unusable checkpoint or device fails the transition, the node stays up);
activate starts the training thread, deactivate stops it after the current step batch,
cleanup drops the model and optimizer. ``autostart`` configures and activates at start.
On CUDA the steps run under ``torch.autocast`` (float16) with loss scaling.

Promotion gate (instance segmentation): every version is published with ``promoted`` and
its validation scores on held-out self-labels; only promoted versions are served by the
inference node, the others stay candidates on disk. ``trainer/rollback`` (RollbackModel)
serves an earlier promoted version again and announces it with ``rolled_back``. On start
the served version (not the newest) is announced.

Shared backbone (instance segmentation, ``auxiliary_tasks``: descriptors and/or region_consistency):
the registered view pairs of the robot's camera moves (the registration node's store,
``auxiliary_dataset_dir``) train auxiliary heads on the instance net's own backbone
(core/learning/training/multitask.py ``OnlineSharedBackboneTrainer``): before ``min_samples``
labels exist a round pre-trains the backbone alone (state ``pretraining``), afterwards auxiliary
steps alternate with the instance steps. Every task writes its own checkpoints
(``<checkpoint_dir>/descriptors``, ``.../semantic_segmentation``); only the instance versions go
through the gate and are published here.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import SetBool

from selfsup_perception.core.learning.device import DEVICE_HELP, release_device_memory, resolve_device
from selfsup_perception.core.learning.serving.checkpoints import CheckpointError, prune_versions
from selfsup_perception.core.learning.serving import checkpoints as ckpt
from selfsup_perception.core.learning.serving.promotions import PromotionError, served_version
from selfsup_perception.core.learning.training.factory import OnlineTrainerSettings, make_online_trainer
from selfsup_perception.core.learning.training.online import RoundInterrupted
from selfsup_perception.core.learning.training.trainer import NonFiniteLossError
from selfsup_perception.msg import ModelVersion, TrainerStatus
from selfsup_perception.srv import RollbackModel
from selfsup_perception.ros.conversions import time_to_msg
from selfsup_perception.ros.callback_guard import GuardedNodeMixin
from selfsup_perception.ros.node_runner import run_node
from selfsup_perception.ros.parameters import declare_config, field_with_help
from selfsup_perception.ros.work_queue import lower_thread_priority

LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@dataclass(frozen=True)
class TrainerParams:
    task: str = field_with_help("instance_segmentation", "instance_segmentation (from interaction labels) | "
                                "semantic_segmentation (region-consistency pre-training on registered views) | "
                                "descriptors (cycle correspondence on the interactions' images)")
    dataset_dir: str = field_with_help("data/interactions", "instance: the sample store of interaction/labeler; "
                                       "semantic: the registration node's pair store (data/registration)")
    labeler: str = field_with_help("flow", "labels to learn from: flow | frame_difference")
    checkpoint_dir: str = field_with_help("data/checkpoints", "where model versions are written")
    update_interval_s: float = field_with_help(5.0, "pause between training rounds (s)")
    steps_per_round: int = field_with_help(40, "optimizer steps per round (one model version per round)")
    batch_size: int = field_with_help(8, "samples per step")
    input_width: int = field_with_help(320, "training image width (images are resized)")
    input_height: int = field_with_help(240, "training image height")
    min_samples: int = field_with_help(4, "kept labels (instance) or usable view pairs (semantic) needed to start")
    learning_rate: float = field_with_help(1e-3, "AdamW learning rate")
    warmup_steps: int = field_with_help(20, "linear learning-rate warm-up at the start of training (steps)")
    mask_loss: str = field_with_help("soft_iou", "bce | robust_set | soft_iou (bench/ap_table.py: docs/learning.md)")
    objectness_loss: str = field_with_help("bootstrap", "bce | bootstrap")
    co_teaching: bool = field_with_help(False, "train two networks on each other's small-loss samples")
    pretrained_backbone: str = field_with_help("", "instance: start the backbone from this checkpoint (a version or "
                                               "task directory of a pre-training run, e.g. "
                                               "data/checkpoints/semantic_segmentation); \"\" = random weights")
    freeze_backbone_steps: int = field_with_help(100, "instance, with pretrained_backbone: the backbone is held "
                                                 "still for its first N steps while the new heads learn")
    point_labels: bool = field_with_help(True, "instance: a discarded flow label whose push moved the object at the "
                                         "action pixel trains objectness at that pixel (no mask)")
    color_jitter: float = field_with_help(0.25, "instance: photometric jitter of training images (exposure, "
                                          "contrast, white balance), 0 = none")
    max_rounds: int = field_with_help(0, "stop after this many rounds, pre-training rounds included (0 = never)")
    seed: int = field_with_help(0, "seed of initialisation and batch sampling")
    torch_threads: int = field_with_help(2, "CPU threads for training (leave cores to the robot's other work)")
    niceness: int = field_with_help(10, "the training thread runs this much nicer (Linux), so serving and the "
                                    "robot's other work get the CPU first; 0 = same priority")
    keep_versions: int = field_with_help(20, "checkpoint retention: keep the newest N versions and every pinned "
                                         "(served/promoted) one; 0 = keep all")
    device: str = field_with_help("cpu", f"{DEVICE_HELP}; CUDA trains under torch.autocast (float16)")
    autostart: bool = field_with_help(True, "configure and activate at start")
    ema_decay: float = field_with_help(0.99, "checkpoint and serve an EMA of the weights with this decay (0 = raw)")
    lr_schedule: str = field_with_help("constant", "after the warm-up: constant | cyclic_cosine (warm-up_steps + "
                                       "cosine decay again in every round)")
    validation_fraction: float = field_with_help(0.2, "instance: share of labels held out to validate versions "
                                                 "(split by a hash of the scene/sample id)")
    promotion_margin: float = field_with_help(0.01, "instance: a version is served only if its validation score "
                                              "beats the served one by this much")
    min_validation_labels: int = field_with_help(2, "instance: positive validation labels needed to promote")
    validation_split_by: str = field_with_help("scene", "instance: hash the scene id (pushes of a scene on one side) "
                                               "or the sample id (validation fills steadily): scene | sample")
    first_version_bar: str = field_with_help("min_score", "instance: the first version is served when its validation "
                                             "score reaches the gate's minimum (min_score) or also beats the "
                                             "depth-aware segments on the same labels (bottom_up)")
    auxiliary_tasks: str = field_with_help("", "instance: auxiliary tasks on the instance net's backbone, trained on "
                                           "the registered view pairs of the camera moves (training/multitask.py); "
                                           "comma-separated: descriptors, region_consistency; \"\" = none")
    auxiliary_dataset_dir: str = field_with_help("data/registration", "instance: the registration node's pair store "
                                                 "the auxiliary tasks train on")
    auxiliary_steps_per_round: int = field_with_help(10, "instance: auxiliary steps alternated with the instance "
                                                     "steps of each round (0 = none)")
    pretraining_steps_per_round: int = field_with_help(20, "instance: auxiliary steps of a round while there are "
                                                       "fewer than min_samples labels (pre-training; 0 = none)")
    auxiliary_batch_size: int = field_with_help(4, "instance: view pairs per auxiliary step")

    def __post_init__(self) -> None:
        if self.task not in ("instance_segmentation", "semantic_segmentation", "descriptors"):
            raise ValueError(f"task must be instance_segmentation, semantic_segmentation or descriptors, "
                             f"got {self.task!r}")
        if self.keep_versions < 0:
            raise ValueError("keep_versions must be >= 0 (0 = keep all)")
        if self.update_interval_s < 0 or self.steps_per_round < 1 or self.batch_size < 1:
            raise ValueError("update_interval_s >= 0, steps_per_round >= 1 and batch_size >= 1 are required")
        if self.mask_loss not in ("bce", "robust_set", "soft_iou"):
            raise ValueError(f"mask_loss must be bce, robust_set or soft_iou, got {self.mask_loss!r}")
        if self.objectness_loss not in ("bce", "bootstrap"):
            raise ValueError(f"objectness_loss must be bce or bootstrap, got {self.objectness_loss!r}")
        settings_from_params(self)  # raises on bad promotion/EMA settings


def settings_from_params(p: TrainerParams) -> OnlineTrainerSettings:
    return OnlineTrainerSettings(
        task=p.task, dataset_dir=p.dataset_dir, checkpoint_dir=p.checkpoint_dir, labeler=p.labeler,
        input_width=p.input_width, input_height=p.input_height, batch_size=p.batch_size,
        steps_per_round=p.steps_per_round, min_samples=p.min_samples, learning_rate=p.learning_rate,
        warmup_steps=p.warmup_steps, mask_loss=p.mask_loss, objectness_loss=p.objectness_loss,
        co_teaching=p.co_teaching, pretrained_backbone=p.pretrained_backbone,
        freeze_backbone_steps=p.freeze_backbone_steps, point_labels=p.point_labels, color_jitter=p.color_jitter,
        seed=p.seed, device=p.device,
        ema_decay=p.ema_decay, lr_schedule=p.lr_schedule,
        validation_fraction=p.validation_fraction,
        promotion_margin=p.promotion_margin, min_validation_labels=p.min_validation_labels,
        validation_split_by=p.validation_split_by, first_version_bar=p.first_version_bar,
        auxiliary_tasks=p.auxiliary_tasks, auxiliary_dataset_dir=p.auxiliary_dataset_dir,
        auxiliary_steps_per_round=p.auxiliary_steps_per_round,
        pretraining_steps_per_round=p.pretraining_steps_per_round, auxiliary_batch_size=p.auxiliary_batch_size)


class TrainerNode(GuardedNodeMixin, LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("trainer", **kwargs)
        self.params = declare_config(self, TrainerParams, on_change=self._apply_params, dynamic=(
            "update_interval_s", "steps_per_round", "batch_size", "learning_rate", "max_rounds"))
        torch.set_num_threads(max(self.params.torch_threads, 1))
        self.online = None  # built in configure
        self.version_pub = self.create_publisher(ModelVersion, "trainer/model_versions", LATCHED)
        self.status_pub = self.create_publisher(TrainerStatus, "trainer/status", 10)
        self.state, self.message = "unconfigured", ""
        self.rounds = 0
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        group = MutuallyExclusiveCallbackGroup()
        self.create_service(SetBool, "trainer/pause", self._on_pause, callback_group=group)
        self.create_service(RollbackModel, "trainer/rollback", self._on_rollback, callback_group=group)
        self.create_timer(1.0, self._publish_status, callback_group=group)
        if self.params.autostart and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # ------------------------------------------------------------- lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        p = self.params
        try:
            resolve_device(p.device)
            Path(p.checkpoint_dir).mkdir(parents=True, exist_ok=True)
            online = make_online_trainer(settings_from_params(p))
            resumed = online.resume()
        except (CheckpointError, RuntimeError, ValueError, OSError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.online = online
        self.state, self.message = "inactive", f"model on {online.trainer.device}"
        if resumed is not None:
            self.get_logger().info(f"resumed {p.task} at version {resumed}, step {online.trainer.step}")
            self._announce_served()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._stop.clear()
        self._worker = threading.Thread(target=self._loop, name="trainer", daemon=True)
        self._worker.start()
        self.state = "waiting_for_data"
        self.get_logger().info(f"training {self.params.task} from {self.params.dataset_dir} "
                               f"into {self.params.checkpoint_dir}")
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_worker()
        self.state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        device = self.online.trainer.device if self.online is not None else None
        self.online = None
        release_device_memory(device)
        self.state, self.message = "unconfigured", ""
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop_worker()
        self.online = None
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self, timeout_s: float = 60.0) -> None:
        """Interrupt the round between two steps (nothing partial is saved) and wait for the thread."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=timeout_s)
            self._worker = None

    def _apply_params(self, params: TrainerParams) -> None:
        """Takes effect with the next round: learning rate, steps and batch size of the online trainer."""
        online = self.online
        if online is None:  # not configured yet: configure builds it from these parameters
            self.params = params
            return
        online.trainer.config = dataclasses.replace(online.trainer.config, lr=params.learning_rate)
        for aux in getattr(online, "auxiliary", {}).values():  # the shared backbone's other tasks follow
            aux.trainer.config = dataclasses.replace(aux.trainer.config, lr=params.learning_rate)
        online.config = dataclasses.replace(online.config, steps_per_round=params.steps_per_round,
                                            batch_size=params.batch_size)
        self.params = params

    def _on_pause(self, request, response):
        (self._paused.set if request.data else self._paused.clear)()
        response.success, response.message = True, "paused" if request.data else "training"
        return response

    def _loop(self) -> None:
        lower_thread_priority(self.params.niceness)
        while not self._stop.is_set():
            p = self.params  # dynamic parameters take effect from the next round
            if self._paused.is_set():
                self.state = "paused"
                self._stop.wait(0.2)
                continue
            try:
                path = self.online.train_round(stop=self._stop)
            except RoundInterrupted:
                return  # shutting down: nothing of this round was saved
            except NonFiniteLossError as exc:
                self.state, self.message = "error", f"training stopped: {exc}"
                self.get_logger().error(self.message)
                return
            except Exception as exc:  # noqa: BLE001 - keep the node alive; retry next round
                self.state, self.message = "error", f"round failed: {exc}"
                self.get_logger().error(self.message)
                self._stop.wait(max(p.update_interval_s, 1.0))
                continue
            pretraining = self._auxiliary_versions(p)
            if path is None:
                self.state = "pretraining" if pretraining else "waiting_for_data"
                self.message = (f"{pretraining}; " if pretraining else "") + \
                    f"{len(self.online.dataset)} of {p.min_samples} labels needed"
                if pretraining:  # a pre-training round counts towards max_rounds
                    self.rounds += 1
                    if p.max_rounds and self.rounds >= p.max_rounds:
                        self.state, self.message = "paused", f"{self.message}; max_rounds {p.max_rounds} reached"
                        return
            else:
                self.rounds += 1
                self.state, self.message = "training", f"version {self.online.version} written to {path}"
                try:
                    with self.online.promotion_lock:  # a rollback in between must not be overtaken by this message
                        self._publish_version()
                except Exception as exc:  # noqa: BLE001 - e.g. the context is gone when shutting down
                    if self._stop.is_set():
                        return
                    self.get_logger().error(f"could not publish version {self.online.version}: {exc}")
                try:
                    promoted = self.online.ledger().promoted_versions() if hasattr(self.online, "ledger") else []
                except PromotionError:
                    promoted = []
                removed = prune_versions(p.checkpoint_dir, p.task, keep_last=p.keep_versions, keep=promoted)
                if removed:
                    self.get_logger().info(f"retention: removed versions {removed} (keep_versions {p.keep_versions})")
                self.get_logger().info(
                    f"model v{self.online.version}: step {self.online.trainer.step}, "
                    f"loss {self.online.last_round.get('loss', float('nan')):.4f}, "
                    f"{len(self.online.dataset)} labels, {self.online.last_round['steps_per_second']:.2f} steps/s")
                if p.max_rounds and self.rounds >= p.max_rounds:
                    self.state, self.message = "paused", f"max_rounds {p.max_rounds} reached"
                    return
            self._stop.wait(p.update_interval_s)

    def _auxiliary_versions(self, p: TrainerParams) -> str:
        """Log and prune the auxiliary versions the last round wrote (shared backbone); '' if none."""
        done = getattr(self.online, "last_auxiliary", None) or {}
        parts = []
        for name, a in done.items():
            parts.append(f"{name} v{a['version']} ({a['steps']} steps, loss {a['loss']:.4f}, "
                         f"{a['view_pairs']} view pairs)")
            removed = prune_versions(p.checkpoint_dir, a["task"], keep_last=p.keep_versions)
            if removed:
                self.get_logger().info(f"retention: removed {a['task']} versions {removed}")
        if not parts:
            return ""
        what = ("pre-training the backbone: " if any(a["pretraining"] for a in done.values())
                else "shared backbone: ") + ", ".join(parts)
        self.get_logger().info(what)
        return what if any(a["pretraining"] for a in done.values()) else ""

    def _publish_version(self) -> None:
        o = self.online
        path = o.version_path if o.version_path is not None else ""
        msg = ModelVersion(task=self.params.task, version=int(o.version or 0), step=int(o.trainer.step),
                           checkpoint_path=str(path))
        msg.stamp = time_to_msg(time.time())
        metrics = {k: v for k, v in o.last_round.items() if isinstance(v, float)}
        msg.metric_names, msg.metric_values = list(metrics), [float(v) for v in metrics.values()]
        decision = o.last_decision
        if decision is not None:
            ledger = o.ledger()
            # promoted and still served (a rollback right after the round wins)
            msg.promoted = bool(decision.promoted) and ledger.served == msg.version
            msg.promotion_reason = decision.reason
            validation = decision.candidate.as_dict() if decision.candidate is not None else {}
            msg.validation_names, msg.validation_values = list(validation), [float(v) for v in validation.values()]
            event = ledger.last_event(msg.version) if msg.promoted else None
            msg.previous_version = int((event or {}).get("previous") or 0)
        self.version_pub.publish(msg)

    def _served_message(self, rolled_back: bool = False) -> ModelVersion | None:
        """ModelVersion of the served version (from the ledger and its metadata), None if nothing is served."""
        p = self.params
        version = served_version(p.checkpoint_dir, p.task)
        if version is None:
            return None
        path = ckpt.version_dir(p.checkpoint_dir, p.task, version)
        meta = ckpt.read_meta(path)
        event = self.online.ledger().last_event(version) or {}
        msg = ModelVersion(task=p.task, version=version, step=int(meta["step"]), checkpoint_path=str(path),
                           promoted=True, rolled_back=rolled_back, previous_version=int(event.get("previous") or 0),
                           promotion_reason=str(event.get("reason") or meta.get("promotion_reason", "")))
        msg.stamp = time_to_msg(time.time())
        validation = meta.get("validation") or {}
        msg.validation_names, msg.validation_values = list(validation), [float(v) for v in validation.values()]
        metrics = {k: float(v) for k, v in (meta.get("metrics") or {}).items() if isinstance(v, (int, float))}
        msg.metric_names, msg.metric_values = list(metrics), list(metrics.values())
        return msg

    def _announce_served(self) -> None:
        msg = self._served_message()
        if msg is not None:
            self.version_pub.publish(msg)

    def _on_rollback(self, request, response):
        if self.online is None:
            response.success, response.message = False, "the trainer is not configured (lifecycle state)"
            return response
        task = request.task or "instance_segmentation"
        if task != self.params.task:
            response.success, response.message = False, f"this trainer trains {self.params.task}, not {task!r}"
            return response
        try:
            with self.online.promotion_lock:
                previous, target = self.online.ledger().rollback(int(request.version), request.reason)
                msg = self._served_message(rolled_back=True)
        except (PromotionError, OSError, ValueError, RuntimeError) as exc:  # RuntimeError: CheckpointError
            response.success, response.message = False, str(exc)
            return response
        self.version_pub.publish(msg)
        response.success, response.active = True, msg
        response.message = f"rolled back {task} from v{previous} to v{target}"
        self.get_logger().warning(response.message + (f" ({request.reason})" if request.reason else ""))
        return response

    def _publish_status(self) -> None:
        o = self.online
        if o is None:
            return
        msg = TrainerStatus(task=self.params.task, state=self.state, message=self.message,
                            model_version=int(o.version or 0), step=int(o.trainer.step),
                            dataset_size=len(o.dataset), num_positive=getattr(o.dataset, "num_positive", 0),
                            num_negative=getattr(o.dataset, "num_negative", 0))
        msg.header.stamp = self.get_clock().now().to_msg()
        last = o.last_round
        msg.loss = float(last.get("loss", 0.0))
        losses = {k: v for k, v in last.items() if k not in ("steps", "seconds", "steps_per_second", "loss")
                  and isinstance(v, float)}
        msg.loss_names, msg.loss_values = list(losses), [float(v) for v in losses.values()]
        msg.steps_per_second = float(last.get("steps_per_second", 0.0))
        self.status_pub.publish(msg)

    def destroy_node(self) -> None:
        if hasattr(self, "_stop"):  # absent when the constructor failed
            self._stop_worker(timeout_s=1.2)  # a round stops between two steps; run_node ends the process after that
        super().destroy_node()


def main(args=None) -> None:
    run_node(TrainerNode, num_threads=2, args=args)


if __name__ == "__main__":
    main()
