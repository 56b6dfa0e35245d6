"""``fsutil.write_atomic``: readers see old or new whole files, writers never share a temp file, and a
failed write leaves no temp file behind."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from orchestrator.fsutil import write_atomic


def test_writes_with_mode_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"one")
    assert target.read_bytes() == b"one" and (target.stat().st_mode & 0o777) == 0o600
    write_atomic(target, b"two", mode=0o644, fsync=True)
    assert target.read_bytes() == b"two" and (target.stat().st_mode & 0o777) == 0o644
    assert os.listdir(tmp_path) == ["state.json"]


def test_concurrent_writers_and_a_reader(tmp_path: Path) -> None:
    target = tmp_path / "exit.json"
    bodies = [bytes([65 + n]) * 200_000 for n in range(4)]
    write_atomic(target, bodies[0])
    seen: set[bytes] = set()
    stop = threading.Event()

    def writer(body: bytes) -> None:
        for _ in range(30):
            write_atomic(target, body)

    def reader() -> None:
        while not stop.is_set():
            seen.add(target.read_bytes())

    threads = [threading.Thread(target=writer, args=(b,)) for b in bodies]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert seen <= set(bodies)                       # never a torn or mixed file
    assert os.listdir(tmp_path) == ["exit.json"]     # no temp file left by anyone


def test_failure_removes_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("x")              # a non-empty dir: the rename must fail
    with pytest.raises(OSError):
        write_atomic(target, b"data")
    assert sorted(os.listdir(tmp_path)) == ["taken"]
