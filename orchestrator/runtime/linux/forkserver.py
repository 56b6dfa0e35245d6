"""A small single-threaded fork server (its client, ``ForkServer``, is in ``forkclient``).

Forking a multi-threaded process is unsafe (locks held by other threads stay locked in the child) and
``unshare(CLONE_USERNS)`` / ``setns`` of a mount namespace fail there. The orchestrator runs threads
(watch, git, logs), so ``LinuxRuntime`` starts this server as a fresh ``python -m`` process before it is
needed; it imports the few modules the children use, then forks:

* ``create``: a setsid'd ``monitor`` child (which forks the container's init, via a stage 1 with userns); the
  reply is the monitor's set-up report.
* ``exec``: a double-forked ``execproc`` child joining a running container; stdio and a status pipe are
  passed in as file descriptors (SCM_RIGHTS) and go straight to the caller.
* ``files``: a child that joins a running container's mount namespace and rewrites its config/secret
  files (``filemounts.rotate_in``); the reply lists the targets changed.

Config/secret contents (``create`` with ``files``, and ``files``) come as a memfd passed with the request,
never inside the JSON; they are read into memory here and reach the container init by fork.

Requests and replies are single JSON messages on a SOCK_SEQPACKET socketpair. The server exits when the
client's end closes (the API process exited or was killed); monitors and containers live on.

The server runs from a sealed memfd copy of the interpreter (``forkclient.sealed_interpreter``), so no
process that later execs into a container has the host's python binary as its ``/proc/self/exe``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.linux.forkclient import MAX_MSG, sealed_copy

if TYPE_CHECKING:     # imported in serve(): only the server process needs them
    from orchestrator.runtime.linux.cspare import Programs
    from orchestrator.runtime.linux.spare import Spare

SPARES = 2                 # warm spares per server (``spare``, ``cspare``)
IDLE_REFILL_S = 0.005      # how long to be idle before making one while another is left


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _double_fork(body: Any, *args: Any) -> None:
    """Run ``body(*args)`` in a grandchild; the child exits at once so the grandchild is re-parented
    away from us (to the host init or the nearest subreaper) and we never have to reap it."""
    pid = os.fork()
    if pid == 0:
        try:
            if os.fork() == 0:
                body(*args)
        finally:
            os._exit(0)
    with contextlib.suppress(ChildProcessError):     # the SIGCHLD handler may have reaped it
        os.waitpid(pid, 0)


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _monitor(req: dict[str, Any], report_fd: int) -> NoReturn:
    from orchestrator.runtime.linux import monitor
    os.setsid()
    monitor.run(req, report_fd)


def _files_payload(req: dict[str, Any], fds: list[int]) -> bytes:
    """Config/secret contents arrive as a memfd next to the request (never inside the JSON); they stay
    in memory, inherited by the forked child that uses them."""
    from orchestrator.runtime.linux import filemounts
    if not fds:
        raise RuntimeFailure("files requested but no payload descriptor passed", op=req["op"])
    return filemounts.read_payload(fds[0])


def _child_reply(sock: socket.socket, body: Callable[[int], object], died: str, op: str,
                 path: str) -> tuple[int, dict[str, Any]]:
    """Fork a child running ``body(report_fd)`` and read its JSON report to EOF: (child pid, report),
    or an error naming ``died`` when it ended without one."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
        if pid == 0:
            _in_child(sock, lambda: body(w))
    finally:
        os.close(w)
    try:
        raw = _read_all(r)
    finally:
        os.close(r)
    if not raw:
        return pid, {"ok": False, "error": {"message": died, "op": op, "path": path, "errno": 0}}
    reply: dict[str, Any] = json.loads(raw)
    return pid, reply


def _create(req: dict[str, Any], fds: list[int], sock: socket.socket, raw: bytes,
            spares: list[Spare]) -> dict[str, Any]:
    from orchestrator.runtime.linux import spare
    # "go": the API side makes the cgroup while we and the init work, and writes GO to this pipe
    # (the last fd) when it is there; the monitor waits for it before moving the init (monitor.await_go)
    go_fd = fds[-1] if req.get("go") and fds else -1
    sent = spare.requests(spares[0], req, raw) if spares else None
    if sent is not None:
        ready = spares.pop(0)             # the oldest: its set-up is surely done
        ends = ready.ends()
        try:
            reply = spare.hand_over(ready, *sent, go_fd)
        finally:
            _SERVER_ONLY.difference_update(ends)      # closed by hand_over
        if reply is not None:
            return reply
    if req.get("files"):
        req["files_payload"] = _files_payload(req, fds)
    req["go_fd"] = go_fd                  # inherited by the monitor forked below
    # one fork, not two: the monitor is our child until we exit (then the host init adopts it) and is
    # reaped by our SIGCHLD handler. setsid (in _monitor): no terminal signals from the CLI reach it.
    _pid, reply = _child_reply(sock, lambda w: _monitor(req, w), "container monitor died during set-up",
                               "create", req.get("state_dir", ""))
    return reply


def _rotate(req: dict[str, Any], fds: list[int], sock: socket.socket) -> dict[str, Any]:
    """Rewrite files of a running container, in a child that joins its mount namespace (setns needs a
    single-threaded process, and we must not change our own namespaces)."""
    from orchestrator.runtime.linux import filemounts
    payload = _files_payload(req, fds)
    pid, reply = _child_reply(sock, lambda w: filemounts.run_rotation(req, payload, w),
                              "file rotation helper died", "update_files", str(req.get("pid", "")))
    with contextlib.suppress(ChildProcessError):     # the SIGCHLD handler may have reaped it
        os.waitpid(pid, 0)
    return reply


def _exec(req: dict[str, Any], fds: list[int], sock: socket.socket) -> dict[str, Any]:
    from orchestrator.runtime.linux import execproc
    _double_fork(_in_child, sock, lambda: execproc.run(req, fds))
    return {"ok": True}


# the server's ends of its spare's pipes: no child may hold them (an exec helper lives as long as its
# command; the spare reads its request by length, but an end of file must still mean "server gone")
_SERVER_ONLY: set[int] = set()


def _in_child(sock: socket.socket, body: Any) -> NoReturn:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)   # our reaping handler must not steal their children
    sock.close()                      # the API must see EOF when we (the server) go away
    for fd in _SERVER_ONLY:
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        body()
    finally:
        os._exit(1)


def serve(sock: socket.socket, programs: Programs | None = None) -> None:
    # everything the children need is imported once, here, so a fork costs no import time
    from orchestrator.runtime.linux import execproc, filemounts, init, monitor, pysupervise  # noqa: F401
    for name in ("cgroups", "seccomp", "capabilities"):
        with contextlib.suppress(ImportError):
            __import__(f"orchestrator.runtime.linux.{name}")
    from orchestrator.runtime.linux import capabilities
    capabilities.last_cap()             # cached here once, not read again by every init
    _warm_cgroups()
    # keep the children's copy-on-write pages shared: no collector passes touching every object
    gc.collect()
    gc.freeze()
    gc.disable()
    # monitors are our children until we exit: reap each as soon as it ends (recv is retried, PEP 475)
    signal.signal(signal.SIGCHLD, lambda _sig, _frame: _reap())
    from orchestrator.runtime.linux import spare
    spares: list[Spare] = []        # up to SPARES, made while we wait for the next request
    try:
        _serve(sock, spares, programs)
    finally:
        for s in spares:
            spare.discard(s)


def _warm_cgroups() -> None:
    """Detect the default cgroup root's layout here, once (``cgroups.driver_for``), so that the children
    we fork do not: an exec helper joining a container's cgroup, a Python supervisor reading OOM
    kills (~0.7 ms each)."""
    with contextlib.suppress(ImportError, OSError, RuntimeFailure):
        from orchestrator.runtime.linux.cgroups import driver_for
        driver = driver_for()
        driver.cgroup(driver.default_parent()).dirs()          # and each hierarchy's real path


def _readable(sock: socket.socket, timeout_s: float) -> bool:
    poller = select.poll()              # not select(): our socket's number may be above FD_SETSIZE
    poller.register(sock.fileno(), select.POLLIN)
    try:
        return bool(poller.poll(timeout_s * 1000))
    except OSError:
        return True


def _add_spare(sock: socket.socket, spares: list[Spare], programs: Programs | None) -> bool:
    from orchestrator.runtime.linux import cspare, spare
    try:
        made = cspare.spawn(programs) if programs else spare.fork(lambda body: _in_child(sock, body))
    except OSError:                  # no spare (EAGAIN, ENOMEM): the ordinary path
        return False
    spares.append(made)
    _SERVER_ONLY.update(made.ends())
    return True


def _serve(sock: socket.socket, spares: list[Spare], programs: Programs | None) -> None:
    for _ in range(SPARES):                  # at start: all of them
        if not _add_spare(sock, spares, programs):
            break
    while True:
        # after a create: with none left at once; otherwise once we have been idle a moment, so the
        # fork does not compete for the CPU with the caller going on with the container just made
        while len(spares) < SPARES and (not spares or not _readable(sock, IDLE_REFILL_S)):
            if not _add_spare(sock, spares, programs):
                break
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MSG, 8)
        except (ConnectionError, OSError):
            return
        if not data:
            return
        try:
            req = json.loads(data)
            if req["op"] == "create":
                reply = _create(req, fds, sock, data, spares)
            elif req["op"] == "exec":
                reply = _exec(req, fds, sock)
            elif req["op"] == "files":
                reply = _rotate(req, fds, sock)
            else:             # a client bug: never answer "done" for something not done
                reply = {"ok": False, "error": {"message": f"fork server: unknown op {req['op']!r}",
                                                "op": "forkserver", "path": "", "errno": 0}}
        except Exception as exc:  # reported to the client; the server itself stays up
            reply = {"ok": False, "error": {"message": f"fork server: {type(exc).__name__}: {exc}",
                                            "op": "forkserver", "path": "", "errno": 0}}
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(json.dumps(reply).encode())


def main(argv: list[str]) -> None:
    sock = socket.socket(fileno=int(argv[1]))
    if len(argv) > 2:
        os.close(int(argv[2]))        # the sealed copy we were exec'd from: mapped now, fd not needed
    os.set_inheritable(sock.fileno(), False)     # passed to us inheritable; no program we spawn may hold it
    programs = None
    if len(argv) > 4:
        # kept open for the C spares; without them (unreadable, no memfd) the spares are Python ones
        from orchestrator.runtime.linux.cspare import Programs
        with contextlib.suppress(OSError):
            programs = Programs(argv[3], sealed_copy(argv[4], "orch-init"),
                                os.open("/proc/self/exe", os.O_RDONLY | os.O_CLOEXEC))
    serve(sock, programs)


if __name__ == "__main__":
    main(sys.argv)
