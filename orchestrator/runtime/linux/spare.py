"""A container monitor and init forked ahead of a ``create`` (warm spares, two per fork server).

This is the Python spare (a fork of the server, running ``init.container_init``), used without a C
compiler or with ``LinuxRuntime(c_init=False)``; by default spares are C programs (``cspare``) that
follow the same protocol. ``requests``, ``hand_over`` and ``discard`` serve both.

Forking the fork server (a Python process of ~20 MB) costs ~1.5 ms on these machines, forking the
monitor again for the init ~2 ms, and creating network, IPC and UTS namespaces ~0.5 ms: most of a
container start. None of it depends on the request, so the ``forkserver`` does it while it is idle:

* ``fork`` (server side) forks a spare monitor, which becomes a monitor (``monitor.become_monitor``),
  unshares a pid namespace and forks a spare init; the spare init makes itself undumpable, creates new
  network, IPC and UTS namespaces and waits for a request on its channel.
* ``usable`` (server side) says whether a request fits what the spare prepared: a new pid, network, IPC
  and UTS namespace, no user namespace, no namespace to join, no config/secret files (their contents
  reach the init by fork, see ``forkserver``). Anything else takes the ordinary path (``monitor.run``).
* ``hand_over`` writes the request (``requests``: its JSON as the API sent it, or what ``cspare``
  compiled) to the spare init through a pipe and to the spare monitor through a stream socket, with
  the create's "go" pipe attached, and reads the monitor's report exactly as ``forkserver`` reads an
  ordinary monitor's. The init gets it first and directly (a relay through the monitor cost ~1 ms of
  wake-ups and parsing on the start path), tells the monitor it has taken it (``ACCEPTED``), unshares
  the rest (mount namespace), then runs ``init.container_init``: the steps, their order and the error
  reports are the ordinary path's. The monitor meanwhile waits for the API side's word that the cgroup
  is made (``monitor.await_go``) and moves the init into it, which the init waits for before anything
  the container could run. A spare declines a request (the server then takes
  the ordinary path) only while nothing was done with it: its init failed ahead, or could not get the
  server's priority back (see ``fork``) and left without taking it. The mount namespace is not made
  ahead: a copy of the host's mount table taken before the request could miss a mount made since (a
  bind source).

The server replaces a used spare after answering: at once when none is left, otherwise once it has been
idle for a few milliseconds (``forkserver.SPARES``, ``IDLE_REFILL_S``), so the fork does not compete
with the caller going on with the container just made. When the server goes away the spare
monitor reads EOF, kills its init and reaps it; ``discard`` waits for that, so nothing outlives the
server.

Neighbours: ``forkserver`` (the server side), ``monitor`` (set-up protocol, supervision), ``init``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
from dataclasses import dataclass
from typing import Any, NoReturn

from orchestrator.fsutil import write_all
from orchestrator.runtime.linux import init, initplan, monitor
from orchestrator.runtime.linux import syscalls as sc
from orchestrator.runtime.linux.spec import namespace_plan

AHEAD = initplan.AHEAD       # network, IPC and UTS: made by the spare init before a request
NICE = 5                     # how much lower the priority of a spare being made is (see ``fork``)
ACCEPTED = b"accepted"       # the spare init to its monitor: it has the request and works on it


@dataclass
class Spare:
    """Server side: the spare monitor's pid, the socket its request goes into, the pipes of its init's
    request and of its report; whether it is the C spare (``cspare``: orch-spare and orch-init) or
    this module's."""

    pid: int
    req_w: int
    report_r: int
    init_w: int
    c: bool = False

    def ends(self) -> tuple[int, int, int]:
        """The server's ends: no other child of the server may hold them (see ``forkserver``)."""
        return self.req_w, self.report_r, self.init_w


def usable(req: dict[str, Any]) -> bool:
    if req.get("files"):
        return False
    plan = namespace_plan(req["spec"])
    return not plan.new_user and not plan.joins and bool(plan.new_flags & sc.CLONE_NEWPID) \
        and plan.new_flags & AHEAD == AHEAD


def requests(spare: Spare, req: dict[str, Any], raw: bytes) -> tuple[bytes, bytes] | None:
    """What ``spare``'s init and monitor are sent for ``req`` (``raw``: its JSON as the API sent it,
    which is what ours read; the C spare's are compiled by ``cspare``); None when the spare cannot
    take it (it is then kept for a later request)."""
    if not usable(req):
        return None
    if spare.c:
        from orchestrator.runtime.linux import cspare
        return cspare.requests(req)
    return raw, raw


def fork(in_child: Any) -> Spare:
    """Fork a spare monitor; ``in_child(body)`` is the server's child wrapper (closes its socket and
    the ends of a spare's pipes that only the server may hold, so that an exec helper, which lives as
    long as its command, never keeps them open).

    The spare sets itself up at a lower priority (``NICE``; raising one's own nice value needs no
    privilege): it is made right after a create is answered, when the caller wakes up to go on with
    that container and a 2-CPU host has no core to spare. Once made, the monitor and its init wait at
    the server's priority again, so that both wake at once when the request comes; a spare that may
    not restore it (no CAP_SYS_NICE) declines the request."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    fds: list[int] = []
    try:
        fds = channels()
        req_r, req_w, report_r, report_w, init_r, init_w = fds
        pid = os.fork()
    except OSError:
        for fd in fds:
            os.close(fd)
        raise
    if pid == 0:
        for fd in (req_w, report_r, init_w):
            os.close(fd)
        in_child(lambda: _monitor_main(req_r, report_w, init_r, base))
    for fd in (req_r, report_w, init_r):
        os.close(fd)
    return Spare(pid, req_w, report_r, init_w)


def channels() -> list[int]:
    """A spare's channels, close-on-exec: its monitor's request (a stream socket: the request comes
    with the create's "go" pipe attached), its report, its init's request (pipes)."""
    fds: list[int] = []
    try:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds += [a.detach(), b.detach()]
        for _ in range(2):
            fds += os.pipe2(os.O_CLOEXEC)
    except OSError:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def hand_over(spare: Spare, for_init: bytes, for_monitor: bytes, go_fd: int = -1) -> dict[str, Any] | None:
    """The spare's report on a create request (what its init and its monitor get: ``requests``);
    None when the spare could not take it (gone, its init failed ahead, or it may not restore its
    priority): nothing was started, and the caller takes the ordinary path. The spare is used up
    either way."""
    try:
        # length first: each reads one whole request, never waiting for an end of file. The init
        # first: it is the one with work to do. A broken pipe there: it is gone (it failed ahead) and
        # nothing started. Once it has the request, a monitor gone is a failed create, never a
        # fallback: the init may already be at work on the rootfs the ordinary path would use.
        try:
            write_all(spare.init_w, struct.pack(">Q", len(for_init)) + for_init)
        except BrokenPipeError:
            return None
        try:
            # with the create's "go" pipe (``ForkServer.exchange``): the monitor moves the init into
            # its cgroup once the API side, which makes it meanwhile, says so there (monitor.await_go)
            _send_with_fd(spare.req_w, struct.pack(">Q", len(for_monitor)) + for_monitor, go_fd)
        except BrokenPipeError:
            out = b""
        else:
            out = _read_all(spare.report_r)
    finally:
        discard(spare, wait=False)
    if not out:
        return {"ok": False, "error": {"message": "container monitor died during set-up", "op": "create",
                                       "path": "", "errno": 0}}
    # orch-spare passes non-ASCII bytes of a path through, and may cut a long report short
    reply: dict[str, Any] = json.loads(out.decode(errors="replace"))
    return None if reply.get("declined") else reply


def discard(spare: Spare, *, wait: bool = True) -> None:
    """Close our ends; with ``wait``, until an unused spare (and its init) has gone."""
    for fd in spare.ends():
        if fd >= 0:
            os.close(fd)
    spare.req_w = spare.report_r = spare.init_w = -1
    if wait:
        with contextlib.suppress(ChildProcessError):     # the server's SIGCHLD handler may have reaped it
            os.waitpid(spare.pid, 0)


def _send_with_fd(sock_fd: int, data: bytes, fd: int) -> None:
    """``data`` down a stream socket, ``fd`` (unless -1) attached to its first byte."""
    with socket.socket(fileno=os.dup(sock_fd)) as sock:
        sent = socket.send_fds(sock, [data], [fd] if fd >= 0 else [])
        if sent < len(data):        # never an empty send: EPIPE once the reader has all and closed
            sock.sendall(data[sent:])


def _recv_with_fd(sock_fd: int) -> tuple[bytes | None, int]:
    """A length-prefixed request and the descriptor attached to it (-1: none); None at an end of file
    first (the server went away)."""
    with socket.socket(fileno=os.dup(sock_fd)) as sock:
        head, fds, _flags, _addr = socket.recv_fds(sock, 8, 1)
    go_fd = fds[0] if fds else -1
    if len(head) < 8:
        rest = _read_exact(sock_fd, 8 - len(head)) if head else None
        if rest is None:
            return None, go_fd
        head += rest
    return _read_exact(sock_fd, struct.unpack(">Q", head)[0]), go_fd


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_exact(fd: int, size: int) -> bytes | None:
    """``size`` bytes, or None at an end of file first (the server went away)."""
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_request(fd: int) -> bytes | None:
    head = _read_exact(fd, 8)
    return None if head is None else _read_exact(fd, struct.unpack(">Q", head)[0])


# ---- the spare monitor -------------------------------------------------------------------------------

@dataclass
class _Init:
    pid: int
    out_r: int
    err_r: int
    wake_r: int
    chan: socket.socket


def _monitor_main(req_fd: int, report_fd: int, init_req_fd: int, base_nice: int) -> NoReturn:
    code = 1
    try:
        os.setpriority(os.PRIO_PROCESS, 0, min(base_nice + NICE, 19))    # see ``fork``
        init.close_fds({req_fd, report_fd, init_req_fd})
        os.setsid()                          # as an ordinary monitor: no terminal signals from the CLI
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):                 # fd 0 becomes the init's stdin; 1 and 2 until monitor.err
            os.dup2(null, fd)
        os.close(null)
        monitor.become_monitor()
        ahead = _fork_init((req_fd, report_fd), init_req_fd, base_nice)
        os.close(init_req_fd)        # the init's alone: the server's write fails once the init is gone
        _restore_priority(base_nice)
        raw, go_fd = _recv_with_fd(req_fd)
        os.close(req_fd)
        if raw is not None and _accepted(ahead):
            _restore_priority(base_nice)     # again: ours does not matter to the container, its init's does
            try:
                req = json.loads(raw)
                monitor._redirect_stdio(req["state_dir"])
                monitor.await_go(go_fd, req["state_dir"])
                monitor.serve(req, report_fd, lambda r: _spawn(r, ahead))
            except BaseException:
                # before or during _spawn (whose own failures kill it too): the init has the request
                # and must not go on setting up a container whose create failed
                with contextlib.suppress(ProcessLookupError):
                    os.kill(ahead.pid, signal.SIGKILL)
                raise
        else:
            # the server went away, or the init did not take the request (so it did nothing with it):
            # it is gone before the server takes the ordinary path, which uses the same rootfs and fifo
            with contextlib.suppress(ProcessLookupError):
                os.kill(ahead.pid, signal.SIGKILL)
            ahead.chan.close()
            with contextlib.suppress(ChildProcessError):
                os.waitpid(ahead.pid, 0)
            if raw is not None:
                os.write(report_fd, b'{"declined": true}')
        code = 0
    except BaseException as exc:  # reported to create, or to monitor.err once set-up is over
        monitor.report_failure(report_fd, exc)
    finally:
        os._exit(code)


def _restore_priority(base_nice: int) -> None:
    """Back to the server's priority once our work ahead is done, so that a request is served at once
    (a process niced +5 waits behind everything else runnable on its CPU). Without CAP_SYS_NICE this
    fails; the init then refuses the request and the monitor declines it (``_accepted``)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, base_nice)


def _accepted(ahead: _Init) -> bool:
    """Whether the init took the request: it says so (``ACCEPTED``) before doing anything with it. An
    init gone without saying so did nothing (it failed ahead, or it could not get the server's priority
    back and left): the request is declined and the ordinary path makes the container from scratch.
    Once it has said so, the create is ours to finish or to fail, never to hand back: its mounts may
    already have touched the rootfs (the overlay's work dir, mount points made in the upper dir)."""
    ahead.chan.settimeout(monitor.SETUP_TIMEOUT_S)
    try:
        return ahead.chan.recv(16) == ACCEPTED
    except OSError:                 # it went away abnormally, or the timeout
        return False


def _fork_init(close_in_child: tuple[int, ...], init_req_fd: int, base_nice: int) -> _Init:
    """``monitor._spawn``'s first half for a request not known yet: our children's pid namespace, then
    the init, which reads its request from ``init_req_fd`` (the server writes it there)."""
    sc.unshare(sc.CLONE_NEWPID)              # for our children: the init will be PID 1
    return _Init(*monitor.fork_init(lambda chan, stdio: _init_main(chan, stdio, init_req_fd, base_nice),
                                    close_in_child))


def _spawn(req: dict[str, Any], ahead: _Init) -> tuple[int, int, int, int]:
    """``monitor._spawn``'s second half: the init has the request from the server; its cgroup, then
    the rest of its set-up."""
    init_pid = monitor.finish_setup(req, ahead.pid, ahead.chan, direct=True)
    return init_pid, ahead.out_r, ahead.err_r, ahead.wake_r


# ---- the spare init ----------------------------------------------------------------------------------

def _init_main(chan: socket.socket, stdio: tuple[int, int, int], req_fd: int, base_nice: int) -> NoReturn:
    """PID 1 of a new pid namespace, waiting for its container; ``init.direct`` with the namespaces
    that do not depend on the request made first."""
    step = "dumpable"
    try:
        init.make_undumpable()               # before anything a container process could reach
        step = "unshare"
        sc.unshare(AHEAD)
        step = "loopback"                    # needs the rtnl lock, which a dying network namespace
        init.loopback_up()                   # of an earlier container may hold for milliseconds
        _restore_priority(base_nice)         # made; now waiting at the server's priority (see ``fork``)
        step = "request"
        raw = _read_request(req_fd)
        if raw is None:
            os._exit(0)                      # never used: the server went away
        os.close(req_fd)
        if os.getpriority(os.PRIO_PROCESS, 0) != base_nice:
            os._exit(0)                      # see ``_accepted``: the monitor declines, nothing was done
        chan.send(ACCEPTED)
        req = json.loads(raw)
        plan = namespace_plan(req["spec"])
        step = "unshare"                     # the rest but the cgroup namespace (see init.stage1)
        rest = plan.new_flags & ~(sc.CLONE_NEWPID | sc.CLONE_NEWCGROUP | AHEAD)
        if rest:
            sc.unshare(rest)
    except BaseException as exc:  # every failure is reported to the monitor, then this process ends
        init.fail(chan, step, exc)
    init.container_init(req, chan, stdio, in_userns=False,
                        new_cgroup_ns=bool(plan.new_flags & sc.CLONE_NEWCGROUP))

