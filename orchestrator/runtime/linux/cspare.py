"""The C warm spare: ``orch-spare`` (``sparemon.c``, the monitor) and ``orch-init`` (``init.c``).

Same role and protocol as ``spare``'s Python spare (the server hands it a create request, it declines
or reports like an ordinary monitor, then becomes the container's supervisor), made cheaper: the fork
server posix_spawns ``orch-spare`` instead of forking itself (no page tables to copy, and no
copy-on-write faults for the server afterwards, which made every later request's first touches slow),
and ``orch-init`` runs the init's steps from a list of ops instead of a forked interpreter.

``spawn`` (server side) starts one; ``requests`` compiles what its init (``initplan``) and its monitor
(``monitor_request``) are sent, or says None (the request then takes another path). Used only with
both programs built (``cmonitor``) and the C supervisor in use. Neighbours: ``spare`` (the Python
spare, ``hand_over``/``discard`` for both), ``forkserver``, ``monitor`` (the supervisor's arguments).
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from typing import Any

from orchestrator.runtime.linux import initplan, monitor, restart, statedir
from orchestrator.runtime.linux.spare import NICE, Spare, channels


@dataclass(frozen=True)
class Programs:
    """Server side: the ``orch-spare`` path, and descriptors of the sealed ``orch-init`` copy and of
    the sealed interpreter (the server's own, for a restarter: see ``monitor._restarter_argv``)."""

    monitor: str
    init_fd: int
    python_fd: int


def spawn(programs: Programs) -> Spare:
    """Start a C spare (``orch-spare BASE_NICE NICE``, fds as its header says). It lowers its own
    priority by ``spare.NICE`` while it makes the init, as the Python spare does."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    fds: list[int] = []
    copies: list[int] = []
    try:
        fds = channels()
        req_r, req_w, report_r, report_w, init_r, init_w = fds
        # copies above the targets (0-7), so no dup2 below closes another's source
        for fd in (req_r, report_w, init_r, programs.init_fd, programs.python_fd):
            copies.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        actions: list[tuple[Any, ...]] = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDWR, 0),
                                          (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2)]
        actions += [(os.POSIX_SPAWN_DUP2, fd, target) for fd, target in zip(copies, range(3, 8), strict=True)]
        pid = os.posix_spawn(programs.monitor, ["orch-spare", str(base), str(NICE)], {}, file_actions=actions)
    except OSError:
        for fd in fds:
            os.close(fd)
        raise
    finally:
        for fd in copies:
            os.close(fd)
    for fd in (req_r, report_w, init_r):
        os.close(fd)
    return Spare(pid, req_w, report_r, init_w, c=True)


def requests(req: dict[str, Any]) -> tuple[bytes, bytes] | None:
    """(the init's ops, the monitor's request) for ``req``; None when ``initplan`` cannot express it
    or the request does not use the C supervisor (whose binary the monitor execs)."""
    if not req.get("supervisor"):
        return None
    ops = initplan.compile_ops(req)
    return None if ops is None else (ops, monitor_request(req))


def monitor_request(req: dict[str, Any]) -> bytes:
    """``orch-spare``'s request: NUL-terminated key/value pairs, what ``monitor.serve`` would take from
    the JSON: the state dir, the bundle (for error messages), restart.json's content with a restart
    policy, the cgroup dirs to move the init into, and the supervisor's command line
    (``monitor._exec_supervisor``'s, for a container just created: no restarts yet)."""
    policy = restart.from_annotations(req["spec"].get("annotations", {}))
    state_dir = req["state_dir"]
    pairs = [("state_dir", state_dir), ("bundle", req["bundle"]), ("supervisor", req["supervisor"]),
             ("monitor_err", os.path.join(state_dir, statedir.MONITOR_ERR))]
    pairs += [("cgroup", str(d)) for d in req.get("cgroup_dirs", ())]
    args = [str(int(req.get("log_max_bytes", 10 << 20)))]
    if policy.enabled:
        # restart.json holds the request as monitor.serve writes it
        pairs += [("restart_path", os.path.join(state_dir, statedir.RESTART_REQ)),
                  ("restart_json", json.dumps(monitor.restart_request(req))), ("restartable", "1")]
        args += [*restart.supervisor_args(policy, 0), *monitor._restarter_argv(req)]
    pairs += [("arg", a) for a in args]
    return b"".join(os.fsencode(k) + b"\0" + os.fsencode(v) + b"\0" for k, v in pairs)
