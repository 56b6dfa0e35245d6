"""``exec``: run a process inside a running container (the child side; ``native.exec`` is the caller).

Runs in a double-forked child of the ``forkserver`` with the caller's stdin/stdout/stderr and a status
pipe passed in as file descriptors. It checks the container's init is still the process it was (pid +
start time), joins its cgroup and every namespace it has that we do not share (user first), forks once
more (joining a pid namespace only applies to children), and in that grandchild applies the container
process's rlimits, user, capabilities, no_new_privs and seccomp filter before ``execve``. It is
non-dumpable from the start (a container process must not reach it through /proc), runs from the fork
server's sealed interpreter copy, and resets signal dispositions and the blocked mask before ``execve``.
The status pipe receives JSON messages, one after another: ``{"pid": n}`` once the process is forked
(so the caller can kill it on a timeout), then ``{"exit_code": n}``, or ``{"error": {...}}`` instead.
Every process leads a session of its own (as with runc): it never shares the caller's, nor a terminal of
the caller's (``/dev/tty`` fails with ENXIO without ``-t``; ``setsid prog`` inside forks). With
``"tty": true`` the caller's stdio is the slave of a pty it relays (``execrelay``), which becomes the
process's controlling terminal. The helper kills the process (and its group) when nobody reads the
status pipe any more: the caller was killed or its terminal closed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import select
import signal
import termios
from typing import Any, NoReturn

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.linux import init, statedir
from orchestrator.runtime.linux import syscalls as sc
from orchestrator.runtime.linux.spec import rlimit_number

# user first: it decides what we may do in the others; mnt last among those that change paths
_ORDER = ("user", "cgroup", "ipc", "uts", "net", "pid", "time", "mnt")
_FLAGS = {"user": sc.CLONE_NEWUSER, "cgroup": sc.CLONE_NEWCGROUP, "ipc": sc.CLONE_NEWIPC,
          "uts": sc.CLONE_NEWUTS, "net": sc.CLONE_NEWNET, "pid": sc.CLONE_NEWPID,
          "time": sc.CLONE_NEWTIME, "mnt": sc.CLONE_NEWNS}


def _report(fd: int, msg: dict[str, Any]) -> None:
    os.write(fd, json.dumps(msg).encode())


def _open_namespaces(pid: int) -> list[tuple[str, int]]:
    opened = []
    for name in _ORDER:
        theirs = f"/proc/{pid}/ns/{name}"
        try:
            if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                continue          # shared with us (e.g. the host network): joining is a no-op or EINVAL
            opened.append((name, os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)))
        except FileNotFoundError:
            continue
    return opened


def kill_group(pid: int) -> None:
    """SIGKILL an exec'd process and its process group (it leads one: ``setsid``), so ``sh -c 'a | b'``
    takes its children along; just the process while it has not reached its setsid yet."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_or_orphaned(pid: int, status_fd: int) -> None:
    """Until the process ends, or until nobody reads our status pipe any more (the caller was killed,
    or its terminal closed): then the process is killed, as an interrupted caller would have done."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return                          # (gone already) the waitpid that follows reaps it
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(status_fd, 0)   # POLLERR: the read end is closed
        while True:
            events = dict(poller.poll())
            if pidfd in events:
                return
            if events.get(status_fd, 0) & (select.POLLERR | select.POLLHUP):
                kill_group(pid)
                return
    finally:
        os.close(pidfd)


def _process_child(req: dict[str, Any], status_fd: int) -> NoReturn:
    """In the container's pid namespace: become the container's process, then execve."""
    step = "exec setup"
    try:
        process: dict[str, Any] = req["process"]
        step = "session"
        os.setsid()                      # never in the caller's session (nor with its terminal)
        if req.get("tty"):
            step = "terminal"            # our stdio is the caller's pty: our controlling terminal
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)     # (job control, ^C from the keyboard)
        step = "rlimits"
        for rl in process.get("rlimits", []):
            resource.setrlimit(rlimit_number(rl["type"]), (int(rl["soft"]), int(rl["hard"])))
        nnp = bool(process.get("noNewPrivileges"))
        step = "seccomp"
        if not nnp:
            init.install_seccomp(req)
        step = "user and capabilities"
        init.set_user_and_caps(process)
        step = "cwd"
        os.chdir(req.get("cwd") or process.get("cwd", "/"))
        if nnp:
            step = "no_new_privs"
            sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
            step = "seccomp"
            init.install_seccomp(req)
        env = dict(e.split("=", 1) for e in process.get("env", []) if "=" in e)
        env.update(e.split("=", 1) for e in req.get("env", []) if "=" in e)
        step = "find executable"             # a missing program: execve's own error, as before
        init.check_executable(req["argv"][0], env, must_exist=False)
        step = "signals"
        init.reset_signals()            # python's ignored SIGPIPE/SIGXFSZ must not reach the program
        step = "execve"
        os.execvpe(req["argv"][0], req["argv"], env)
    except BaseException as exc:  # every failure is reported to the caller, then this process ends
        _report(status_fd, {"error": init._error(step, exc)})
    os._exit(127)


def run(req: dict[str, Any], fds: list[int]) -> NoReturn:
    stdin, stdout, stderr, status_fd = fds
    try:
        # first, before joining anything: a container process must never reach our /proc/PID/exe, fds
        # (the status pipe) or mem; the final execve makes the program dumpable again (init.make_undumpable)
        init.make_undumpable()
        for target, fd in enumerate((stdin, stdout, stderr)):
            os.dup2(fd, target)
        for fd in {stdin, stdout, stderr} - {0, 1, 2}:
            os.close(fd)
        os.set_inheritable(status_fd, False)
        if not statedir.alive(int(req["pid"]), int(req["start_time"])):
            raise RuntimeFailure("container is not running", op="exec", path=str(req["pid"]))
        namespaces = _open_namespaces(int(req["pid"]))
        init.join_cgroup(req, os.getpid())
        for name, fd in namespaces:
            sc.setns(fd, _FLAGS[name], f"/proc/{req['pid']}/ns/{name}")
            os.close(fd)
        if any(name == "user" for name, _ in namespaces):
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        os.chdir("/")               # our old cwd belongs to the host's mount namespace
        pid = os.fork()
        if pid == 0:
            _process_child(req, status_fd)
        # the caller kills this pid when its timeout expires; a host-namespace pid (fork answers in
        # ours), and not reusable before the waitpid below reaps it
        with contextlib.suppress(BrokenPipeError):   # the caller is gone: the next line kills it
            _report(status_fd, {"pid": pid})
        _wait_or_orphaned(pid, status_fd)
        _, status = os.waitpid(pid, 0)
        # a failed set-up in the child reported already; the exit code then is 127
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        _report(status_fd, {"exit_code": code})
    except BaseException as exc:  # every failure is reported to the caller, then this process ends
        _report(status_fd, {"error": init._error("exec join", exc)})
    os._exit(0)
