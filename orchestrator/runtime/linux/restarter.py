"""The restarter: runs a container again from its bundle, in its monitor's pid, with no orchestrator around.

Run as ``python -m orchestrator.runtime.linux.restarter STATE_DIR``, exec'd by the C supervisor
(``supervise.c``) once the init has exited, the policy (``restart``) said "restart" and the backoff has
passed; or called by the Python supervisor (``pysupervise``, via ``monitor``) through
:func:`after_exit`. Being the same pid as the monitor, it is still the subreaper and the parent of
what it forks, and the pid + start time recorded for the monitor stay valid. It replays the monitor's
create request (``restart.json``): fresh namespaces but the network one the supervisor held
(``rejoin_netns``), same cgroup, same rootfs mounts (the overlay's upper dir, so the writable layer
persists), starts the init itself through a private fifo, records
the restart (``restarts.json``, the new init pid in ``state.json``, ``started.json``), removes
``exit.json`` and execs the supervisor again.

A ``kill``/``delete`` by the user writes the ``user-stop`` marker before signalling: it is checked before
the fork and again once the new init is in its cgroup (the cgroup-wide kill of ``delete`` catches any init
that joined before the marker was written). Imports stay few: this runs on every restart.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import time
from typing import Any, NoReturn

from orchestrator.runtime.linux import init, monitor, restart, statedir
from orchestrator.runtime.linux import syscalls as sc

HISTORY_MAX = 20     # exits kept in restarts.json


def _oom_kills(req: dict[str, Any]) -> int:
    """The cgroup's OOM kill count: ``oom_kill`` of memory.oom_control (v1) or memory.events (v2), read
    here rather than through ``cgroups`` (whose import costs ~100 ms of every restart)."""
    for d in req.get("cgroup_dirs", []):
        for name in ("memory.oom_control", "memory.events"):
            with contextlib.suppress(OSError, ValueError), open(os.path.join(d, name)) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
    return 0


def _final(cdir: str, ended: dict[str, Any], error: str = "") -> None:
    """Make the recorded exit final: no restart will follow."""
    if not os.path.isdir(cdir):
        return
    ended = {**ended, "restart_pending": False, "restart_delay_ms": -1}
    if error:
        ended["restart_error"] = error
    statedir.write_json(os.path.join(cdir, statedir.EXIT), ended)


def _start_init(fifo: str) -> None:
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)
    os.unlink(fifo)


def _preload(req: dict[str, Any]) -> None:
    """Import now what the init imports lazily: after its pivot_root our package is out of its reach
    (the fork server preloads the same for the first run)."""
    names = ["orchestrator.runtime.linux.capabilities"]
    if req.get("seccomp"):
        names.append("orchestrator.runtime.linux.seccomp")
    if req.get("files"):
        names += ["orchestrator.runtime.files", "orchestrator.runtime.linux.filemounts"]
    for name in names:
        importlib.import_module(name)


def rejoin_netns(req: dict[str, Any]) -> dict[str, Any]:
    """The request with the network namespace our supervisor held (``monitor.held_netns``, at
    NETNS_FD) joined instead of a new one made (or instead of the path a ``container:x`` spec
    joined at create, whose pid may be gone): the restarted container keeps its interfaces, its
    address and its routes. Unchanged when we hold none. The init inherits NETNS_FD and joins it
    as /proc/self/fd/7 before it closes what it inherited (``init.direct``)."""
    if not monitor.holds_netns():
        return req
    path = f"/proc/self/fd/{monitor.NETNS_FD}"
    linux = req["spec"].get("linux", {})
    spaces = [{**ns, "path": path} if ns.get("type") == "network" else ns
              for ns in linux.get("namespaces", [])]
    return {**req, "spec": {**req["spec"], "linux": {**linux, "namespaces": spaces}}}


def _restart(req: dict[str, Any], ended: dict[str, Any], lock: contextlib.ExitStack) -> NoReturn:
    cdir = req["state_dir"]
    _preload(req)
    policy = restart.from_annotations(req["spec"].get("annotations", {}))
    counts = statedir.read_json(os.path.join(cdir, statedir.RESTARTS)) or {}
    started_at = float((statedir.read_json(os.path.join(cdir, statedir.STARTED)) or {}).get("started_at", 0))
    finished_at = float(ended.get("finished_at") or time.time())
    oom_now = _oom_kills(req)
    ended = {**ended, "oom_killed": oom_now > int(counts.get("oom_baseline", 0))}
    fifo = os.path.join(cdir, statedir.RESTART_FIFO)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(fifo)              # left by a restarter that died half-way
    os.mkfifo(fifo, 0o600)
    req = {**req, "exec_fifo": fifo}
    if req.get("files"):        # the payload, kept in a memfd by the supervisor (monitor._keep_payload)
        req.update(files_payload=os.pread(monitor.FILES_FD, os.fstat(monitor.FILES_FD).st_size, 0),
                   files_fd=monitor.FILES_FD)
    # the last unshare(CLONE_NEWPID) left our children's pid namespace pointing at the dead one (fork
    # fails there); rejoining our own makes a fresh unshare possible again
    init._setns("/proc/self/ns/pid", sc.CLONE_NEWPID)
    init_pid, out_r, err_r, wake_r = monitor._spawn(rejoin_netns(req), ())
    if statedir.user_stopped(cdir):
        monitor._kill(init_pid)
        _final(cdir, ended)
        os._exit(0)
    _start_init(fifo)
    now = time.time()
    rec = statedir.read_state(cdir) or {}
    rec.update(pid=init_pid, start_time=statedir.start_time(init_pid) or 0)
    statedir.write_json(os.path.join(cdir, statedir.STATE), rec)
    statedir.write_json(os.path.join(cdir, statedir.STARTED), {"started_at": now})
    entry = {k: ended.get(k) for k in ("exit_code", "exit_signal", "oom_killed", "finished_at",
                                       "restart_delay_ms")}
    entry.update(started_at=started_at, restarted_at=now)
    statedir.write_json(os.path.join(cdir, statedir.RESTARTS), {
        **({"policy": counts["policy"]} if "policy" in counts else {}),   # changed in place: see statedir
        "restarts": int(counts.get("restarts", 0)) + 1,
        "series": restart.series_after(policy, int(counts.get("series", 0)), finished_at - started_at),
        "last_restart": now, "oom_baseline": oom_now,
        "history": [*counts.get("history", []), entry][-HISTORY_MAX:]})
    os.unlink(os.path.join(cdir, statedir.EXIT))     # last: until now the container reads as stopped
    if statedir.user_stopped(cdir):    # stopped since our look above: it reads as running, so kill it
        os.kill(init_pid, signal.SIGKILL)           # (the supervisor reaps it and records a final exit)
    lock.close()          # the C supervisor's exec would release it; the Python loop would keep it
    monitor._supervise_or_exec(req, init_pid, out_r, err_r, wake_r, monitor.inherited_netns())
    os._exit(0)


def restart_from(cdir: str) -> NoReturn:
    """Body of the restarter process; never returns. Errors end up in exit.json and monitor.err."""
    # the supervisor left SIGCHLD and SIGTERM blocked; we need SIGCHLD, SIGTERM stays a mere wake-up
    signal.pthread_sigmask(signal.SIG_SETMASK, {signal.SIGTERM})
    ended = statedir.read_json(os.path.join(cdir, statedir.EXIT)) or {}
    try:
        # a policy change waits for us (or we for it) until the next supervisor runs: released when
        # this process execs it, or explicitly before the Python supervisor's loop (see _restart)
        lock = contextlib.ExitStack()
        lock.enter_context(statedir.restart_lock(cdir))
        # a policy changed in place before now is in restart.json: the supervisor we exec gets
        # arguments from it (for the new run's series), so the override goes
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(cdir, statedir.RESTART_ARGS))
        req = statedir.read_json(os.path.join(cdir, statedir.RESTART_REQ))
        if req is None or statedir.user_stopped(cdir) or \
                not restart.from_annotations(req["spec"].get("annotations", {})).enabled:
            _final(cdir, ended)              # (changed to "never" during the backoff: no restart)
            os._exit(0)
        _restart(req, ended, lock)
    except BaseException as exc:  # the container stays stopped, and says why
        for pid in monitor._children():     # an init we started must not outlive its supervision
            monitor._kill(pid)
        message = init._error("restart", exc)["message"]
        os.write(2, f"restart of {cdir} failed: {message}\n".encode(errors="replace"))
        with contextlib.suppress(Exception):
            _final(cdir, ended, message)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(cdir, statedir.RESTART_FIFO))
    os._exit(1)


def after_exit(req: dict[str, Any], ended: dict[str, Any], argv: list[str], netns: int | None = None) -> None:
    """The Python supervisor's counterpart of the C one: record the exit (saying whether a restart
    follows, in the same write, so ``wait`` never sees a final-looking exit before a restart), wait out
    the backoff, exec ``argv`` (the restarter). ``req``: the request as restart.json has it now (a
    policy changed in place included); ``netns``: ``monitor.held_netns``, passed on as NETNS_FD."""
    cdir = req["state_dir"]
    policy = restart.from_annotations(req["spec"].get("annotations", {}))
    counts = statedir.read_json(os.path.join(cdir, statedir.RESTARTS)) or {}
    started_at = float((statedir.read_json(os.path.join(cdir, statedir.STARTED)) or {}).get("started_at", 0))
    uptime = float(ended["finished_at"]) - started_at if started_at else 0.0
    run = restart.Exit(int(ended["exit_code"]), bool(ended.get("oom_killed")))
    delay = None if statedir.user_stopped(cdir) else restart.should_restart(
        policy, run, int(counts.get("series", 0)), uptime)
    pending = {"restart_pending": delay is not None,
               "restart_delay_ms": -1 if delay is None else round(delay * 1000)}
    statedir.write_json(os.path.join(cdir, statedir.EXIT), {**ended, **pending})
    if delay is None:
        return
    deadline = time.monotonic() + delay
    while not statedir.user_stopped(cdir) and (left := deadline - time.monotonic()) > 0:
        signal.sigtimedwait({signal.SIGTERM}, left)      # a user stop wakes us early
    if statedir.user_stopped(cdir):
        _final(cdir, ended)
        return
    if netns is not None:
        if netns == monitor.NETNS_FD:
            os.set_inheritable(netns, True)
        else:
            os.dup2(netns, monitor.NETNS_FD)          # inheritable: the restarter rejoins it
    os.execv(argv[0], argv[1:])


if __name__ == "__main__":
    restart_from(sys.argv[1])
