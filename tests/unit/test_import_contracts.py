"""The architecture's import rules (.importlinter) hold, and a violation is caught.

Rules: core imports neither ROS, message packages, the simulator, nodes nor ros adapters;
serving never imports training; product nodes do not import the simulator; lower layers never
import higher ones. Also: no import cycles between modules of the package.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed in this environment")


def _lint(package_parent: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(package_parent))
    return subprocess.run([str(LINT), "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=package_parent,
                          env=env, capture_output=True, text=True, timeout=240)


def test_import_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_an_rclpy_import_in_core_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "selfsup_perception", tmp_path / "selfsup_perception",
                    ignore=shutil.ignore_patterns("__pycache__"))
    victim = tmp_path / "selfsup_perception" / "core" / "labeling" / "optical_flow.py"
    victim.write_text(victim.read_text() + "\nimport rclpy  # a deliberate violation\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "core imports neither ROS" in result.stdout and "BROKEN" in result.stdout
    assert "selfsup_perception.core.labeling.optical_flow -> rclpy" in result.stdout.replace("\n", " ")


def test_serving_importing_a_training_task_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "selfsup_perception", tmp_path / "selfsup_perception",
                    ignore=shutil.ignore_patterns("__pycache__"))
    victim = tmp_path / "selfsup_perception" / "core" / "learning" / "serving" / "inference.py"
    victim.write_text(victim.read_text() + "\nfrom selfsup_perception.core.learning.tasks import instance  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "serving (checkpoints, model registry, inference) imports models, never training" in \
        result.stdout.replace("\n", " ")


def test_no_import_cycles_between_modules():
    grimp = pytest.importorskip("grimp")
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph("selfsup_perception", cache_dir=None)
    modules = sorted(graph.modules)
    edges = {m: {n for n in graph.find_modules_directly_imported_by(m) if n in graph.modules} for m in modules}
    # Tarjan's strongly connected components: a component of more than one module is a cycle.
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            # a package importing its own submodule (``__init__`` re-exports) is not a design cycle
            if len(comp) > 1 and not all(c.startswith(min(comp, key=len) + ".") or c == min(comp, key=len)
                                         for c in comp):
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for m in modules:
        if m not in index:
            visit(m)
    assert not cycles, f"import cycles: {cycles}"
