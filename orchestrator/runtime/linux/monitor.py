"""The per-container monitor (our conmon): parent of the container init for the container's whole life.

Forked by the ``forkserver`` and setsid'd (it survives the CLI exiting or a ``kill -9`` of the
orchestrator: the host init adopts it). It is a child subreaper, forks the init (directly, or through
``init.stage1`` with a user namespace), writes uid/gid maps when asked, moves the init into its cgroup,
and reports the outcome of set-up to the fork server over ``report_fd``. Then it supervises: it execs
``orch-supervise`` (``supervise.c``, built by ``cmonitor``; ~0.1 MB of unique memory) or, without it,
runs the same loop in Python (``pysupervise``): copy the container's stdout/stderr into a size-capped
JSON-lines log, reap the init, record exit code / signal / OOM kill in ``exit.json`` atomically, exit.
With a restart policy (``restart``) the monitor saves its request as ``restart.json`` and the supervisor,
after an exit the policy restarts, becomes the ``restarter`` (same pid), which uses ``_spawn`` and
``_supervise_or_exec`` from here to run the container again. SIGTERM is blocked in the monitor for its
whole life (across the execs): it only wakes a backoff, and the container init unblocks it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.linux import init, restart, statedir
from orchestrator.runtime.linux import syscalls as sc
from orchestrator.runtime.linux.forkclient import GO
from orchestrator.runtime.linux.spec import namespace_plan

SETUP_TIMEOUT_S = 60.0
FILES_FD = 5                 # the config/secret files payload across the supervisor's exec (restarts)
EXE_FD = 6                   # the sealed interpreter (memfd) the restarter is exec'd from
NETNS_FD = 7                 # the container's network namespace, held across in-place restarts


def held_netns(req: dict[str, Any], init_pid: int) -> int | None:
    """A close-on-exec fd of the container's network namespace, for the supervisor to hold (as
    ``NETNS_FD``) while the container may be restarted in place, so that the restarter rejoins it
    (``restarter.rejoin_netns``): the veths, addresses and routes the network manager put there at
    create stay the container's, as a pod's network outlives its containers (and a ``container:x``
    sibling keeps x's). Opened before the create is reported, while the init waits for ``start``: its
    PID 1 cannot have left the namespace yet. None for the host's network, with a user namespace (a
    new one at restart could not use a namespace the old one owns), or when it cannot be opened (the
    container runs on, and a restart gets a fresh namespace, as before)."""
    if not os.path.exists(os.path.join(req["state_dir"], statedir.RESTART_REQ)):
        return None                     # not restartable: nothing to hold it for
    plan = namespace_plan(req["spec"])
    joins_net = any(flag == sc.CLONE_NEWNET for flag, _ in plan.joins)
    if plan.new_user or any(flag == sc.CLONE_NEWUSER for flag, _ in plan.joins) or \
            not (plan.new_flags & sc.CLONE_NEWNET or joins_net):
        return None
    try:
        return os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        os.write(2, f"monitor: cannot hold the network namespace of {init_pid}: {exc}\n".encode())
        return None


def holds_netns() -> bool:
    """Whether NETNS_FD is a network namespace: one the supervisor held across its exec (restarter)."""
    try:
        return os.readlink(f"/proc/self/fd/{NETNS_FD}").startswith("net:[")
    except OSError:
        return False


def inherited_netns() -> int | None:
    """The restarter's: a close-on-exec copy of the namespace the supervisor held (NETNS_FD), if any."""
    return fcntl.fcntl(NETNS_FD, fcntl.F_DUPFD_CLOEXEC, 10) if holds_netns() else None


def _write_maps(pid: int, spec: dict[str, Any]) -> None:
    linux = spec.get("linux", {})
    for name, key in (("uid_map", "uidMappings"), ("gid_map", "gidMappings")):
        text = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in linux.get(key, []))
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(text)
        except OSError as exc:
            raise RuntimeFailure(f"cannot write {name}: {exc.strerror}", op="write",
                                 path=f"/proc/{pid}/{name}", errno=exc.errno or 0) from exc


def _join_cgroup(req: dict[str, Any], pid: int) -> None:
    """Move ``pid`` into the container's cgroup: the cgroup.procs file of each of ``cgroup_dirs`` (listed
    by ``LinuxRuntime.create``, and kept in restart.json for restarts: importing the cgroup drivers
    costs ~100 ms in the restarter, detecting the layout again ~2 ms here)."""
    for d in req.get("cgroup_dirs", ()):
        path = os.path.join(d, "cgroup.procs")
        try:
            with open(path, "w") as f:
                f.write(str(pid))
        except OSError as exc:
            raise RuntimeFailure(f"cannot move the init into its cgroup: {exc.strerror}", op="write",
                                 path=path, errno=exc.errno or 0) from exc


def _setup(chan: socket.socket, req: dict[str, Any], init_pid: int, go_fd: int = -1) -> int:
    """Serve stage 1 and the init until the init says it is ready; returns the init's host pid.
    ``go_fd``: the cgroup's word (``await_go``), awaited when stage 1 names the init, not before
    (its uid/gid maps do not need the cgroup)."""
    chan.settimeout(SETUP_TIMEOUT_S)
    while True:
        try:
            raw = chan.recv(65536)
        except TimeoutError as exc:
            raise RuntimeFailure("container init did not finish set-up in time", op="create") from exc
        except ConnectionResetError:
            # the init exited with our "cgroup" message unread (it failed a step first): the kernel
            # reports the reset once, ahead of the messages still queued for us (its error report)
            continue
        if not raw:
            raise RuntimeFailure("container init exited during set-up", op="create", path=req["bundle"])
        msg = json.loads(raw)
        if "maps" in msg:
            _write_maps(int(msg["maps"]), req["spec"])
            chan.send(b"ok")
        elif "pid" in msg:
            init_pid = int(msg["pid"])
            await_go(go_fd, req["state_dir"])
            go_fd = -1
            _join_cgroup(req, init_pid)           # the init waits for this before its cgroup namespace
            with contextlib.suppress(BrokenPipeError):   # the init failed already; its report is queued
                chan.send(b"cgroup")
        elif "error" in msg:
            err = msg["error"]
            raise RuntimeFailure(f"container init failed at step {err['step']!r}: {err['message']}",
                                 op=err["op"], path=err["path"], errno=int(err["errno"]))
        elif msg.get("ready"):
            return init_pid


def _exec_supervisor(req: dict[str, Any], init_pid: int, out_r: int, err_r: int,
                     netns: int | None) -> NoReturn:
    """Become ``orch-supervise`` (cmonitor.py): same pid, so still the init's parent; the container's
    stdout/stderr pipes become its fds 3 and 4, everything else of ours is close-on-exec. With a restart
    policy it also gets the policy's decisions for this run and the command that restarts us, and
    ``netns`` (``held_netns``) as NETNS_FD."""
    # copies above 4 first, so the dup2s below cannot close one source with the other; the copies are
    # close-on-exec, the dup2 targets are not
    copies = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (out_r, err_r)]
    targets = [3, 4]
    policy = restart.from_annotations(req["spec"].get("annotations", {}))
    # set up for restarts whenever the container was made with a policy (restart.json saved), even one
    # changed to "never" since: a later change back must find a supervisor able to act on it
    restartable = policy.enabled or os.path.exists(os.path.join(req["state_dir"], statedir.RESTART_REQ))
    if req.get("files_fd") is not None:     # kept open (not close-on-exec) for the restarter: see below
        copies.append(fcntl.fcntl(int(req["files_fd"]), fcntl.F_DUPFD_CLOEXEC, 10))
        targets.append(FILES_FD)
    if restartable:
        # we run from the fork server's sealed memfd copy of python; the restarter must too, or a
        # restarted container's init would have the host's python file as /proc/self/exe (a
        # #!/proc/self/exe script could then reach it: the CVE-2019-5736 class)
        exe = os.open("/proc/self/exe", os.O_RDONLY | os.O_CLOEXEC)
        copies.append(fcntl.fcntl(exe, fcntl.F_DUPFD_CLOEXEC, 10))   # above the targets: a dup2 onto
        os.close(exe)                                               # itself would keep close-on-exec
        targets.append(EXE_FD)
        if netns is not None:
            copies.append(fcntl.fcntl(netns, fcntl.F_DUPFD_CLOEXEC, 10))
            targets.append(NETNS_FD)
    for target, fd in zip(targets, copies, strict=True):
        os.dup2(fd, target)
    argv = [req["supervisor"], str(init_pid), req["state_dir"], str(int(req.get("log_max_bytes", 10 << 20)))]
    if restartable:
        series = int((statedir.read_json(os.path.join(req["state_dir"], statedir.RESTARTS)) or {})
                     .get("series", 0))
        argv += [*restart.supervisor_args(policy, series), *_restarter_argv(req)]
    os.execv(req["supervisor"], argv)


def _keep_payload(payload: bytes) -> int:
    """Secrets and configs are never written to disk: a restart reads them from a memfd that the
    supervisor keeps open as fd ``FILES_FD`` (its pages are not in the supervisor's own memory)."""
    from orchestrator.runtime.linux.filemounts import MEMFD_NAME  # rotation finds it by this name
    fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC)
    os.write(fd, payload)
    return fd


def _restarter_argv(req: dict[str, Any], exe: str = f"/proc/self/fd/{EXE_FD}") -> list[str]:
    """[path to exec, argv...]: the sealed interpreter (at EXE_FD for the C supervisor; our own
    /proc/self/exe in Python), run as ``sys.executable`` (python derives sys.prefix and a venv from
    argv[0]). -P: the monitor's cwd is the CLI's, and must not shadow the installed package."""
    return [exe, sys.executable, "-P", "-m", "orchestrator.runtime.linux.restarter",
            req["state_dir"]]


Fork = tuple[int, int, int, int, socket.socket]     # child pid, stdout, stderr, SIGCHLD wake fd, channel


def fork_init(body: Callable[[socket.socket, tuple[int, int, int]], NoReturn],
              close_in_child: tuple[int, ...]) -> Fork:
    """Fork a child running ``body(channel, stdio)`` (stage 1, the init, or a spare init): its stdout
    and stderr pipes, a SOCK_SEQPACKET channel to it, and our SIGCHLD wake-up pipe. Namespaces for our
    children are the caller's to set up first. Our fd 0 must already be /dev/null (it is the init's
    stdin)."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        mine.close()
        for fd in (out_r, err_r, wake_r, wake_w, *close_in_child):
            os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())    # ours blocks SIGTERM; the container's must not
        body(theirs, (0, out_w, err_w))
    theirs.close()
    for fd in (out_w, err_w):
        os.close(fd)
    return pid, out_r, err_r, wake_r, mine


def await_go(go_fd: int, state_dir: str) -> None:
    """Until the API side says the container's cgroup is made: it makes it while the server and the
    init work, and writes ``forkclient.GO`` to the create's "go" pipe then. Raises when it gave the
    create up instead (any other byte, or an end of file), or said nothing within the set-up timeout.
    -1: nothing to wait for."""
    if go_fd < 0:
        return
    try:
        poller = select.poll()
        poller.register(go_fd, select.POLLIN)
        ready = bool(poller.poll(SETUP_TIMEOUT_S * 1000))     # readable, or its writer gone
        word = os.read(go_fd, 1) if ready else b""
    finally:
        os.close(go_fd)
    if word != GO:
        why = "gave the create up" if ready else f"said nothing for {SETUP_TIMEOUT_S:g}s"
        raise RuntimeFailure(f"the caller {why}", op="create", path=state_dir)


def finish_setup(req: dict[str, Any], pid: int, chan: socket.socket, *, direct: bool,
                 go_fd: int = -1) -> int:
    """Serve the child's set-up to its end; returns the init's pid. ``direct``: the child is the init
    itself, so we start its cgroup move (an RCU grace period) while it mounts, once the cgroup is
    there (``go_fd``, see ``await_go``). On any failure the child and whatever it forked are killed."""
    try:
        if direct:
            await_go(go_fd, req["state_dir"])
            _join_cgroup(req, pid)
            with contextlib.suppress(BrokenPipeError):   # the init failed already; its report is queued
                chan.send(b"cgroup")
        return _setup(chan, req, pid if direct else 0, -1 if direct else go_fd)
    except BaseException:
        for p in {pid, *_children()}:
            _kill(p)
        raise
    finally:
        chan.close()


def _spawn(req: dict[str, Any], close_in_child: tuple[int, ...],
           go_fd: int = -1) -> tuple[int, int, int, int]:
    """Fork the container init and serve its set-up; returns (init pid, stdout, stderr, SIGCHLD wake fd).
    Our fd 0 must already be /dev/null (it is the init's stdin). ``go_fd``: see ``await_go``."""
    plan = namespace_plan(req["spec"])
    direct = not plan.new_user and all(flag != sc.CLONE_NEWUSER for flag, _ in plan.joins)
    if direct:        # no user namespace: no stage 1 needed, our next child is the init (PID 1)
        for flag, path in plan.joins:
            if flag == sc.CLONE_NEWPID:
                init._setns(path, flag)
        if plan.new_flags & sc.CLONE_NEWPID:
            sc.unshare(sc.CLONE_NEWPID)
    first = init.direct if direct else init.stage1
    keep_out = (*close_in_child, go_fd) if go_fd >= 0 else close_in_child
    pid, out_r, err_r, wake_r, chan = fork_init(lambda ch, stdio: first(req, ch, stdio), keep_out)
    return finish_setup(req, pid, chan, direct=direct, go_fd=go_fd), out_r, err_r, wake_r


def _redirect_stdio(state_dir: str) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    err = os.open(os.path.join(state_dir, statedir.MONITOR_ERR), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                  0o600)
    os.dup2(null, 0)
    os.dup2(err, 1)
    os.dup2(err, 2)
    os.close(err)
    os.close(null)


def become_monitor() -> None:
    """What makes this process a monitor, whatever the request: SIGTERM only wakes the supervisor's
    backoff (``kill``/``delete``) and stays blocked for our whole life; we are the subreaper of the
    container (the init is re-parented to us when stage 1 exits)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    sc.set_name("orch-monitor")


Spawn = Callable[[dict[str, Any]], tuple[int, int, int, int]]


def serve(req: dict[str, Any], report_fd: int, spawn: Spawn) -> None:
    """Set up the container through ``spawn`` (``_spawn``, or ``spare`` with an init forked ahead),
    report to the fork server, then supervise (or exec the C supervisor)."""
    if restart.from_annotations(req["spec"].get("annotations", {})).enabled:   # also validates it
        statedir.write_json(os.path.join(req["state_dir"], statedir.RESTART_REQ), restart_request(req))
        if req.get("files_payload") is not None:
            req["files_fd"] = _keep_payload(req["files_payload"])
    init_pid, out_r, err_r, wake_r = spawn(req)
    netns = held_netns(req, init_pid)           # before the report: the init still waits for start
    reply = {"ok": True, "pid": init_pid, "start_time": statedir.start_time(init_pid) or 0,
             "monitor_pid": os.getpid(), "monitor_start_time": statedir.start_time(os.getpid()) or 0}
    os.write(report_fd, json.dumps(reply).encode())
    os.close(report_fd)
    _supervise_or_exec(req, init_pid, out_r, err_r, wake_r, netns)


def restart_request(req: dict[str, Any]) -> dict[str, Any]:
    """What ``restart.json`` keeps of a create request for the restarter: all but what only this
    create had (the files' contents, kept in a memfd instead, and its go pipe). The C spare's
    restart.json is made from it too (``cspare``)."""
    return {k: v for k, v in req.items() if k not in ("files_payload", "go", "go_fd")}


def report_failure(report_fd: int, exc: BaseException) -> None:
    """To create while set-up runs; to monitor.err (our stderr) once the report was sent."""
    err_info = init._error("monitor", exc)
    try:
        os.write(report_fd, json.dumps({"ok": False, "error": err_info}).encode())
    except OSError:
        os.write(2, (json.dumps(err_info) + "\n").encode())


def run(req: dict[str, Any], report_fd: int) -> NoReturn:
    """Body of the monitor process; never returns."""
    code = 1
    try:
        go_fd = int(req.pop("go_fd", -1))       # never into restart.json: a restart has no caller
        init.close_fds({report_fd, go_fd} - {-1})
        _redirect_stdio(req["state_dir"])
        become_monitor()
        serve(req, report_fd, lambda r: _spawn(r, (report_fd,), go_fd))
        code = 0
    except BaseException as exc:  # reported to create, or to monitor.err once set-up is over
        report_failure(report_fd, exc)
    finally:
        os._exit(code)


def _supervise_or_exec(req: dict[str, Any], init_pid: int, out_r: int, err_r: int, wake_r: int,
                       netns: int | None) -> None:
    """Supervise the container in Python, or exec the C supervisor; ``netns``: ``held_netns``."""
    if req.get("supervisor"):
        _exec_supervisor(req, init_pid, out_r, err_r, netns)
    from orchestrator.runtime.linux import pysupervise
    status = pysupervise.supervise(req, init_pid, {out_r: "stdout", err_r: "stderr"}, wake_r)
    record = pysupervise.exit_record(req, status)
    # the policy as it is now: update_restart may have changed it in restart.json while we ran
    now = statedir.read_json(os.path.join(req["state_dir"], statedir.RESTART_REQ)) or req
    if status is None or not restart.from_annotations(now["spec"].get("annotations", {})).enabled:
        statedir.write_json(os.path.join(req["state_dir"], statedir.EXIT), record)
        return
    from orchestrator.runtime.linux import restarter  # imports us: only here, never at the top
    restarter.after_exit(now, record, _restarter_argv(req, "/proc/self/exe"), netns)


def _children() -> tuple[int, ...]:
    """Our direct children: stage 1 and, once re-parented to us (subreaper), the container init."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as f:
            return tuple(int(p) for p in f.read().split())
    except OSError:
        return ()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
