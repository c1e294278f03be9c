"""The MoveIt configuration that ``MoveItPy(config_dict=...)`` needs, built as ``moveit_configs_utils`` builds it.

MoveItCpp (behind moveit_py) reads the robot from its node parameters: without
``robot_description`` (URDF), ``robot_description_semantic`` (SRDF),
``robot_description_kinematics``, the planning pipelines and, for the Pilz planner, the
Cartesian limits under ``robot_description_planning``, it throws at start-up. This module
assembles those parameters into one dictionary with the keys and nesting of
``moveit_configs_utils.MoveItConfigsBuilder(...).to_dict()``:

==================================  =========================================================
``robot_description``               URDF XML (a ``.xacro`` file is expanded with ``xacro``)
``robot_description_semantic``      SRDF XML
``robot_description_kinematics``    ``kinematics.yaml``
``robot_description_planning``      ``joint_limits.yaml`` merged with ``pilz_cartesian_limits.yaml``
``<pipeline>`` (e.g. ``ompl``)      ``<pipeline>_planning.yaml`` of each planning pipeline
``planning_pipelines``              ``{"pipeline_names": [...]}`` (the moveit_cpp file's shape)
everything in the moveit_cpp file   e.g. ``config/robots/moveit_py_panda.yaml`` (plan request
                                    namespaces, planning scene monitor options)
==================================  =========================================================

Two ways in (:class:`MoveItConfigSource`): a MoveIt config *package* (found on the ament
index; its ``.setup_assistant`` file names the URDF and SRDF, the rest lies in ``config/``
under the names MoveIt Setup Assistant writes), or explicit files. Explicit files override
what the package provides. :func:`validate_moveit_config` checks that every piece the arm
backend needs is there and names the missing one (:class:`MoveItConfigError`).

ROS-free apart from ``ament_index_python`` (only to find a package) and ``xacro`` (only
for ``.xacro`` files); both are imported when needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml


class MoveItConfigError(ValueError):
    """The MoveIt configuration is incomplete or unreadable; the message names the piece."""


@dataclass(frozen=True)
class MoveItConfigSource:
    """Where the MoveIt configuration comes from (interaction node parameters ``moveit_*``).

    Attributes:
        package: a MoveIt config package, e.g. ``moveit_resources_panda_moveit_config``.
        urdf, srdf, kinematics, joint_limits, pilz_cartesian_limits: explicit files
            (override the package's).
        planning_pipelines: ``<name>_planning.yaml`` files; the pipeline name is the file
            name without ``_planning.yaml`` (``ompl_planning.yaml`` -> ``ompl``).
        moveit_cpp: the moveit_py parameter file (``config/robots/moveit_py_panda.yaml``).
        xacro_args: ``name:=value`` mappings for a ``.xacro`` URDF.
    """

    package: str = ""
    urdf: str = ""
    srdf: str = ""
    kinematics: str = ""
    joint_limits: str = ""
    pilz_cartesian_limits: str = ""
    planning_pipelines: tuple[str, ...] = ()
    moveit_cpp: str = ""
    xacro_args: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not (self.package or self.urdf or self.srdf or self.kinematics or self.joint_limits
                    or self.pilz_cartesian_limits or self.planning_pipelines or self.moveit_cpp)


def package_share_directory(package: str) -> Path:
    """share/<package> of an installed ROS package (ament index), or a clear error."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError as exc:  # pragma: no cover - ament_index_python ships with every ROS 2 set-up
        raise MoveItConfigError(f"cannot look up package {package!r}: ament_index_python missing ({exc})") from exc
    try:
        return Path(get_package_share_directory(package))
    except (PackageNotFoundError, OSError) as exc:  # OSError: AMENT_PREFIX_PATH unset
        raise MoveItConfigError(
            f"MoveIt config package {package!r} not found on the ament index (AMENT_PREFIX_PATH); install it "
            f"(e.g. sudo apt install ros-$ROS_DISTRO-moveit-resources-panda-moveit-config) and source its setup file"
        ) from exc


def package_files(package: str) -> dict:
    """The files of a MoveIt config package, by role (as MoveItConfigsBuilder finds them)."""
    share = package_share_directory(package)
    config = share / "config"
    files: dict = {}
    assistant = share / ".setup_assistant"
    if assistant.is_file():
        setup = (yaml.safe_load(assistant.read_text()) or {}).get("moveit_setup_assistant_config", {})
        urdf, srdf = setup.get("URDF", {}), setup.get("SRDF", {})
        if urdf.get("relative_path"):
            base = package_share_directory(urdf["package"]) if urdf.get("package") else share
            files["urdf"] = base / urdf["relative_path"]
            files["xacro_args"] = tuple(str(urdf.get("xacro_args", "")).split())
        if srdf.get("relative_path"):
            files["srdf"] = share / srdf["relative_path"]
    if "urdf" not in files:
        found = sorted(config.glob("*.urdf")) + sorted(config.glob("*.urdf.xacro"))
        if len(found) == 1:
            files["urdf"] = found[0]
    if "srdf" not in files:
        found = sorted(config.glob("*.srdf")) + sorted(config.glob("*.srdf.xacro"))
        if len(found) == 1:
            files["srdf"] = found[0]
    for role, name in (("kinematics", "kinematics.yaml"), ("joint_limits", "joint_limits.yaml"),
                       ("pilz_cartesian_limits", "pilz_cartesian_limits.yaml")):
        if (config / name).is_file():
            files[role] = config / name
    files["planning_pipelines"] = tuple(sorted(config.glob("*_planning.yaml")))
    return files


def _read_description(path: Path, xacro_args: Iterable[str], what: str) -> str:
    if not path.is_file():
        raise MoveItConfigError(f"{what} file {path} does not exist")
    if path.name.endswith(".xacro"):
        try:
            import xacro  # type: ignore[import-not-found]
        except ImportError as exc:
            raise MoveItConfigError(f"{what} {path} is a xacro file and the xacro package is not installed "
                                    f"(sudo apt install ros-$ROS_DISTRO-xacro), or pass an expanded .urdf") from exc
        mappings = dict(a.split(":=", 1) for a in xacro_args if ":=" in a)
        return xacro.process_file(str(path), mappings=mappings).toxml()
    text = path.read_text()
    if "<robot" not in text:
        raise MoveItConfigError(f"{what} file {path} holds no <robot> element")
    return text


def _read_yaml(path: Path, what: str) -> dict:
    if not path.is_file():
        raise MoveItConfigError(f"{what} file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MoveItConfigError(f"{what} file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise MoveItConfigError(f"{what} file {path} does not hold a mapping")
    return data


def pipeline_name(path: Path) -> str:
    if not path.name.endswith("_planning.yaml"):
        raise MoveItConfigError(f"planning pipeline file {path} must be named <pipeline>_planning.yaml")
    return path.name[: -len("_planning.yaml")]


def build_moveit_config(source: MoveItConfigSource) -> dict:
    """The ``config_dict`` for ``MoveItPy`` (see the module docstring for its keys)."""
    files = package_files(source.package) if source.package else {}
    for role in ("urdf", "srdf", "kinematics", "joint_limits", "pilz_cartesian_limits"):
        if getattr(source, role):
            files[role] = Path(getattr(source, role))
    if source.planning_pipelines:
        files["planning_pipelines"] = tuple(Path(p) for p in source.planning_pipelines)
    xacro_args = source.xacro_args or files.get("xacro_args", ())
    out: dict = {}
    if "urdf" in files:
        out["robot_description"] = _read_description(Path(files["urdf"]), xacro_args, "URDF (robot_description)")
    if "srdf" in files:
        out["robot_description_semantic"] = _read_description(Path(files["srdf"]), xacro_args,
                                                              "SRDF (robot_description_semantic)")
    if "kinematics" in files:
        out["robot_description_kinematics"] = _read_yaml(Path(files["kinematics"]), "kinematics")
    planning: dict = {}
    if "joint_limits" in files:
        planning.update(_read_yaml(Path(files["joint_limits"]), "joint limits"))
    if "pilz_cartesian_limits" in files:
        planning.update(_read_yaml(Path(files["pilz_cartesian_limits"]), "Pilz Cartesian limits"))
    if planning:
        out["robot_description_planning"] = planning
    names = []
    for path in files.get("planning_pipelines", ()):
        name = pipeline_name(Path(path))
        out[name] = _read_yaml(Path(path), f"planning pipeline {name!r}")
        names.append(name)
    if names:
        out["planning_pipelines"] = {"pipeline_names": names}
    if source.moveit_cpp:
        cpp = _read_yaml(Path(source.moveit_cpp), "moveit_cpp (moveit_py parameters)")
        listed = cpp.get("planning_pipelines", {}).get("pipeline_names") if isinstance(
            cpp.get("planning_pipelines"), dict) else None
        out.update(cpp)
        if listed is not None:
            out["planning_pipelines"] = {"pipeline_names": list(listed)}
    return out


def validate_moveit_config(config: dict, pipelines: Iterable[str]) -> None:
    """Raise :class:`MoveItConfigError` naming the first piece the arm backend needs that is missing.

    ``pipelines``: the planning pipelines the robot's planners use (e.g. ``ompl`` and
    ``pilz_industrial_motion_planner``).
    """
    for key, what, how in (
        ("robot_description", "the robot's URDF", "moveit_urdf or moveit_config_package"),
        ("robot_description_semantic", "the robot's SRDF", "moveit_srdf or moveit_config_package"),
        ("robot_description_kinematics", "the kinematics solvers (kinematics.yaml)",
         "moveit_kinematics or moveit_config_package"),
    ):
        if not config.get(key):
            raise MoveItConfigError(f"MoveIt configuration has no {key} ({what}); set {how}")
    listed = (config.get("planning_pipelines") or {}).get("pipeline_names") or []
    for name in dict.fromkeys(pipelines):
        if name not in listed:
            raise MoveItConfigError(f"planning pipeline {name!r} is not in planning_pipelines.pipeline_names "
                                    f"({listed}); list it in the moveit_cpp file (moveit_cpp_config)")
        if not isinstance(config.get(name), dict):
            raise MoveItConfigError(f"MoveIt configuration has no planning pipeline {name!r} "
                                    f"({name}_planning.yaml); add it to moveit_planning_pipelines")
        if name == "pilz_industrial_motion_planner":
            limits = (config.get("robot_description_planning") or {}).get("cartesian_limits")
            if not limits:
                raise MoveItConfigError("the Pilz planner needs robot_description_planning.cartesian_limits "
                                        "(pilz_cartesian_limits.yaml); set moveit_pilz_cartesian_limits")
    if "robot_description_planning" not in config or "joint_limits" not in config["robot_description_planning"]:
        raise MoveItConfigError("MoveIt configuration has no robot_description_planning.joint_limits "
                                "(joint_limits.yaml); set moveit_joint_limits or moveit_config_package")


def moveit_config_for(source: MoveItConfigSource, pipelines: Iterable[str]) -> dict:
    """:func:`build_moveit_config`, then :func:`validate_moveit_config`."""
    config = build_moveit_config(source)
    validate_moveit_config(config, pipelines)
    return config
