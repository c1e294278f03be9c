"""package.xml declares what the package imports, by keys that rosdep can resolve, and nothing unused.

Every module imported anywhere in ``selfsup_perception/`` or ``launch/`` (at module level or
lazily inside a function, optional imports included: on a robot they are there) maps to a
rosdep key that package.xml declares; every declared key is imported (or needed by the
interface definitions). Keys were checked against ros/rosdistro: ROS packages resolve
through the distribution index (their package name is the key); Python libraries through
``rosdep/python.yaml`` (python3-numpy, python3-opencv, python3-scipy, python3-skimage,
python3-matplotlib, python3-yaml, python3-tqdm, python3-pybullet-pip, python3-pytest there;
python3-torch added by ros/rosdistro#37485, python3-pytorch-pip is only an end-of-life
alias). pycocotools, safetensors and rosbags have no key: they must stay pip requirements.
"""

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "selfsup_perception"

# Python import name -> rosdep key
PYTHON_KEYS = {
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "scipy": "python3-scipy",
    "skimage": "python3-skimage",
    "matplotlib": "python3-matplotlib",
    "yaml": "python3-yaml",
    "tqdm": "python3-tqdm",
    "torch": "python3-torch",
    "pybullet": "python3-pybullet-pip",
    "pybullet_data": "python3-pybullet-pip",
}
# ROS 2 Python modules whose package name differs from the import name
ROS_MODULE_PACKAGES = {"moveit": "moveit_py", "tf2_ros": "tf2_ros_py"}
ROS_PACKAGES = {
    "rclpy", "rcl_interfaces", "std_srvs", "std_msgs", "sensor_msgs", "geometry_msgs", "builtin_interfaces",
    "action_msgs", "lifecycle_msgs", "tf2_msgs", "tf2_ros_py", "message_filters", "cv_bridge",
    "ament_index_python", "launch", "launch_ros", "moveit_py", "xacro",
}
# no rosdep key exists (ros/rosdistro rosdep/*.yaml): installed with pip from requirements.txt
PIP_ONLY = {"pycocotools": "pycocotools", "safetensors": "safetensors", "rosbags": "rosbags",
            # MCAP chunk codecs for truncated-bag recovery (ros/bag_files.py): installed with rosbags
            "lz4": "rosbags", "backports": "rosbags", "compression": "rosbags"}
# declared for reasons other than an import
NOT_IMPORTED = {
    "rosidl_default_runtime": "runtime of the generated interfaces",
    "action_msgs": "the generated action interfaces depend on it",
    "lifecycle_msgs": "rclpy.lifecycle (the inference and trainer nodes) serves its services",
}
# keys that do not exist, named in issue 10
INVALID_KEYS = {"tf2_ros", "python3-safetensors-pip", "python3-rosbags-pip", "python3-pycocotools"}


def declared() -> dict[str, set[str]]:
    root = ET.parse(ROOT / "package.xml").getroot()
    out: dict[str, set[str]] = {}
    for el in root:
        if el.tag.endswith("depend"):
            out.setdefault(el.tag, set()).add(el.text.strip())
    return out


def imported_modules() -> dict[str, set[str]]:
    """Top-level module name -> files importing it (absolute imports, anywhere in the file)."""
    out: dict[str, set[str]] = {}
    files = list((ROOT / PACKAGE).rglob("*.py")) + list((ROOT / "launch").glob("*.py"))
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                out.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return out


def third_party(modules) -> dict[str, set[str]]:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    return {m: f for m, f in modules.items() if m not in stdlib and m != PACKAGE}


def key_of(module: str) -> str:
    return PYTHON_KEYS.get(module) or ROS_MODULE_PACKAGES.get(module) or module


def test_every_import_is_declared_with_a_resolvable_key():
    deps = declared()
    runtime = deps.get("depend", set()) | deps.get("exec_depend", set())
    missing = {}
    for module, files in third_party(imported_modules()).items():
        if module in PIP_ONLY:
            continue
        key = key_of(module)
        assert key in PYTHON_KEYS.values() or key in ROS_PACKAGES, \
            f"{module} (imported by {sorted(files)[:3]}) has no known rosdep key; add it to this test after checking ros/rosdistro"
        if key not in runtime:
            missing[key] = sorted(files)[:3]
    assert not missing, f"imported but not declared in package.xml: {missing}"
    assert "lifecycle_msgs" in runtime, "rclpy.lifecycle (inference and trainer nodes) needs lifecycle_msgs"


def test_nothing_declared_is_unused_or_invalid():
    deps = declared()
    runtime = deps.get("depend", set()) | deps.get("exec_depend", set())
    used = {key_of(m) for m in third_party(imported_modules())}
    interface_deps = set()
    for path in list(ROOT.glob("msg/*.msg")) + list(ROOT.glob("srv/*.srv")) + list(ROOT.glob("action/*.action")):
        for line in path.read_text().splitlines():
            field = line.split("#")[0].strip().split()
            if field and "/" in field[0]:
                interface_deps.add(field[0].split("/")[0])
    unused = runtime - used - interface_deps - set(NOT_IMPORTED)
    assert not unused, f"declared in package.xml but never imported: {sorted(unused)}"
    every = set().union(*deps.values())
    assert not every & INVALID_KEYS, f"keys that rosdep cannot resolve: {sorted(every & INVALID_KEYS)}"
    assert not every & set(PIP_ONLY), "pip-only libraries have no rosdep key"
    for key in runtime:
        assert key in ROS_PACKAGES or key in PYTHON_KEYS.values() or key == "rosidl_default_runtime", key


def test_pip_only_libraries_are_pip_requirements():
    requirements = (ROOT / "requirements.txt").read_text().lower()
    imported = third_party(imported_modules())
    for module, dist in PIP_ONLY.items():
        if module in imported:
            assert f"\n{dist}==" in requirements, f"{dist} is imported, has no rosdep key, and is not in requirements.txt"


def test_the_check_sees_lazy_imports():
    """Imports inside functions count (moveit, tqdm and pycocotools are imported lazily or in core)."""
    modules = imported_modules()
    assert "moveit" in modules and "tqdm" in modules and "pycocotools" in modules
