"""Start the node graph as separate processes (what ``ros2 launch`` does, for installs without it).

Each node runs as ``python -m <module> --ros-args -r __node:=<name> --params-file <yaml> -p k:=v``,
so nodes talk over real DDS between processes exactly as under ros2 launch. The launcher
forwards each node's output with a ``[name]`` prefix, stops everything on exit (SIGINT,
then SIGTERM, then SIGKILL after timeouts) and reports nodes that died.

The graph outlives a node: with ``respawn`` (the default of ``main``; the launch files set
``respawn=True`` too) a node that exits is logged with why (exit code or signal and its last
output lines) and restarted after a back-off (1 s, doubling up to 30 s while it keeps dying
within ``stable_s`` of its start, back to 1 s once it has run that long); the other nodes keep
running untouched.

Usage: ``python -m selfsup_perception.launcher [--no-sim] [--no-respawn] [-p node.param:=value ...]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from selfsup_perception.graph import (
    NodeSpec,
    config_dir,
    interaction_graph,
    learning_graph,
    moveit_overrides,
    pretraining_graph,
    data_overrides,
    merge_overrides,
    pretraining_overrides,
)


def _format_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_format_value(x) for x in v) + "]"
    if isinstance(v, str) and not v:
        return '""'  # rcl refuses `-p name:=` with nothing after it
    return str(v)


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the launcher dies, however it dies (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so context managers stop the graph (e.g. under `timeout`)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def node_command(spec: NodeSpec, overrides: Optional[dict] = None, python: str = sys.executable) -> list[str]:
    cmd = [python, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}",
           "--params-file", str(config_dir() / spec.params_file)]
    for k, v in {**spec.overrides, **(overrides or {})}.items():
        cmd += ["-p", f"{k}:={_format_value(v)}"]
    return cmd


def describe_exit(returncode: int) -> str:
    """'exit code N' or 'killed by SIGKILL' (Popen reports signals as negative codes)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class GraphProcess:
    """A running node graph; use as a context manager. With ``respawn``, dead nodes are restarted."""

    def __init__(self, specs: Sequence[NodeSpec], overrides: Optional[dict[str, dict]] = None,
                 log_dir: Optional[Path] = None, echo: bool = True, respawn: bool = False,
                 backoff_s: tuple[float, float] = (1.0, 30.0), stable_s: float = 30.0):
        self.specs = list(specs)
        self.overrides = overrides or {}
        self.log_dir = Path(log_dir) if log_dir else None
        self.echo = echo
        self.respawn = respawn
        self.backoff_s = backoff_s
        self.stable_s = stable_s
        self.procs: dict[str, subprocess.Popen] = {}
        self._threads: list[threading.Thread] = []
        self.logs: dict[str, list[str]] = {}
        self.restarts: dict[str, int] = {}
        self.events: list[str] = []  # one line per death / restart, also printed to stderr
        self._started_at: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: Optional[threading.Thread] = None

    def _spawn(self, spec: NodeSpec) -> None:
        proc = subprocess.Popen(node_command(spec, self.overrides.get(spec.name)), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1, env=os.environ.copy(),
                                start_new_session=True, preexec_fn=_die_with_parent)
        with self._lock:
            self.procs[spec.name] = proc
            self._started_at[spec.name] = time.monotonic()
            self.logs.setdefault(spec.name, [])
        t = threading.Thread(target=self._pump, args=(spec.name, proc), daemon=True)
        t.start()
        self._threads.append(t)

    def start(self) -> "GraphProcess":
        for spec in self.specs:
            self._spawn(spec)
        if self.respawn:
            self._supervisor = threading.Thread(target=self._supervise, name="respawn", daemon=True)
            self._supervisor.start()
        return self

    def _event(self, text: str) -> None:
        self.events.append(text)
        sys.stderr.write(f"[launcher] {text}\n")
        sys.stderr.flush()

    def _supervise(self) -> None:
        """Restart nodes that exit, with back-off; never touches the nodes that are running."""
        due: dict[str, float] = {}
        specs = {s.name: s for s in self.specs}
        while not self._stopping.wait(0.2):
            now = time.monotonic()
            for name, proc in list(self.procs.items()):
                if proc.poll() is None or name in due:
                    continue
                lived = now - self._started_at.get(name, now)
                lo, hi = self.backoff_s
                delay = lo if lived >= self.stable_s else min(self._delay.get(name, lo / 2) * 2, hi)
                self._delay[name] = delay
                last = " | ".join(self.logs.get(name, [])[-3:])
                self._event(f"{name} died ({describe_exit(proc.returncode)}) after {lived:.1f} s; "
                            f"restarting in {delay:.1f} s; last output: {last or '(none)'}")
                due[name] = now + delay
            for name, when in list(due.items()):
                if now >= when and not self._stopping.is_set():
                    del due[name]
                    self._spawn(specs[name])
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    self._event(f"{name} restarted (restart {self.restarts[name]})")

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        log_file = None
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_file = open(self.log_dir / f"{name}.log", "a")
        for line in proc.stdout:  # type: ignore[union-attr]
            self.logs[name].append(line.rstrip())
            if len(self.logs[name]) > 2000:
                del self.logs[name][:1000]
            if self.echo:
                sys.stdout.write(f"[{name}] {line}")
            if log_file:
                log_file.write(line)
                log_file.flush()
        if log_file:
            log_file.close()

    def dead(self) -> dict[str, int]:
        """Nodes that exited, with their return codes."""
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def stop(self, timeout_s: float = 10.0) -> dict[str, int]:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=2.0)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            alive = [p for p in self.procs.values() if p.poll() is None]
            if not alive:
                break
            for p in alive:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and any(p.poll() is None for p in alive):
                time.sleep(0.1)
        for t in self._threads:
            t.join(timeout=2.0)
        return {n: p.returncode for n, p in self.procs.items()}

    def __enter__(self) -> "GraphProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_overrides(items: Sequence[str]) -> dict[str, dict]:
    """``node.param:=value`` strings -> {node: {param: value}} (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, dict] = {}
    for item in items:
        if ":=" not in item or "." not in item.split(":=")[0]:
            raise ValueError(f"override {item!r} must look like node.param:=value")
        key, value = item.split(":=", 1)
        node, param = key.split(".", 1)
        out.setdefault(node, {})[param] = yaml.safe_load(value)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-sim", action="store_true", help="do not start the simulated world (real robot)")
    parser.add_argument("--no-learning", action="store_true", help="without the trainer and inference nodes")
    parser.add_argument("--pretraining", action="store_true",
                        help="registered views and region-consistency pre-training instead of interaction")
    parser.add_argument("--data-dir", default="data", help="root of the folders the nodes hand data through "
                        "(interactions/, registration/, checkpoints/, bags/)")
    parser.add_argument("--no-respawn", action="store_true",
                        help="stop the whole graph when a node dies (default: restart it with back-off)")
    parser.add_argument("-p", "--param", action="append", default=[], help="node.param:=value override")
    parser.add_argument("--robot-config", default="", help="arm through MoveIt 2: the robot YAML "
                        "(config/robots/panda.yaml); with --moveit-config-package or -p interaction.moveit_*:=file")
    parser.add_argument("--moveit-config-package", default="", help="MoveIt config package (ament index), e.g. "
                        "moveit_resources_panda_moveit_config")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    with_sim = not args.no_sim
    overrides = data_overrides(args.data_dir)
    if args.pretraining:
        specs = pretraining_graph(with_sim)
        overrides = merge_overrides(overrides, pretraining_overrides(with_sim, args.data_dir))
    else:
        specs = (interaction_graph if args.no_learning else learning_graph)(with_simulator=with_sim)
    if args.robot_config or args.moveit_config_package:
        overrides = merge_overrides(overrides, moveit_overrides(args.robot_config,
                                                                moveit_config_package=args.moveit_config_package))
    overrides = merge_overrides(overrides, parse_overrides(args.param))
    graph = GraphProcess(specs, overrides, respawn=not args.no_respawn)
    graph.start()
    try:
        while graph.respawn or not graph.dead():
            time.sleep(0.5)
        print(f"nodes exited: {graph.dead()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        graph.stop()


if __name__ == "__main__":
    sys.exit(main())
