"""The per-container state directory: file names, atomic JSON writes, /proc liveness checks, log lines.

Layout of ``<state_dir>/<id>/``::

    state.json      written by ``native`` (API side): bundle, cgroup, pids + start times, created_at
    spec.json       the validated runtime spec (exec reuses its user, caps and env)
    seccomp.bpf     the compiled filter, if any (exec installs the same one)
    exec.fifo       present while the container is "created"; ``start`` writes one byte into it
    started.json    started_at, written by ``start``
    exit.json       exit code / signal / OOM, written by the ``monitor`` when the init is reaped
    container.log   JSON lines {"t": time, "s": "stdout"|"stderr", "m": text}; ``container.log.1`` rotated
    monitor.err     the monitor's own stderr (a crash there is otherwise invisible)

Everything is re-read on every call; nothing is cached in memory (a restarted orchestrator sees exactly
what the one before it saw). A pid is trusted only together with its start time (field 22 of stat).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.runtime.base import LogLine

STATE, SPEC, SECCOMP, FIFO, STARTED, EXIT = ("state.json", "spec.json", "seccomp.bpf", "exec.fifo",
                                             "started.json", "exit.json")
LOG, MONITOR_ERR = "container.log", "monitor.err"


def write_json(path: Path | str, data: dict[str, Any]) -> None:
    """Write-then-rename, so a reader (or a crashed writer) never leaves or sees half a file. No fsync:
    it costs milliseconds per container start, and after a power loss everything is re-derived from
    /proc and the cgroups anyway (a lost exit.json reads as "stopped, exit code unknown")."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(data).encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def read_json(path: Path | str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'
    fields = raw[raw.rindex(b")") + 2:].split()
    if fields[0] == b"Z":        # a zombie has exited; only its parent's wait is pending
        return None
    return int(fields[19])


def alive(pid: int, started: int) -> bool:
    return pid > 0 and started > 0 and start_time(pid) == started


def read_log(path: Path, offset: int = 0) -> tuple[list[LogLine], int]:
    """Complete lines of ``path`` from byte ``offset``; returns them and the offset after the last one."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    lines = []
    for raw in data[:end].splitlines():
        try:
            rec = json.loads(raw.decode(errors="replace"))     # the C supervisor passes bytes through
            lines.append(LogLine(float(rec["t"]), str(rec["s"]), str(rec["m"])))
        except (ValueError, KeyError):
            continue
    return lines, offset + end


def iter_log(cdir: Path, since: float) -> Iterator[LogLine]:
    for name in (LOG + ".1", LOG):
        lines, _ = read_log(cdir / name)
        yield from (line for line in lines if line.time >= since)
