"""What every bench reports: a printed table of its figures and, with ``--json PATH``, the same figures as JSON.

A bench builds one :class:`BenchRecord` from its parsed arguments at the start (that records the settings,
the load average, the wall and CPU clocks and the git commit), hands each set of figures to
:meth:`BenchRecord.table` (printed as a Markdown table; the raw values kept for the JSON) or
:meth:`BenchRecord.add` (figures that are no table row), and calls :meth:`BenchRecord.finish` at the end,
which prints one line of wall / CPU time and load and writes the JSON if asked::

    from bench_report import BenchRecord, Column  # bench/ is on sys.path when a bench runs as a script

    record = BenchRecord("my_bench", args)
    record.table("render", rows, [Column("size"), Column("median_ms", "median ms", ".1f")])
    record.finish(args.json)

The JSON (written atomically: temp file, fsync, rename; strict JSON: NaN and infinities become ``null``)::

    {"bench": ..., "complete": true, "settings": {...}, "tables": {key: {"title", "columns", "rows"}},
     "figures": {...}, "load_average": {"start": [1, 5, 15 min], "end": [...]}, "cpu_count": ...,
     "wall_s": ..., "cpu_s": ..., "cpu_children_s": ..., "git": {"commit", "dirty"}, "started_utc": ...}

``cpu_s`` is this process's CPU time (all its threads), less sensitive than wall time to other jobs on a
shared machine; ``cpu_children_s`` that of child processes it has waited for (e.g. the nodes a bench
started with ``GraphProcess``, once they exited). Also usable alone: :func:`format_table`,
:func:`write_json`, :func:`cpu_seconds`, :func:`process_cpu_seconds` (another process, e.g. a node serving the
bench's requests), :func:`git_state`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import resource
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from selfsup_perception.core.dataset.atomic_io import atomic_write_json

_REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Column:
    """One table column: the row key it shows, its header (default: the key) and a format spec for numbers."""

    key: str
    header: str = ""
    fmt: str = ""  # e.g. ".1f", "d", ",d"; "" = str()

    @property
    def title(self) -> str:
        return self.header or self.key


ColumnLike = Union[Column, str]


def _column(c: ColumnLike) -> Column:
    return c if isinstance(c, Column) else Column(str(c))


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        return "-"
    if fmt and isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[ColumnLike], title: str = "") -> str:
    """A Markdown table of ``rows`` (dicts) in ``columns``; numeric columns right-aligned, missing or
    non-finite values shown as ``-``. ``title`` (if any) is the line above the table."""
    cols = [_column(c) for c in columns]
    if not cols:
        raise ValueError("a table needs at least one column")
    cells = [[_cell(row.get(c.key), c.fmt) for c in cols] for row in rows]
    numeric = [any(_is_number(row.get(c.key)) for row in rows) for c in cols]
    widths = [max([len(c.title), 3] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w)
                                 for v, w, num in zip(values, widths, numeric)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if num else "-" * (w + 2) for w, num in zip(widths, numeric)) + "|"
    out = ([title] if title else []) + [line([c.title for c in cols]), rule] + [line(r) for r in cells]
    return "\n".join(out)


def jsonable(obj: Any) -> Any:
    """``obj`` with only JSON types: numpy scalars and arrays, tuples, sets, paths and dataclasses converted,
    dict keys made strings, NaN and infinities replaced by ``None`` (strict JSON has no NaN)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return [jsonable(v) for v in sorted(obj, key=str)]
    if isinstance(obj, Iterable) and not isinstance(obj, (bytes, bytearray)):
        return [jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, argparse.Namespace):
        return jsonable(vars(obj))
    raise TypeError(f"cannot write a {type(obj).__name__} as JSON: {obj!r}")


def write_json(path: Union[str, Path], payload: Any) -> Path:
    """Write ``payload`` (made :func:`jsonable`) to ``path`` atomically; the parent folder is created."""
    path = Path(path)
    atomic_write_json(path, jsonable(payload))
    return path


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds of this process, of its waited-for child processes): user + system time."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def process_cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU seconds so far of another running process (Linux ``/proc``); ``None`` if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is fields[0], utime fields[11]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def git_state(repo: Union[str, Path] = _REPO) -> dict:
    """{"commit": HEAD's hash, "dirty": tracked files changed} of ``repo``; ``None`` values if git cannot say."""
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(v, 2) for v in os.getloadavg()]


class BenchRecord:
    """The figures of one bench run with the conditions they were measured in (see the module docstring)."""

    def __init__(self, bench: str, settings: Union[argparse.Namespace, Mapping[str, Any], None] = None) -> None:
        raw = vars(settings) if isinstance(settings, argparse.Namespace) else dict(settings or {})
        self.bench = bench
        self.settings = {k: v for k, v in raw.items() if k != "json"}  # where the figures go is not a setting
        self.tables: dict[str, dict] = {}
        self.figures: dict[str, Any] = {}
        self.started_utc = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.load_start = load_average()
        self.git = git_state()
        self._wall0 = time.perf_counter()
        self._cpu0 = cpu_seconds()

    def table(self, key: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[ColumnLike], title: str = "",
              echo: bool = True) -> str:
        """Keep ``rows`` under ``tables[key]`` and return (and print, with ``echo``) them as a table."""
        cols = [_column(c) for c in columns]
        self.tables[key] = {"title": title, "columns": [{"key": c.key, "header": c.title} for c in cols],
                            "rows": [dict(r) for r in rows]}
        text = format_table(rows, cols, title)
        if echo:
            print(("\n" if title else "") + text, flush=True)
        return text

    def add(self, **figures: Any) -> None:
        """Figures that are no table row (counts, a verdict, a note)."""
        self.figures.update(figures)

    def elapsed(self) -> dict:
        """Wall and CPU seconds since the record was made."""
        cpu, children = cpu_seconds()
        return {"wall_s": time.perf_counter() - self._wall0, "cpu_s": cpu - self._cpu0[0],
                "cpu_children_s": children - self._cpu0[1]}

    def to_dict(self, complete: bool = True) -> dict:
        return {"bench": self.bench, "complete": complete, "settings": self.settings, "tables": self.tables,
                "figures": self.figures, "load_average": {"start": self.load_start, "end": load_average()},
                "cpu_count": os.cpu_count(), **self.elapsed(), "git": self.git, "started_utc": self.started_utc}

    def summary_line(self) -> str:
        e = self.elapsed()
        commit = (self.git["commit"] or "unknown")[:10] + (" (dirty)" if self.git["dirty"] else "")
        return (f"# {self.bench}: {e['wall_s']:.0f} s wall, {e['cpu_s']:.0f} s CPU in this process"
                + (f" + {e['cpu_children_s']:.0f} s in child processes" if e["cpu_children_s"] >= 0.5 else "")
                + f"; load average {self.load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
                  f"({os.cpu_count()} cores); commit {commit}")

    def write(self, path: Union[str, Path, None], complete: bool = True) -> Optional[Path]:
        """Write the JSON to ``path`` (nothing if ``path`` is empty); ``complete=False`` for a partial result
        an interrupted run keeps."""
        return write_json(path, self.to_dict(complete)) if path else None

    def finish(self, path: Union[str, Path, None] = None) -> Optional[Path]:
        """Print the wall / CPU / load line and write the JSON if ``path`` is given."""
        print(self.summary_line(), flush=True)
        written = self.write(path)
        if written:
            print(f"wrote {written}", flush=True)
        return written


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--json PATH`` option every bench has."""
    parser.add_argument("--json", default="", metavar="PATH",
                        help="also write the figures, settings, load average, wall and CPU time and git commit "
                             "here as JSON")
