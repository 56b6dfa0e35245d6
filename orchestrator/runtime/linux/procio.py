"""Caller-side I/O of ``LinuxRuntime``: the pipes of an ``exec`` and the follower of a container's log.

``exec_request`` builds an exec request from the state dir; ``run_exec`` sends it to a ``forkserver``
with stdio and a status pipe, then reads them until the ``execproc`` helper is done: output is captured
up to ``OUTPUT_CAP`` bytes per stream (the rest is read and dropped, so a chatty process never blocks on
a full pipe), and with a timeout the process is SIGKILLed at the deadline (its pid arrives first on the
status pipe) and ``ExecTimeout`` raised.
``follow`` tails the log files ``statedir`` reads. A streamed exec (``capture=False``) is relayed by
``execrelay``. Neighbours: ``native`` (the only caller),
``execproc`` (the other end of the pipes), ``statedir`` (log format).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
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


class _Fds:
    """Descriptors of one exec: ``ours`` stay with us until the end, ``theirs`` go to the helper and
    are closed once it has them. Every one is closed once, whatever fails where."""

    def __init__(self) -> None:
        self.ours: list[int] = []
        self.theirs: list[int] = []

    def pipe(self, ours_reads: bool = True) -> tuple[int, int]:
        r, w = os.pipe2(os.O_CLOEXEC)
        (self.ours if ours_reads else self.theirs).append(r)
        (self.theirs if ours_reads else self.ours).append(w)
        return r, w

    def close_theirs(self) -> None:
        while self.theirs:
            os.close(self.theirs.pop())

    def close(self, fd: int) -> None:
        if fd in self.ours:
            self.ours.remove(fd)
            os.close(fd)

    def close_all(self) -> None:
        self.close_theirs()
        while self.ours:
            os.close(self.ours.pop())


def run_exec(send: Callable[[dict[str, Any], list[int]], dict[str, Any]], req: dict[str, Any],
             capture: bool, timeout: float | None = None, stdin: bool = False,
             tty: bool = False) -> ExecResult:
    """``send(req, fds)``: one fork-server request, returning its reply. The server is needed only for
    that: the output and the exit status come straight from the helper, so a long exec keeps no
    server from the next create. ``capture``: the output comes back in the result (``OUTPUT_CAP``);
    else it is copied to our stdout and stderr as it comes (``execrelay``: the process never gets our
    own stdio). ``stdin``: it reads ours, else /dev/null. ``tty`` (no capture, no timeout): a pty.
    Whatever ends this early (an interrupt, our stdout closed, the server gone) kills the process."""
    from orchestrator.runtime.linux import execrelay
    if tty and (capture or timeout is not None):
        raise RuntimeFailure("exec with a tty: its output is streamed, without a timeout", op="exec",
                             path=str(req["pid"]))
    if stdin and capture:
        raise RuntimeFailure("exec with our stdin: its output is streamed", op="exec", path=str(req["pid"]))
    fds = _Fds()
    status: list[bytes] = []
    try:
        status_r, status_w = fds.pipe()
        feed: int | None = None
        if tty:
            master, slave = execrelay.open_pty()
            fds.ours.append(master)
            fds.theirs.append(slave)
            stdio, outputs = [slave, slave, slave], {master: 1}
            feed = master if stdin else None
            end_input = execrelay.pty_eof(master)
        else:
            if stdin:
                source, feed = fds.pipe(ours_reads=False)
                os.set_blocking(feed, False)
            else:
                source = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                fds.theirs.append(source)
            out_r, out_w = fds.pipe()
            err_r, err_w = fds.pipe()
            stdio, outputs = [source, out_w, err_w], {out_r: 1, err_r: 2}

            def end_input(_last: bytes) -> None:
                if feed is not None:
                    fds.close(feed)         # the end of its input
        try:
            try:
                reply = send({**req, "tty": True} if tty else req, [*stdio, status_w])
            finally:
                fds.close_theirs()          # then the status pipe ends when the helper does (or now)
            if not reply.get("ok"):
                raise failure(reply.get("error", {}))
            if capture:
                chunks: dict[int, list[bytes]] = {fd: [] for fd in outputs}
                chunks[status_r] = status
                deadline = None if timeout is None else time.monotonic() + timeout
                if not _drain(chunks, status_r, deadline):   # the deadline passed: kill, reap, report
                    raw = _kill(status_r, b"".join(status))
                    pid = _merged(raw).get("pid", 0)
                    raise ExecTimeout(f"exec {req['argv'][0]!r} timed out after {timeout:g}s and was "
                                      "killed", op="exec", path=str(pid or req["pid"]))
                out, err = (b"".join(chunks[fd]) for fd in outputs)
            else:
                with execrelay.resizing(master) if tty else contextlib.nullcontext():
                    execrelay.relay(status_r, status, outputs, feed, end_input)
                out = err = b""
        except ExecTimeout:
            raise
        except BaseException:              # not left running behind the user's back
            _kill(status_r, b"".join(status))
            raise
        result = _merged(b"".join(status))
        if "error" in result:
            raise failure(result["error"])
        if "exit_code" not in result:
            raise RuntimeFailure("exec ended without a status", op="exec", path=str(req["pid"]))
        return ExecResult(int(result["exit_code"]), out, err)
    finally:
        fds.close_all()


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
        from orchestrator.runtime.linux.execproc import kill_group
        kill_group(pid)                              # and what it started (it leads a process group)
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
