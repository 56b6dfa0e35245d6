"""The Python supervision loop: what ``orch-supervise`` (``supervise.c``) does, for a monitor without it.

Used when no C compiler built the supervisor (``LinuxRuntime(c_supervisor=False)``): copy the
container's stdout/stderr into a size-capped JSON-lines log (``LogWriter``, the format the C side
writes too), reap the init, and make the exit record (``exit_record``, with the OOM verdict from the
cgroup). Neighbours: ``monitor`` (calls ``supervise`` after set-up), ``restarter``, ``statedir``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import time
from typing import Any

from orchestrator.runtime.linux import statedir

DRAIN_AFTER_EXIT_S = 1.0     # processes of a shared pid namespace may hold our pipes after init exits
_PARTIAL_MAX = 16384         # a line longer than this is logged in pieces


class LogWriter:
    """JSON lines with a timestamp and the stream name; rotated once to ``.1`` past ``max_bytes``."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self.fd).st_size
        self.partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def _emit(self, stream: str, raw: bytes) -> None:
        rec = json.dumps({"t": time.time(), "s": stream, "m": raw.decode(errors="replace")}) + "\n"
        data = rec.encode()
        if self.size + len(data) > self.max_bytes:
            os.close(self.fd)
            os.replace(self.path, self.path + ".1")
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            self.size = 0
        os.write(self.fd, data)
        self.size += len(data)

    def feed(self, stream: str, data: bytes) -> None:
        buf = self.partial[stream] + data
        *lines, rest = buf.split(b"\n")
        for line in lines:
            self._emit(stream, line)
        while len(rest) > _PARTIAL_MAX:
            self._emit(stream, rest[:_PARTIAL_MAX])
            rest = rest[_PARTIAL_MAX:]
        self.partial[stream] = rest

    def flush(self) -> None:
        for stream, rest in self.partial.items():
            if rest:
                self._emit(stream, rest)
        self.partial = {"stdout": b"", "stderr": b""}


def exit_record(req: dict[str, Any], status: int | None) -> dict[str, Any]:
    code = sig = None
    if status is not None:
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            code = 128 + sig           # the shell / docker convention
        else:
            code = os.WEXITSTATUS(status)
    oom = False
    if req.get("cgroup"):
        try:
            from pathlib import Path

            from orchestrator.runtime.linux.cgroups import driver_for
            cgroup = driver_for(Path(req["cgroup"]["root"])).open(req["cgroup"]["path"])
            # the count since this run started: earlier runs' kills are before the baseline
            oom = cgroup.stats().oom_kill_count > statedir.oom_baseline(req["state_dir"])
        except Exception:  # an unreadable cgroup must not lose the exit code
            oom = False
    return {"exit_code": code, "exit_signal": sig, "finished_at": time.time(), "oom_killed": oom,
            "restart_pending": False, "restart_delay_ms": -1}


def supervise(req: dict[str, Any], init_pid: int, outs: dict[int, str], wake: int) -> int | None:
    log = LogWriter(os.path.join(req["state_dir"], statedir.LOG), int(req.get("log_max_bytes", 10 << 20)))
    poller = select.poll()
    for fd in (*outs, wake):
        poller.register(fd, select.POLLIN)
    status: int | None = None
    deadline = 0.0
    while outs or status is None:
        timeout_ms = None if status is None else max(0, int((deadline - time.monotonic()) * 1000))
        if timeout_ms == 0:
            break
        for fd, _ev in poller.poll(timeout_ms):
            if fd == wake:
                with contextlib.suppress(BlockingIOError):
                    while len(os.read(wake, 512)) == 512:
                        pass
                while True:
                    try:
                        pid, st = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        pid = 0
                    if pid == 0:
                        break
                    if pid == init_pid:
                        status, deadline = st, time.monotonic() + DRAIN_AFTER_EXIT_S
                continue
            data = os.read(fd, 65536)
            if data:
                log.feed(outs[fd], data)
            else:
                poller.unregister(fd)
                os.close(fd)
                del outs[fd]
    log.flush()
    return status
