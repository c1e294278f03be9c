"""The simulated arm behind :class:`~selfsup_perception.robot.arm_backend.ArmBackend`.

Forwards each motion to the simulator node's ``ExecuteArmMotion`` service, where the
pybullet Panda performs it under physics (see ``sim/tabletop.py``).
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

from selfsup_perception.robot.arm_backend import (
    ERROR_CODES,
    INVALID_GOAL,
    TIMEOUT,
    MotionResult,
    Workspace,
    check_points,
)
from selfsup_perception.ros.conversions import point_to_msg
from selfsup_perception.ros.service_calls import ServiceCallError, call_service
from selfsup_perception.srv import ExecuteArmMotion


class SimArmBackend:
    name = "sim"

    def __init__(self, node, service_name: str = "/sim/execute_arm_motion", *, timeout_s: float = 30.0,
                 workspace: Optional[Workspace] = None, callback_group=None):
        self._client = node.create_client(ExecuteArmMotion, service_name, callback_group=callback_group)
        self._timeout_s = timeout_s
        self.workspace = workspace or Workspace()

    def _call(self, motion: int, a, b, timeout_s: Optional[float]) -> MotionResult:
        timeout = timeout_s or self._timeout_s
        req = ExecuteArmMotion.Request(motion=motion, timeout_s=float(timeout))
        if a is not None:
            req.start_point, req.end_point = point_to_msg(a), point_to_msg(b)
        t0 = time.monotonic()
        try:
            res = call_service(self._client, req, timeout)
        except ServiceCallError as exc:
            return MotionResult.failure(TIMEOUT, str(exc), time.monotonic() - t0)
        dt = time.monotonic() - t0
        if res.success:
            return MotionResult.ok(res.message, dt)
        if res.error_code in ERROR_CODES and res.error_code:
            return MotionResult.failure(res.error_code, res.message, dt)
        return MotionResult.from_status(False, res.message, dt)  # unknown code: classify by message

    def execute_push(self, start_xyz: Sequence[float], end_xyz: Sequence[float], *, approach_height=None,
                     contact_height=None, timeout_s=None) -> MotionResult:
        bad = check_points(self.workspace, start=start_xyz, end=end_xyz)
        return bad or self._call(ExecuteArmMotion.Request.MOTION_PUSH, start_xyz, end_xyz, timeout_s)

    def execute_grasp(self, pick_xyz: Sequence[float], place_xyz: Sequence[float], *, grasp_height=None,
                      approach_height=None, timeout_s=None) -> MotionResult:
        bad = check_points(self.workspace, pick=pick_xyz, place=place_xyz)
        return bad or self._call(ExecuteArmMotion.Request.MOTION_GRASP, pick_xyz, place_xyz, timeout_s)

    def move_out_of_view(self, *, timeout_s=None) -> MotionResult:
        return self._call(ExecuteArmMotion.Request.MOTION_OUT_OF_VIEW, None, None, timeout_s)

    def is_reachable(self, xyz: Sequence[float]) -> bool:
        return check_points(self.workspace, point=xyz) is None


__all__ = ["SimArmBackend", "INVALID_GOAL"]
