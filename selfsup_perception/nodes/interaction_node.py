"""Interaction controller: the ExecuteInteraction action (push / grasp with images before and after).

Action ``execute_interaction`` (ExecuteInteraction): moves the arm out of view, captures a
view (``capture_view`` service), chooses an action (or executes the goal's points),
moves the arm through an arm backend (``sim``: the simulator's ``/sim/execute_arm_motion``;
``moveit``: MoveIt 2 through moveit_py), captures again, stores the sample atomically in
``dataset_dir`` (and in a rosbag2 MCAP bag when ``record_bag``), and publishes it on
``interaction/samples``. Failures (unreachable, planning, timeout, capture) abort the goal
with an error code; the node keeps serving.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rclpy.action import ActionServer, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from selfsup_perception.action import ExecuteInteraction
from selfsup_perception.core.dataset.sample_store import SampleStore
from selfsup_perception.core.interaction.action_planning import PlannerConfig
from selfsup_perception.core.interaction.episode import run_episode
from selfsup_perception.core.interaction.selection import POLICIES
from selfsup_perception.core.types import InteractionKind
from selfsup_perception.msg import InteractionSample as InteractionSampleMsg
from selfsup_perception.robot.arm_backend import Workspace
from selfsup_perception.robot.moveit_config import MoveItConfigError, MoveItConfigSource, moveit_config_for
from selfsup_perception.ros.conversions import (
    instance_masks_from_msg,
    point_from_msg,
    rgb_to_msg,
    sample_to_msg,
    view_msg_to_frame,
)
from selfsup_perception.ros.callback_guard import GuardedNodeMixin
from selfsup_perception.ros.node_runner import run_node
from selfsup_perception.ros.parameters import declare_config, field_with_help
from selfsup_perception.ros.service_calls import ServiceCallError, call_service
from selfsup_perception.srv import CaptureView, SegmentImage

SAMPLES_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


@dataclass(frozen=True)
class InteractionParams:
    backend: str = field_with_help("sim", "arm backend: sim | moveit")
    robot_config: str = field_with_help("", "robot YAML for the moveit backend (config/robots/panda.yaml)")
    arm_service: str = field_with_help("/sim/execute_arm_motion", "sim backend: the arm motion service")
    capture_service: str = field_with_help("capture_view", "CaptureView service of the camera capture node")
    capture_timeout_s: float = field_with_help(5.0, "timeout of one capture (s)")
    motion_timeout_s: float = field_with_help(60.0, "timeout of one arm motion (s)")
    dataset_dir: str = field_with_help("data/interactions", "where samples are stored (atomic .npz files)")
    record_bag: bool = field_with_help(False, "also record samples into a rosbag2 MCAP bag")
    bag_dir: str = field_with_help("data/bags", "directory of recorded bags (one per node run)")
    depth_encoding: str = field_with_help("32FC1", "depth encoding of published samples: 32FC1 | 16UC1")
    world_frame: str = field_with_help("world", "frame of the interaction points")
    seed: int = field_with_help(0, "seed of action sampling")
    use_model_hypotheses: bool = field_with_help(False, "choose objects from the segmentation service's masks")
    segment_service: str = field_with_help("segment_image", "SegmentImage service used for hypotheses")
    push_selection: str = field_with_help("uncertain", "which hypothesis to push (depth-aware segments + the "
                                          "model's masks, core/interaction/selection.py): uncertain | random | "
                                          "confident; 'none': the model's best push, then geometry")
    scene_id: str = field_with_help("", "scene/episode id recorded with each sample (set it when the scene changes; "
                                    "the promotion gate keeps a scene's pushes on one side of its split)")
    workspace_x: list = field_with_help([0.35, 0.75], "workspace x range (m, world frame)")
    workspace_y: list = field_with_help([-0.25, 0.25], "workspace y range (m, world frame)")
    # MoveIt configuration for MoveItPy(config_dict=...) (robot/moveit_config.py; docs/real_robot.md)
    moveit_config_package: str = field_with_help("", "moveit backend: MoveIt config package "
                                                 "(e.g. moveit_resources_panda_moveit_config)")
    moveit_urdf: str = field_with_help("", "moveit backend: URDF (.urdf or .urdf.xacro); overrides the package's")
    moveit_srdf: str = field_with_help("", "moveit backend: SRDF; overrides the package's")
    moveit_kinematics: str = field_with_help("", "moveit backend: kinematics.yaml; overrides the package's")
    moveit_joint_limits: str = field_with_help("", "moveit backend: joint_limits.yaml; overrides the package's")
    moveit_pilz_cartesian_limits: str = field_with_help("", "moveit backend: pilz_cartesian_limits.yaml")
    moveit_planning_pipelines: str = field_with_help("", "moveit backend: comma-separated <name>_planning.yaml "
                                                     "files; override the package's")
    moveit_cpp_config: str = field_with_help("", "moveit backend: moveit_py parameter file "
                                             "(empty: config/robots/moveit_py_panda.yaml)")
    moveit_xacro_args: str = field_with_help("", "moveit backend: space-separated name:=value for a xacro URDF")

    def __post_init__(self) -> None:
        if self.backend not in ("sim", "moveit"):
            raise ValueError(f"backend must be sim or moveit, got {self.backend!r}")
        if self.depth_encoding not in ("32FC1", "16UC1"):
            raise ValueError(f"depth_encoding must be 32FC1 or 16UC1, got {self.depth_encoding!r}")
        if self.capture_timeout_s <= 0 or self.motion_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if self.push_selection not in ("none",) + POLICIES:
            raise ValueError(f"push_selection must be none, {', '.join(POLICIES)}; got {self.push_selection!r}")
        for name in ("workspace_x", "workspace_y"):
            v = getattr(self, name)
            if len(v) != 2 or not v[0] < v[1]:
                raise ValueError(f"{name} must be [low, high] with low < high, got {v}")


def moveit_source(params: InteractionParams) -> MoveItConfigSource:
    """The MoveIt configuration named by the node's ``moveit_*`` parameters."""
    from selfsup_perception.ros.package_paths import config_dir

    return MoveItConfigSource(
        package=params.moveit_config_package, urdf=params.moveit_urdf, srdf=params.moveit_srdf,
        kinematics=params.moveit_kinematics, joint_limits=params.moveit_joint_limits,
        pilz_cartesian_limits=params.moveit_pilz_cartesian_limits,
        planning_pipelines=tuple(p.strip() for p in params.moveit_planning_pipelines.split(",") if p.strip()),
        moveit_cpp=params.moveit_cpp_config or str(config_dir() / "robots" / "moveit_py_panda.yaml"),
        xacro_args=tuple(params.moveit_xacro_args.split()))


def make_arm_backend(node: Node, params: InteractionParams, callback_group, moveit_api=None):
    """The arm backend of ``params.backend``; ``moveit_api`` replaces moveit_py (tests: the recording double)."""
    # Objects stay inside workspace_x/y; the finger may start and end up to the planner's
    # reach_margin outside it (behind an object at the edge), so the arm's goals may too.
    m = PlannerConfig().reach_margin
    workspace = Workspace(x=(params.workspace_x[0] - m, params.workspace_x[1] + m),
                          y=(params.workspace_y[0] - m, params.workspace_y[1] + m))
    if params.backend == "sim":
        from selfsup_perception.robot.sim_backend import SimArmBackend

        return SimArmBackend(node, params.arm_service, timeout_s=params.motion_timeout_s, workspace=workspace,
                             callback_group=callback_group)
    from selfsup_perception.robot.moveit_backend import MoveItArmBackend
    from selfsup_perception.robot.robot_config import RobotConfig

    if not params.robot_config:
        raise ValueError("backend 'moveit' needs the robot_config parameter (e.g. config/robots/panda.yaml)")
    robot = RobotConfig.from_yaml(params.robot_config)
    source = moveit_source(params)
    if not (source.package or source.urdf):
        raise MoveItConfigError("backend 'moveit' needs a MoveIt configuration: set moveit_config_package "
                                "(e.g. moveit_resources_panda_moveit_config) or the moveit_urdf/moveit_srdf/"
                                "moveit_kinematics/... files (docs/real_robot.md)")
    config = moveit_config_for(source, [robot.free_planner.pipeline, robot.linear_planner.pipeline])
    return MoveItArmBackend(robot, api=moveit_api, config_dict=config, logger=node.get_logger())


class InteractionNode(GuardedNodeMixin, Node):
    def __init__(self, **kwargs):
        super().__init__("interaction", **kwargs)
        self.params = declare_config(self, InteractionParams, on_change=self._apply_params,
                                     dynamic=("capture_timeout_s", "use_model_hypotheses", "scene_id",
                                                                   "push_selection"))
        p = self.params
        self._clients_group = ReentrantCallbackGroup()
        self._bag = None  # destroy_node may run on a node whose start-up failed below
        self.arm = make_arm_backend(self, p, self._clients_group)
        self.store = SampleStore(p.dataset_dir)
        self._capture_client = self.create_client(CaptureView, p.capture_service, callback_group=self._clients_group)
        self._segment_client = self.create_client(SegmentImage, p.segment_service, callback_group=self._clients_group)
        self.sample_pub = self.create_publisher(InteractionSampleMsg, "interaction/samples", SAMPLES_QOS)
        self._rng = np.random.default_rng(p.seed)
        self._busy = threading.Lock()  # one arm: one interaction at a time
        self._bag = None
        if p.record_bag:
            from selfsup_perception.ros.bag_io import BagRecorder

            bag_path = Path(p.bag_dir) / time.strftime("interactions_%Y%m%d_%H%M%S")
            bag_path.parent.mkdir(parents=True, exist_ok=True)
            self._bag = BagRecorder(bag_path, storage="mcap")
            self.get_logger().info(f"recording samples into {bag_path}")
        self._last_model_version = ""  # the model whose hypotheses the current episode saw
        self._action_server = ActionServer(
            self, ExecuteInteraction, "execute_interaction",
            execute_callback=self.guard.action_execute(self._execute, ExecuteInteraction.Result),
            goal_callback=self.guard.action_goal(self._on_goal), callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(f"interaction controller ready (backend {p.backend}, dataset {p.dataset_dir})")

    def _apply_params(self, params: InteractionParams) -> None:
        self.params = params  # read per goal; the arm backend, stores and workspace are fixed at start-up

    def _on_goal(self, goal) -> GoalResponse:
        if goal.kind not in (ExecuteInteraction.Goal.KIND_PUSH, ExecuteInteraction.Goal.KIND_GRASP):
            self.get_logger().warning(f"rejecting goal with unknown kind {goal.kind}")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    # ------------------------------------------------------------ callables
    def _capture(self):
        view = call_service(self._capture_client, CaptureView.Request(timeout_s=self.params.capture_timeout_s),
                            self.params.capture_timeout_s + 2.0)
        if not view.success:
            raise TimeoutError(view.message)
        return view_msg_to_frame(view.view)

    def _hypotheses(self, frame):
        try:
            res = call_service(self._segment_client, SegmentImage.Request(image=rgb_to_msg(frame.rgb)), 5.0)
        except ServiceCallError as exc:
            self.get_logger().warning(f"no model hypotheses ({exc}); using geometry")
            return [], []
        if not res.success:
            return [], []
        self._last_model_version = res.segmentation.model_version
        return instance_masks_from_msg(res.segmentation, frame.shape)

    # -------------------------------------------------------------- action
    def _execute(self, goal_handle):
        goal = goal_handle.request
        result = ExecuteInteraction.Result()
        if not self._busy.acquire(blocking=False):
            goal_handle.abort()
            result.message, result.error_code = "another interaction is running", "EXECUTION_FAILED"
            return result
        try:
            return self._run(goal_handle, goal, result)
        finally:
            self._busy.release()

    def _run(self, goal_handle, goal, result):
        p = self.params
        self._last_model_version = ""
        kind = InteractionKind(goal.kind)

        def feedback(stage: str, progress: float) -> None:
            goal_handle.publish_feedback(ExecuteInteraction.Feedback(stage=stage, progress=float(progress)))

        points = {}
        if not goal.auto_select:
            points = dict(start_point=point_from_msg(goal.start_point), end_point=point_from_msg(goal.end_point))
        episode = run_episode(
            self._capture, self.arm, kind, self._rng, planner=PlannerConfig(
                workspace_x=tuple(p.workspace_x), workspace_y=tuple(p.workspace_y)),
            hypotheses=self._hypotheses if p.use_model_hypotheses else None, feedback=feedback,
            policy=None if p.push_selection == "none" else p.push_selection, **points)
        result.message, result.error_code = episode.message, episode.error_code
        if not episode.success:
            self.get_logger().warning(f"interaction failed [{episode.error_code}]: {episode.message}")
            goal_handle.abort()
            return result
        sample = episode.sample
        sample.scene_id = self.params.scene_id  # changes with the scene (a dynamic parameter)
        if episode.timings.get("candidate_source") == "model":
            sample.model_version = self._last_model_version  # the model whose hypothesis chose this action
        feedback("recording", 0.9)
        msg = sample_to_msg(sample, depth_encoding=p.depth_encoding, world_frame=p.world_frame)
        if goal.record:
            try:
                result.stored_path = str(self.store.write_sample(sample))
            except (OSError, ValueError) as exc:
                self.get_logger().error(f"could not store sample {sample.sample_id}: {exc}")
                result.message += f"; NOT stored: {exc}"
            if self._bag is not None:
                self._bag.write("interaction/samples", msg, self.get_clock().now().nanoseconds)
        self.sample_pub.publish(msg)
        result.sample, result.success = msg, True
        goal_handle.succeed()
        return result

    def destroy_node(self) -> None:
        if self._bag is not None:
            self._bag.close()
        super().destroy_node()


def main(args=None) -> None:
    run_node(InteractionNode, num_threads=4, args=args)


if __name__ == "__main__":
    main()
