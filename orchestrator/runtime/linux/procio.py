"""Caller-side I/O of ``LinuxRuntime``: the pipes of an ``exec`` and the follower of a container's log.

``exec_request`` builds an exec request from the state dir; ``run_exec`` sends it to a ``forkserver``
with stdio and a status pipe, then reads them until the ``execproc`` helper is done: output is captured
up to ``OUTPUT_CAP`` bytes per stream (the rest is read and dropped, so a chatty process never blocks on
a full pipe), and with a timeout the process is SIGKILLed at the deadline (its pid arrives first on the
status pipe) and ``ExecTimeout`` raised.
``follow`` tails the log files ``statedir`` reads. Neighbours: ``native`` (the only caller),
``execproc`` (the other end of the pipes), ``statedir`` (log format).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from orchestrator.errors import ExecTimeout, RuntimeFailure
from orchestrator.runtime.base import ContainerState, ExecResult, LogLine
from orchestrator.runtime.linux import statedir as sd

OUTPUT_CAP = 1 << 20          # bytes kept per stream: a probe's output is for a log line, not a file
_KILL_GRACE_S = 2.0           # after the SIGKILL, how long the helper gets to reap and report


def failure(err: dict[str, Any]) -> RuntimeFailure:
    """A ``RuntimeFailure`` from the ``{"message", "op", "path", "errno"}`` a child reported."""
    return RuntimeFailure(str(err.get("message", "runtime failure")), op=str(err.get("op", "")),
                          path=str(err.get("path", "")), errno=int(err.get("errno", 0) or 0))


def status_messages(raw: bytes) -> list[dict[str, Any]]:
    """The JSON objects written one after another on a status pipe (a torn last one is ignored)."""
    text, pos, out = raw.decode(errors="replace"), 0, []
    decoder = json.JSONDecoder()
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _merged(raw: bytes) -> dict[str, Any]:
    """pid, the first error and the exit code of the messages so far."""
    merged: dict[str, Any] = {}
    for msg in status_messages(raw):
        for key, value in msg.items():
            merged.setdefault(key, value)      # the grandchild's own error wins over the helper's
    return merged


def secret_environment(cdir: Path, st: ContainerState) -> list[str]:
    """``NAME=value`` for the container's ``env:`` secrets, so an exec sees them as the container's
    process does (as ``kubectl exec`` does). The names come from the files layout (names only, on disk);
    the values from ``/proc/<pid>/environ`` of the container's process (the init that exec'd with
    them), read here in memory and sent over the fork server's socket only. The pid's start time is
    checked after the read, so a recycled pid is never read from. A process that rewrites its own
    environment block (setproctitle) changes what is read: a variable that no longer parses is left out."""
    from orchestrator.runtime.linux import filemounts
    raw = sd.read_json(cdir / filemounts.LAYOUT) or {}
    names = {str(f.get("env")) for f in raw.get("files", []) if f.get("env")}
    if not names or not st.pid:
        return []
    try:
        with open(f"/proc/{st.pid}/environ", "rb") as f:
            block = f.read()
    except OSError:
        return []
    if sd.start_time(st.pid) != st.pid_start_time:
        return []
    out: list[str] = []
    for entry in block.split(b"\0"):
        name, sep, _ = entry.partition(b"=")
        if sep and name.decode(errors="replace") in names:
            with contextlib.suppress(UnicodeDecodeError):
                out.append(entry.decode("utf-8"))
    return out


def exec_request(cdir: Path, st: ContainerState, argv: Sequence[str], env: Sequence[str],
                 cwd: str | None) -> dict[str, Any]:
    """The fork server's exec request: the container's process settings, cgroup and seccomp filter
    (the same the init has, from the state dir) with the command to run. The container's ``env:``
    secrets come before ``env`` (the caller's own variables win)."""
    spec = sd.read_json(cdir / sd.SPEC) or {}
    rec = sd.read_state(cdir) or {}
    prog = (cdir / sd.SECCOMP).read_bytes() if (cdir / sd.SECCOMP).exists() else b""
    flags = 0
    if prog:
        from orchestrator.runtime.linux import seccomp
        flags = seccomp.flags_value(spec.get("linux", {}).get("seccomp"))
    return {"op": "exec", "pid": st.pid, "start_time": st.pid_start_time, "argv": list(argv),
            "env": [*secret_environment(cdir, st), *env], "cwd": cwd, "process": spec.get("process", {}),
            "cgroup": rec.get("cgroup"),
            "seccomp": prog.hex(), "seccomp_flags": flags}


def run_exec(send: Callable[[dict[str, Any], list[int]], dict[str, Any]], req: dict[str, Any],
             capture: bool, timeout: float | None = None, stdin: bool = False,
             tty: bool = False) -> ExecResult:
    """``send(req, fds)``: one fork-server request, returning its reply. The server is needed only for
    that: the output and the exit status come straight from the helper, so a long exec keeps no
    server from the next create. Without ``capture`` the process writes to our stdout and stderr
    themselves; with ``stdin`` it reads ours; with ``tty`` (no capture, no timeout) it gets a terminal
    that ``ptyrelay`` connects to ours. An interrupt (Ctrl-C) kills it before it propagates."""
    if tty:
        return _run_tty(send, req, stdin)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    ours: list[int] = [status_r]
    theirs: list[int] = [status_w]
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    theirs.insert(0, null)
    source = 0 if stdin else null
    if capture:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        ours += [out_r, err_r]
        stdio = [source, out_w, err_w]
        theirs += [out_w, err_w]
    else:
        stdio = [source, 1, 2]
    try:
        reply = send(req, [*stdio, status_w])
    finally:
        for fd in theirs:
            os.close(fd)
    try:
        if not reply.get("ok"):
            raise failure(reply.get("error", {}))
        deadline = None if timeout is None else time.monotonic() + timeout
        chunks: dict[int, list[bytes]] = {fd: [] for fd in ours}
        try:
            done = _drain(chunks, status_r, deadline)
        except KeyboardInterrupt:          # not left running behind the user's back
            _kill(status_r, b"".join(chunks[status_r]))
            raise
        if not done:                       # the deadline passed: kill, let the helper reap, report
            raw = _kill(status_r, b"".join(chunks[status_r]))
            pid = _merged(raw).get("pid", 0)
            raise ExecTimeout(f"exec {req['argv'][0]!r} timed out after {timeout:g}s and was killed",
                              op="exec", path=str(pid or req["pid"]))
        status = _merged(b"".join(chunks[status_r]))
        if "error" in status:
            raise failure(status["error"])
        if "exit_code" not in status:
            raise RuntimeFailure("exec ended without a status", op="exec", path=str(req["pid"]))
        out = b"".join(chunks[ours[1]]) if capture else b""
        err = b"".join(chunks[ours[2]]) if capture else b""
        return ExecResult(int(status["exit_code"]), out, err)
    finally:
        for fd in ours:
            os.close(fd)


def _run_tty(send: Callable[[dict[str, Any], list[int]], dict[str, Any]], req: dict[str, Any],
             stdin: bool) -> ExecResult:
    from orchestrator.runtime.linux import ptyrelay
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    master, slave = ptyrelay.open_pty()
    try:
        reply = send({**req, "tty": True}, [slave, slave, slave, status_w])
    finally:
        os.close(slave)
        os.close(status_w)
    status: list[bytes] = []
    try:
        if not reply.get("ok"):
            raise failure(reply.get("error", {}))
        try:
            with ptyrelay.resizing(master):
                ptyrelay.relay(master, status_r, stdin, status)
        except KeyboardInterrupt:
            _kill(status_r, b"".join(status))
            raise
        result = _merged(b"".join(status))
        if "error" in result:
            raise failure(result["error"])
        if "exit_code" not in result:
            raise RuntimeFailure("exec ended without a status", op="exec", path=str(req["pid"]))
        return ExecResult(int(result["exit_code"]), b"", b"")
    finally:
        os.close(master)
        os.close(status_r)


def _drain(chunks: dict[int, list[bytes]], status_r: int, deadline: float | None) -> bool:
    """Read every fd of ``chunks`` to EOF into it (keeping ``OUTPUT_CAP`` bytes of each output); False
    if the deadline came first. What was read stays in ``chunks`` whatever happens (an interrupt)."""
    kept = dict.fromkeys(chunks, 0)
    open_fds = set(chunks)
    while open_fds:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False
        ready, _, _ = select.select(list(open_fds), [], [], left)
        for fd in ready:
            data = os.read(fd, 65536)
            if not data:
                open_fds.discard(fd)
            elif fd == status_r or kept[fd] < OUTPUT_CAP:
                data = data if fd == status_r else data[:OUTPUT_CAP - kept[fd]]
                chunks[fd].append(data)
                kept[fd] += len(data)
    return True


def _kill(status_r: int, raw: bytes) -> bytes:
    """SIGKILL the exec'd process and wait (bounded) for its helper to reap it; all status bytes."""
    grace = time.monotonic() + _KILL_GRACE_S
    pid = int(_merged(raw).get("pid", 0))
    while not pid and time.monotonic() < grace:     # still in set-up: its pid is on the way
        ready, _, _ = select.select([status_r], [], [], grace - time.monotonic())
        data = os.read(status_r, 65536) if ready else b""
        if ready and not data:
            return raw                               # the helper ended: nothing left to kill
        raw += data
        pid = int(_merged(raw).get("pid", 0))
    if pid and "exit_code" not in _merged(raw):      # not reaped yet, so the pid is still that process
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # the helper reaps it, reports and exits, closing its end; descendants may hold the output pipes
    while time.monotonic() < grace:
        ready, _, _ = select.select([status_r], [], [], grace - time.monotonic())
        data = os.read(status_r, 65536) if ready else b""
        if not data:
            break
        raw += data
    return raw


def follow(state: Callable[[], bool], cdir: Path, since: float) -> Iterator[LogLine]:
    """Tail a container's log; ``state()`` says whether it has stopped (then drain and end)."""
    # the rotated file first, then tail the live one until the container has stopped and it is drained
    lines, _ = sd.read_log(cdir / (sd.LOG + ".1"))
    yield from (line for line in lines if line.time >= since)
    offset, inode = 0, 0
    while True:
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(cdir / sd.LOG)
            if st.st_ino != inode:          # rotated under us: start the new file from its beginning
                offset, inode = 0, st.st_ino
        stopped = state()
        lines, offset = sd.read_log(cdir / sd.LOG, offset)
        yield from (line for line in lines if line.time >= since)
        if stopped and not lines:
            return
        if not lines:
            time.sleep(0.1)
