"""The per-container state directory: file names, atomic JSON writes, /proc liveness checks, log lines.

Layout of ``<state_dir>/<id>/``::

    creating.json   written by ``native`` (API side) before anything is made: bundle, cgroup, created_at
    state.json      the same plus pids + start times, written once the processes exist (creating.json
                    is then removed; ``read_state`` reads whichever there is)
    spec.json       the validated runtime spec (exec reuses its user, caps and env)
    seccomp.bpf     the compiled filter, if any (exec installs the same one)
    exec.fifo       present while the container is "created"; ``start`` writes one byte into it
    started.json    started_at, written by ``start``
    exit.json       exit code / signal / OOM, written by the ``monitor`` when the init is reaped
    container.log   JSON lines {"t": time, "s": "stdout"|"stderr", "m": text}; ``container.log.1`` rotated
    monitor.err     the monitor's own stderr (a crash there is otherwise invisible)

With a restart policy (``restart``; written by the ``monitor`` only, except the marker)::

    restart.json    the monitor's create request (spec, rootfs mounts, cgroup, seccomp): a restart redoes it
    restarts.json   {"restarts": total, "series": n, "last_restart": t, "oom_baseline": k, "history": [...],
                     "policy": {annotations} once changed in place (what ``state`` reports)}
                    history: the last exits that were followed by a restart (code, signal, OOM, times)
    restart.fifo    the exec fifo of a restart in progress (the restarter starts the init itself)
    user-stop       written by ``kill``/``delete`` BEFORE signalling: no restart from then on
    restart.args    the policy changed in place (``update_restart``): the supervisor's five decisions,
                    read at the next exit instead of its arguments; removed by the restarter
    restart.lock    flock'd by the restarter and by a change of policy (see ``restart_lock``)
    exit.json then also says {"restart_pending": bool, "restart_delay_ms": n} (and "restart_error")

Everything is re-read on every call; nothing is cached in memory (a restarted orchestrator sees exactly
what the one before it saw). A pid is trusted only together with its start time (field 22 of stat).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.fsutil import read_if_present, write_atomic
from orchestrator.runtime.base import LogLine

STATE, SPEC, SECCOMP, FIFO, STARTED, EXIT = ("state.json", "spec.json", "seccomp.bpf", "exec.fifo",
                                             "started.json", "exit.json")
# the record a create writes first, before anything it makes (cgroup path, bundle); state.json, with the
# processes' identities, replaces it once they exist. A new file, not a rewrite of the first: renaming
# over an existing file makes ext4 flush the new one (auto_da_alloc), ~0.3 ms on every create.
CREATING = "creating.json"
LOG, MONITOR_ERR = "container.log", "monitor.err"
RESTART_REQ, RESTARTS, RESTART_FIFO, USER_STOP = "restart.json", "restarts.json", "restart.fifo", "user-stop"
RESTART_ARGS, RESTART_LOCK = "restart.args", "restart.lock"


def write_json(path: Path | str, data: dict[str, Any]) -> None:
    """Write-then-rename (``fsutil.write_atomic``: a unique temp name, so the API side, the monitor and
    the restarter never collide), so a reader (or a crashed writer) never leaves or sees half a file.
    No fsync: it costs milliseconds per container start, and after a power loss everything is re-derived from
    /proc and the cgroups anyway (a lost exit.json reads as "stopped, exit code unknown")."""
    write_atomic(path, json.dumps(data).encode())


def _slurp(path: Path | str) -> bytes | None:
    """The whole file, or None when it (or its directory, or the process of a /proc path) is gone."""
    return read_if_present(path, (FileNotFoundError, NotADirectoryError, ProcessLookupError))


def read_json(path: Path | str) -> dict[str, Any] | None:
    raw = _slurp(path)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot), or None when the process is gone."""
    raw = _slurp(f"/proc/{pid}/stat")
    if not raw:
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


def mark_user_stop(cdir: Path | str) -> None:
    """Record that the user stopped the container, so the supervisor does not restart it."""
    with open(os.path.join(cdir, USER_STOP), "wb"):
        pass


def user_stopped(cdir: Path | str) -> bool:
    """True once the user stopped the container, or its state dir is gone (deleted)."""
    return os.path.exists(os.path.join(cdir, USER_STOP)) or not (
        os.path.exists(os.path.join(cdir, STATE)) or os.path.exists(os.path.join(cdir, CREATING)))


def read_state(cdir: Path | str) -> dict[str, Any] | None:
    """The container's record: state.json, or while a create is in flight (or was cut short by a
    crash) the one it wrote first, with no processes yet (``CREATING``)."""
    return read_json(os.path.join(cdir, STATE)) or read_json(os.path.join(cdir, CREATING))


def restart_pending(ended: dict[str, Any] | None, rec: dict[str, Any]) -> bool:
    """The init has exited and its (live) monitor is waiting out the backoff or restarting it."""
    return bool(ended and ended.get("restart_pending")) and alive(int(rec.get("monitor_pid", 0)),
                                                                 int(rec.get("monitor_start_time", 0)))


def oom_baseline(cdir: Path | str) -> int:
    """The cgroup's OOM kill count when the current run started (0 before any restart)."""
    return int((read_json(os.path.join(cdir, RESTARTS)) or {}).get("oom_baseline", 0))


def state_annotations(cdir: Path | str, ended: dict[str, Any] | None, rec: dict[str, Any]
                      ) -> dict[str, str]:
    """What ``state()`` reports as annotations: the spec's (state.json), with the restart policy as it
    is now (restarts.json's ``policy`` after a change in place) and the restart counts (keys in
    ``restart``); the counts only for a container made with a policy."""
    from orchestrator.runtime.linux import restart
    out = dict(rec.get("annotations", {}))
    if not os.path.exists(os.path.join(cdir, RESTART_REQ)):
        out[restart.RESTARTABLE] = "false"      # no saved request: a policy needs a new container
        return out
    counts = read_json(os.path.join(cdir, RESTARTS)) or {}
    changed = counts.get("policy")
    if isinstance(changed, dict):
        out = {**{k: v for k, v in out.items() if not k.startswith(restart.PREFIX)}, **changed}
    last = counts.get("last_restart")
    out.update({restart.RESTARTS: str(int(counts.get("restarts", 0))),
                restart.LAST_RESTART: "" if last is None else f"{float(last):.6f}",
                restart.RESTARTING: "true" if restart_pending(ended, rec) else "false"})
    return out


@contextlib.contextmanager
def restart_lock(cdir: Path | str) -> Iterator[None]:
    """Held by the restarter from its first look at restart.json until the next supervisor runs, and
    by ``change_restart_policy``: a policy change lands wholly before a restart (which then uses it) or
    wholly after (the next supervisor then reads restart.args)."""
    import fcntl
    fd = os.open(os.path.join(cdir, RESTART_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def change_restart_policy(cdir: Path | str, annotations: dict[str, str]) -> bool:
    """Make the restart policy annotations (``restart.PREFIX`` keys) of a container ``annotations``'
    ones, in place; False when they already are. The running supervisor reads ``restart.args`` (its
    decisions for the current series) at the next exit, the restarter reads ``restart.json``, and
    ``state()`` reports the ``policy`` kept in restarts.json. A container made without a policy saved
    no request to run again: adding one needs a new container, so that is refused ("never": no-op)."""
    from orchestrator.errors import ContainerNotFound, RuntimeFailure
    from orchestrator.runtime.linux import restart
    cdir = str(cdir)
    rec = read_state(cdir)
    if rec is None:
        raise ContainerNotFound(f"container {os.path.basename(cdir)} not found", op="update_restart",
                                path=cdir)
    wanted = {k: v for k, v in annotations.items() if k.startswith(restart.PREFIX)}
    policy = restart.from_annotations(wanted)                  # validates
    if not os.path.exists(os.path.join(cdir, RESTART_REQ)):
        if policy.enabled:
            raise RuntimeFailure(f"container {os.path.basename(cdir)} was created without a restart "
                                 "policy; it needs a new container for one", op="update_restart", path=cdir)
        return False
    with restart_lock(cdir):
        now = {k: v for k, v in state_annotations(cdir, None, rec).items()
               if k.startswith(restart.PREFIX)}
        if now == wanted:
            return False
        req = read_json(os.path.join(cdir, RESTART_REQ)) or {}
        spec_ann = {k: v for k, v in req["spec"].get("annotations", {}).items()
                    if not k.startswith(restart.PREFIX)}
        req["spec"]["annotations"] = {**spec_ann, **wanted}
        write_json(os.path.join(cdir, RESTART_REQ), req)
        series = int((read_json(os.path.join(cdir, RESTARTS)) or {}).get("series", 0))
        write_atomic(os.path.join(cdir, RESTART_ARGS),
                     " ".join(restart.supervisor_args(policy, series)).encode())
        # with the counts, which state() reads anyway; the restarter, which rewrites them, holds the lock
        # and keeps the key
        counts = read_json(os.path.join(cdir, RESTARTS)) or {}
        write_json(os.path.join(cdir, RESTARTS), {**counts, "policy": wanted})
    return True


def wait_gone(pid: int, started: int, timeout_s: float) -> bool:
    """Until the process ``pid`` (with that start time) has exited; False on timeout. A pidfd turns
    readable at exit (a zombie counts as gone, as in ``alive``)."""
    if not alive(pid, started):
        return True
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return True
    try:
        if not alive(pid, started):      # the pid was reused between the check and the open
            return True
        import select
        return bool(select.select([fd], [], [], timeout_s)[0])
    finally:
        os.close(fd)
