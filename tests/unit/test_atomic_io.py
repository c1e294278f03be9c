"""The shared dataset I/O: atomic writes survive a killed writer, ids are file-safe, quarantine keeps everything."""

import os
import time

import numpy as np
import pytest

from selfsup_perception.core.dataset.atomic_io import (
    atomic_write_bytes,
    atomic_write_json,
    check_file_id,
    quarantine_file,
    remove_orphan_temp_files,
)


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"v": 1})

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(path, boom)
    assert path.read_text().replace(" ", "").replace("\n", "") == '{"v":1}'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_orphan_temp_files_of_a_killed_writer_are_removed_but_fresh_ones_kept(tmp_path):
    old, fresh = tmp_path / ".x.npz.abc.tmp", tmp_path / ".y.npz.def.tmp"
    old.write_bytes(b"?")
    fresh.write_bytes(b"?")
    past = time.time() - 3600
    os.utime(old, (past, past))
    (tmp_path / "keep.npz").write_bytes(b"data")
    assert remove_orphan_temp_files(tmp_path, min_age_s=60) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".y.npz.def.tmp", "keep.npz"]


@pytest.mark.parametrize("bad", ["", "../etc/passwd", "a/b", "x" * 129, "white space"])
def test_unsafe_ids_are_refused(bad):
    with pytest.raises(ValueError, match="must match"):
        check_file_id(bad)


def test_quarantine_never_overwrites(tmp_path):
    q = tmp_path / "quarantine"
    for i in range(3):
        f = tmp_path / "s.npz"
        np.savez(f, a=np.array([i]))
        quarantine_file(f, q)
    assert sorted(p.name for p in q.iterdir()) == ["s.1.npz", "s.2.npz", "s.npz"]
