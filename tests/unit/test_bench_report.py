"""bench/bench_report.py: the table every bench prints and the JSON it writes with ``--json PATH``."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load():
    """bench/bench_report.py as the benches import it (bench/ is no package; it is on sys.path when they run)."""
    if "bench_report" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_report", BENCH / "bench_report.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_report"] = module  # before executing it: dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["bench_report"]


br = _load()


def _strict_json(path: Path):
    """The file parsed as strict JSON (NaN / Infinity rejected)."""
    def reject(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(path.read_text(), parse_constant=reject)


def test_format_table_aligns_formats_and_marks_missing_values():
    rows = [{"size": "640x480", "ms": 34.567, "calls": 30},
            {"size": "320x240", "ms": float("nan"), "calls": 5},
            {"size": "80x60", "calls": None}]
    text = br.format_table(rows, [br.Column("size"), br.Column("ms", "median ms", ".1f"), br.Column("calls", fmt="d")],
                           title="round trips")
    lines = text.splitlines()
    assert lines[0] == "round trips"
    assert [c.strip() for c in lines[1].strip("|").split("|")] == ["size", "median ms", "calls"]
    assert lines[2] == "|---------|----------:|------:|"  # numeric columns right-aligned
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[3:]]
    assert cells == [["640x480", "34.6", "30"], ["320x240", "-", "5"], ["80x60", "-", "-"]]
    assert len({len(line) for line in lines[1:]}) == 1  # every row as wide as the header
    assert lines[3] == "| 640x480 |      34.6 |    30 |"


def test_format_table_needs_a_column():
    with pytest.raises(ValueError, match="at least one column"):
        br.format_table([{"a": 1}], [])


def test_jsonable_converts_numpy_paths_dataclasses_and_non_finite_values():
    @dataclass
    class Config:
        scale: float = 1.5
        sizes: tuple = (1, 2)

    out = br.jsonable({1: np.float32(0.5), "n": np.int64(3), "arr": np.arange(3), "nan": float("nan"),
                       "inf": np.float64(np.inf), "flag": np.bool_(True), "path": Path("/tmp/x"), "cfg": Config(),
                       "tuple": (1, (2.0, float("-inf")))})
    assert out == {"1": 0.5, "n": 3, "arr": [0, 1, 2], "nan": None, "inf": None, "flag": True, "path": "/tmp/x",
                   "cfg": {"scale": 1.5, "sizes": [1, 2]}, "tuple": [1, [2.0, None]]}
    assert type(out["n"]) is int and type(out["flag"]) is bool
    with pytest.raises(TypeError, match="cannot write a object"):
        br.jsonable({"x": object()})


def test_record_writes_the_table_settings_load_and_times_as_strict_json(tmp_path, capsys):
    args = argparse.Namespace(calls=5, world="simple", json=str(tmp_path / "out" / "figures.json"))
    record = br.BenchRecord("demo_bench", args)
    rows = [{"size": "640x480", "median_ms": 12.25, "p90_ms": float("nan")}]
    text = record.table("round_trip", rows, [br.Column("size"), br.Column("median_ms", "median ms", ".1f"),
                                             br.Column("p90_ms", "p90 ms", ".1f")], title="segment_image")
    record.add(note="toy", counts=np.array([1, 2]))
    t = time.process_time()
    while time.process_time() - t < 0.05:  # some CPU work to be counted
        pass
    written = record.finish(args.json)

    printed = capsys.readouterr().out
    assert text in printed and "| 640x480 |      12.2 |      - |" in text
    assert "# demo_bench:" in printed and "load average" in printed and f"wrote {args.json}" in printed
    data = _strict_json(written)
    assert written == Path(args.json)
    assert data["bench"] == "demo_bench" and data["complete"] is True
    assert data["settings"] == {"calls": 5, "world": "simple"}  # the output path is not a setting
    assert data["tables"]["round_trip"] == {
        "title": "segment_image",
        "columns": [{"key": "size", "header": "size"}, {"key": "median_ms", "header": "median ms"},
                    {"key": "p90_ms", "header": "p90 ms"}],
        "rows": [{"size": "640x480", "median_ms": 12.25, "p90_ms": None}]}  # raw values, not the printed ones
    assert data["figures"] == {"note": "toy", "counts": [1, 2]}
    assert len(data["load_average"]["start"]) == 3 and len(data["load_average"]["end"]) == 3
    assert data["cpu_s"] >= 0.04 and data["wall_s"] >= data["cpu_s"] * 0.5 and data["cpu_children_s"] >= 0
    assert data["cpu_count"] >= 1 and data["started_utc"].endswith("+00:00")
    assert [p.name for p in written.parent.iterdir()] == ["figures.json"]  # no temp file left behind


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_record_names_the_git_commit():
    head = subprocess.run(["git", "-C", str(BENCH), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    state = br.git_state()
    assert state["commit"] == head.stdout.strip() and isinstance(state["dirty"], bool)
    assert br.git_state(BENCH / "no_such_folder") == {"commit": None, "dirty": None}


def test_partial_record_and_no_path(tmp_path):
    record = br.BenchRecord("demo_bench", {"steps": 3})
    assert record.write("") is None and not list(tmp_path.iterdir())
    path = record.write(tmp_path / "partial.json", complete=False)
    assert _strict_json(path)["complete"] is False


def test_cpu_time_of_another_process():
    proc = subprocess.Popen(["sleep", "5"])
    try:
        cpu = br.process_cpu_seconds(proc.pid)
        assert cpu is not None and 0 <= cpu < 1
    finally:
        proc.kill()
        proc.wait()
    assert br.process_cpu_seconds(proc.pid) is None  # gone


def _bench_scripts() -> list:
    scripts = []
    for path in sorted(BENCH.glob("*.py")):
        tree = ast.parse(path.read_text())
        is_script = any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
        if not is_script:
            continue
        scripts.append(pytest.param(path, id=path.name))
    return scripts


@pytest.mark.parametrize("script", _bench_scripts())
def test_every_bench_accepts_json(script: Path):
    """Each bench script declares ``--json`` (read from its source: importing the benches would load torch, ROS
    and the simulator)."""
    tree = ast.parse(script.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    shared = any(isinstance(c.func, ast.Name) and c.func.id == "add_json_argument" for c in calls)
    own = any(isinstance(c.func, ast.Attribute) and c.func.attr == "add_argument" and c.args
              and isinstance(c.args[0], ast.Constant) and c.args[0].value == "--json" for c in calls)
    assert shared or own, f"{script.name} has no --json option"


def test_json_argument_parses():
    parser = argparse.ArgumentParser()
    br.add_json_argument(parser)
    assert parser.parse_args([]).json == ""
    assert parser.parse_args(["--json", "out.json"]).json == "out.json"
    assert not math.isnan(br.cpu_seconds()[0])
