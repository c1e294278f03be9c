"""`colcon build` in a workspace, then a node started from the install space answers over DDS.

The build runs as on a robot (tools/colcon_build.sh: colcon from PyPI, against the ROS 2
wheels of .venv instead of /opt/ros/<distro>) in a workspace under the temp directory
(src/selfsup_perception links to this tree), which is kept between runs so a second build
is incremental. The inference node is then started from what the
build installed: its executable under lib/selfsup_perception/, its parameters from
share/selfsup_perception/config/, its Python package from the install's site-packages (the
source tree is not on its path). A client process with the same environment (a user who
sourced install/setup.bash: tests/ros/install_space_client.py) calls its services over DDS.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest


# a first build from scratch takes minutes on a loaded 2-core machine (pytest.ini allows 300 s per test)
pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
# Outside the source tree (its src/selfsup_perception links back to the tree: no link loop inside it),
# one per checkout, kept between runs so the build is incremental.
WORKSPACE = Path(os.environ.get("SELFSUP_COLCON_WS") or Path(tempfile.gettempdir()) / (
    "selfsup_colcon_ws_" + hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]))
NODES = ["sim_world_node", "camera_capture_node", "interaction_node", "labeler_node", "trainer_node",
         "inference_node", "registration_node"]


def colcon_executable() -> str | None:
    return os.environ.get("SELFSUP_COLCON") or shutil.which("colcon") or next(
        (str(p) for p in [ROOT / ".venv-colcon" / "bin" / "colcon"] if p.exists()), None)


@pytest.fixture(scope="module")
def install_space():
    colcon = colcon_executable()
    if colcon is None:
        pytest.skip("colcon is not installed: `make colcon` (or `make test`) puts it into .venv-colcon")
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    t0 = time.monotonic()
    done = subprocess.run(["bash", str(ROOT / "tools" / "colcon_build.sh"), str(VENV), colcon, str(WORKSPACE)],
                          capture_output=True, text=True, timeout=1100)
    log = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, f"colcon build failed:\n{log}"
    print(f"colcon build: {time.monotonic() - t0:.1f} s")
    return WORKSPACE / "install"


def installed_env(install: Path) -> dict:
    """The environment of `source install/setup.bash`, with the source tree off the Python path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH")}
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
    env["AMENT_PREFIX_PATH"] = str(VENV)
    out = subprocess.run(["bash", "-c", f"source {install / 'setup.bash'} && env -0"], env=env,
                         capture_output=True, timeout=60, check=True).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def trained_checkpoint(root: Path) -> None:
    """One instance segmentation version in root/checkpoints (no promotion ledger: the newest valid one is served)."""
    from selfsup_perception.core.learning.tasks.instance import InstanceSegmentationTask
    from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig

    trainer = Trainer(InstanceSegmentationTask(), TrainerConfig(input_size=(64, 48), log_every=0))
    assert trainer.save_checkpoint(root / "checkpoints").name == "v00001"


def test_colcon_build_installs_everything(install_space):
    prefix = install_space / "selfsup_perception"
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for node in NODES:
        exe = prefix / "lib" / "selfsup_perception" / node
        assert exe.is_file() and os.access(exe, os.X_OK), f"{exe} missing or not executable"
    share = prefix / "share" / "selfsup_perception"
    for path in ["package.xml", "launch/interaction.launch.py", "launch/pretraining.launch.py",
                 "config/inference.yaml", "config/interaction.yaml", "config/robots/panda.yaml", "msg/RgbdView.msg"]:
        assert (share / path).is_file(), f"{path} not installed under {share}"
    for path in ["selfsup_perception/__init__.py", "selfsup_perception/nodes/inference_node.py",
                 "selfsup_perception/core/types.py", "selfsup_perception/msg/__init__.py",
                 "selfsup_perception/srv/_segment_image.py", "selfsup_perception/action/__init__.py"]:
        assert (site / path).is_file(), f"{path} not installed under {site}"
    assert (install_space / "share" / "ament_index" / "resource_index" / "packages" / "selfsup_perception").exists() \
        or (prefix / "share" / "ament_index" / "resource_index" / "packages" / "selfsup_perception").exists()


def test_node_from_the_install_space_serves_over_dds(install_space, tmp_path):
    env = installed_env(install_space)
    prefix = install_space / "selfsup_perception"
    where = subprocess.run([str(VENV / "bin" / "python"), "-c",
                            "import selfsup_perception.nodes.inference_node as m, selfsup_perception.msg as g; "
                            "print(m.__file__); print(g.__file__)"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    for line in where.stdout.split():
        assert line.startswith(str(prefix)), f"imported {line}, not from the install space {prefix}"
    # the installed config names a relative checkpoint folder: run where it holds a (tiny) trained model
    trained_checkpoint(tmp_path / "data")
    exe = prefix / "lib" / "selfsup_perception" / "inference_node"
    config = prefix / "share" / "selfsup_perception" / "config" / "inference.yaml"
    log = open(tmp_path / "node.log", "w")
    proc = subprocess.Popen([str(exe), "--ros-args", "--params-file", str(config), "-r", "__node:=installed_inference"],
                            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # the client also runs on the installed interfaces (a user who sourced install/setup.bash)
        client = subprocess.run([str(VENV / "bin" / "python"), str(Path(__file__).with_name("install_space_client.py")),
                                 "installed_inference"], env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=300)
        node_log = (tmp_path / "node.log").read_text()[-3000:]
        assert client.returncode == 0, f"{client.stderr[-3000:]}\nnode log:\n{node_log}"
        answer = json.loads(client.stdout.strip().splitlines()[-1])
        assert "error" not in answer, f"{answer['error']}\nnode log:\n{node_log}"
        assert answer["interfaces_from"].startswith(str(prefix))
        assert answer["state"] == "active"
        seg = answer["segment"]
        assert seg["success"] and seg["model_version"] == "instance_segmentation/v1", seg["message"]
        assert seg["label_size"] == [8, 8]
        assert not answer["load"]["success"] and "descriptors model" in answer["load"]["message"]
        assert proc.poll() is None, "the installed node died while serving"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
