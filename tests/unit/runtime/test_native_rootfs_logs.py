"""secure_join (symlinks resolved inside the root), the monitor's log writer, and state-dir helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.linux import statedir
from orchestrator.runtime.linux.pysupervise import LogWriter
from orchestrator.runtime.linux.rootfs import secure_join


def test_secure_join_keeps_symlinks_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc", root / "abs")                  # absolute: must mean root/etc, not the host's
    os.symlink("../../../../..", root / "etc" / "up")  # climbing out: clamped at the root
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    r = str(root)
    assert secure_join(r, "/abs/passwd") == f"{r}/etc/passwd"
    assert secure_join(r, "/etc/up/tmp") == f"{r}/tmp"
    assert secure_join(r, "/../../x") == f"{r}/x"
    assert secure_join(r, "/new/dir/./file") == f"{r}/new/dir/file"
    assert secure_join(r, "/") == r
    with pytest.raises(RuntimeFailure, match="symbolic links"):
        secure_join(r, "/loop1/x")


def test_log_writer_lines_partial_lines_and_rotation(tmp_path: Path) -> None:
    path = tmp_path / statedir.LOG
    log = LogWriter(str(path), max_bytes=400)
    log.feed("stdout", b"one\ntw")
    log.feed("stderr", b"err\n")
    log.feed("stdout", b"o\n")
    lines, offset = statedir.read_log(path)
    assert [(line.stream, line.text) for line in lines] == [("stdout", "one"), ("stderr", "err"),
                                                           ("stdout", "two")]
    assert offset == path.stat().st_size
    for i in range(20):
        log.feed("stdout", f"line {i}\n".encode())
    log.feed("stdout", b"no newline at the end")
    log.flush()
    assert path.stat().st_size <= 400
    everything = [line.text for line in statedir.iter_log(tmp_path, 0.0)]
    assert everything[-1] == "no newline at the end"
    assert "line 19" in everything and len(everything) < 24      # the oldest were rotated away


def test_state_files_and_start_time(tmp_path: Path) -> None:
    statedir.write_json(tmp_path / "s.json", {"a": 1})
    assert statedir.read_json(tmp_path / "s.json") == {"a": 1}
    assert statedir.read_json(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{")
    assert statedir.read_json(tmp_path / "bad.json") is None
    me = statedir.start_time(os.getpid())
    assert me and statedir.alive(os.getpid(), me)
    assert not statedir.alive(os.getpid(), me + 1)           # same pid, other start time: reused pid
    assert statedir.start_time(2**22 + 1) is None
