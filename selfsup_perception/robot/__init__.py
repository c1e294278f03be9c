"""Arm backends: one interface (:class:`ArmBackend`) for the simulated arm and for real arms through MoveIt 2.

``moveit_backend`` imports ``moveit_py`` only when a :class:`MoveItArmBackend` is
built without an injected client, so importing this package never needs ROS.
"""

from selfsup_perception.robot.arm_backend import (
    ERROR_CODES,
    EXECUTION_FAILED,
    INVALID_GOAL,
    OK,
    PLANNING_FAILED,
    TIMEOUT,
    UNREACHABLE,
    ArmBackend,
    InvalidGoalError,
    MotionResult,
    Workspace,
    check_points,
    validate_point,
)
from selfsup_perception.robot.robot_config import ArmConfig, MotionPlannerConfig, RobotConfig

__all__ = [
    "ERROR_CODES",
    "EXECUTION_FAILED",
    "INVALID_GOAL",
    "OK",
    "PLANNING_FAILED",
    "TIMEOUT",
    "UNREACHABLE",
    "ArmBackend",
    "ArmConfig",
    "InvalidGoalError",
    "MotionResult",
    "MotionPlannerConfig",
    "RobotConfig",
    "Workspace",
    "check_points",
    "validate_point",
]
