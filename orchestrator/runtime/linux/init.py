"""The container's first processes: stage 1 (namespaces) and the container init (everything else).

Both run in fresh, single-threaded children forked by ``monitor`` (itself a fork of the fork server), and
report to the monitor over a SOCK_SEQPACKET channel: ``{"maps": pid}`` (please write my uid/gid maps),
``{"pid": n}`` (the init's host pid), ``{"ready": true}`` or ``{"error": {...}}`` naming the step, op,
path and errno. Any failure ends the process with ``os._exit``: the container command never runs after
a failed step, and never on the host.

Without a user namespace the monitor itself unshares (or joins) the pid namespace, which only applies to
its children, and forks the init directly (``direct``). With one, stage 1 creates the user namespace
first (the other namespaces must be owned by it), then forks the init. The init runs one flat, ordered
list of steps, modelled on crun's ``container_init_setup`` and runc's ``standard_init_linux``.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import socket
from typing import Any, NoReturn

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.linux import filemounts, rootfs
from orchestrator.runtime.linux import syscalls as sc
from orchestrator.runtime.linux.spec import namespace_plan, rlimit_number


class _Step:
    """Remembers which step is running, so an error report names it."""

    name = "start"


def _error(step: str, exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RuntimeFailure):
        # op/path/errno travel as fields and are appended again by the RuntimeFailure the API raises
        message = str(exc).rsplit(" (op=", 1)[0]
        return {"message": message, "op": exc.op, "path": exc.path, "errno": exc.errno, "step": step}
    if isinstance(exc, OSError):
        return {"message": f"{step}: {exc.strerror or exc}", "op": step, "path": str(exc.filename or ""),
                "errno": exc.errno or 0, "step": step}
    return {"message": f"{step}: {type(exc).__name__}: {exc}", "op": step, "path": "", "errno": 0,
            "step": step}


def _send(chan: socket.socket, msg: dict[str, Any]) -> None:
    chan.send(json.dumps(msg).encode())


def fail(chan: socket.socket, step: str, exc: BaseException) -> NoReturn:
    try:
        _send(chan, {"error": _error(step, exc)})
    finally:
        os._exit(1)


def join_cgroup(req: dict[str, Any], pid: int) -> None:
    """Move ``pid`` into the container's cgroup (every hierarchy); the cgroup was made by the API side."""
    if req.get("cgroup"):
        from pathlib import Path

        from orchestrator.runtime.linux.cgroups import open_driver
        open_driver(Path(req["cgroup"]["root"])).open(req["cgroup"]["path"]).add_pid(pid)


def stage1(req: dict[str, Any], chan: socket.socket, stdio: tuple[int, int, int]) -> NoReturn:
    """With a user namespace: create it (maps written by the monitor), then the other namespaces owned
    by it, and fork the init into the new pid namespace."""
    step = _Step()
    try:
        spec = req["spec"]
        plan = namespace_plan(spec)
        for flag, path in plan.joins:
            if flag == sc.CLONE_NEWUSER:
                step.name = "join user namespace"
                _setns(path, flag)
        if plan.new_user:
            step.name = "user namespace"
            sc.unshare(sc.CLONE_NEWUSER)
            _send(chan, {"maps": os.getpid()})
            if chan.recv(16) != b"ok":
                raise RuntimeFailure("uid/gid maps were not written", op="uid_map")
        if plan.new_user or any(f == sc.CLONE_NEWUSER for f, _ in plan.joins):
            os.setresgid(0, 0, 0)      # become root of the user namespace (mapped, full caps there)
            os.setresuid(0, 0, 0)
        for flag, path in plan.joins:
            if flag != sc.CLONE_NEWUSER:
                step.name = f"join namespace {path}"
                _setns(path, flag)
        step.name = "unshare"
        # all but the cgroup namespace: the init unshares that once the monitor has moved it into the
        # container's cgroup (so that cgroup becomes its root). The move waits for an RCU grace period
        # (~10 ms on cgroup v1), so the monitor does it while the init sets up its mounts.
        sc.unshare(plan.new_flags & ~sc.CLONE_NEWCGROUP)
        step.name = "fork init"
        pid = os.fork()
        if pid == 0:
            container_init(req, chan, stdio, in_userns=plan.new_user,
                           new_cgroup_ns=bool(plan.new_flags & sc.CLONE_NEWCGROUP))
        _send(chan, {"pid": pid})
        os._exit(0)
    except BaseException as exc:  # every failure is reported to the monitor, then this process ends
        fail(chan, step.name, exc)


def direct(req: dict[str, Any], chan: socket.socket, stdio: tuple[int, int, int]) -> NoReturn:
    """The init without a stage 1 (no user namespace): the monitor has already unshared or joined the
    pid namespace for its children, so this process is PID 1; it creates or joins the rest itself."""
    step = _Step()
    plan = namespace_plan(req["spec"])
    try:
        for flag, path in plan.joins:
            if flag != sc.CLONE_NEWPID:
                step.name = f"join namespace {path}"
                _setns(path, flag)
        step.name = "unshare"        # the cgroup namespace comes later, see stage1
        sc.unshare(plan.new_flags & ~(sc.CLONE_NEWPID | sc.CLONE_NEWCGROUP))
    except BaseException as exc:  # every failure is reported to the monitor, then this process ends
        fail(chan, step.name, exc)
    container_init(req, chan, stdio, in_userns=False, new_cgroup_ns=bool(plan.new_flags & sc.CLONE_NEWCGROUP))


def _setns(path: str, flag: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sc.setns(fd, flag, path)
    finally:
        os.close(fd)


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise RuntimeFailure(f"cannot write {value!r}: {exc.strerror}", op="write", path=path,
                             errno=exc.errno or 0) from exc


def set_user_and_caps(process: dict[str, Any]) -> None:
    """uid/gid/additionalGids and capability sets, in the order capabilities.apply documents."""
    user = process.get("user", {})
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    gids = [int(g) for g in user.get("additionalGids", [])]
    if "capabilities" in process:
        from orchestrator.runtime.linux import capabilities
        capabilities.apply(process["capabilities"], uid=uid, gid=gid, additional_gids=gids)
        return
    try:
        os.setgroups(gids)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise RuntimeFailure(f"cannot switch to user {uid}:{gid}: {exc.strerror}", op="setresuid",
                             errno=exc.errno or 0) from exc


def install_seccomp(req: dict[str, Any]) -> None:
    if req.get("seccomp"):
        from orchestrator.runtime.linux import seccomp
        seccomp.install(bytes.fromhex(req["seccomp"]), int(req.get("seccomp_flags", 0)))


def _find_executable(process: dict[str, Any]) -> None:
    arg0 = process["args"][0]
    env = dict(e.split("=", 1) for e in process.get("env", []) if "=" in e)
    candidates = [arg0] if "/" in arg0 else \
        [os.path.join(d or ".", arg0) for d in env.get("PATH", os.defpath).split(":")]
    if not any(os.path.isfile(c) and os.access(c, os.X_OK) for c in candidates):
        raise RuntimeFailure(f"executable file {arg0!r} not found in the container", op="exec", path=arg0,
                             errno=errno.ENOENT)


def close_fds(keep: set[int]) -> None:
    """Close every inherited descriptor but stdio and ``keep`` (those are close-on-exec)."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _cgroup_joined(chan: socket.socket, new_cgroup_ns: bool) -> None:
    """Wait for the monitor to have moved us into the container's cgroup, then enter a cgroup namespace
    rooted there."""
    if chan.recv(16) != b"cgroup":
        raise RuntimeFailure("the monitor did not confirm the cgroup", op="cgroup")
    if new_cgroup_ns:
        sc.unshare(sc.CLONE_NEWCGROUP)


def container_init(req: dict[str, Any], chan: socket.socket, stdio: tuple[int, int, int],
                   *, in_userns: bool, new_cgroup_ns: bool) -> NoReturn:
    """PID 1 of the container. Each step is named so a failure report says which one failed."""
    step = _Step()
    in_cgroup = False
    try:
        spec: dict[str, Any] = req["spec"]
        process: dict[str, Any] = spec["process"]
        linux: dict[str, Any] = spec.get("linux", {})
        root = spec["root"]["path"]
        new_mount_ns = not any(ns["type"] == "mount" and ns.get("path") for ns in linux.get("namespaces", []))

        step.name = "stdio"
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        step.name = "mount propagation"      # nothing we mount below may reach the host
        if new_mount_ns:
            rootfs.make_root_private(linux.get("rootfsPropagation", ""))
        step.name = "rootfs"
        rootfs.mount_rootfs(root, req.get("rootfs", []))
        for m in spec.get("mounts", []):
            if m.get("type") == "cgroup" and not in_cgroup:
                step.name = "cgroup"         # a cgroupfs mount must see our cgroup namespace
                _cgroup_joined(chan, new_cgroup_ns)
                in_cgroup = True
            step.name = f"mount {m['destination']}"
            rootfs.mount_one(root, req["bundle"], m)
        step.name = "devices"                # after the mounts: /dev is usually a fresh tmpfs
        if any(m["destination"].rstrip("/") == "/dev" for m in spec.get("mounts", [])):
            rootfs.create_devices(root, linux.get("devices", []), in_userns)
        if req.get("files_payload") is not None:
            # configs and secrets: a tmpfs bound read-only into the root, before pivot_root hides staging
            step.name = "files"
            from orchestrator.runtime.files import decode_payload
            filemounts.install(root, os.path.join(req["state_dir"], filemounts.STAGING),
                               decode_payload(req.pop("files_payload")))
        step.name = "exec fifo"              # opened read-write: our read then blocks until start writes
        fifo = os.open(req["exec_fifo"], os.O_RDWR | os.O_CLOEXEC)
        step.name = "oom_score_adj"          # via the host /proc, still reachable before pivot_root
        if "oomScoreAdj" in process:
            _write("/proc/self/oom_score_adj", str(process["oomScoreAdj"]))
        step.name = "pivot_root"
        rootfs.pivot(root)
        step.name = "sysctl"                 # before readonlyPaths makes /proc/sys read-only
        for key, value in linux.get("sysctl", {}).items():
            _write("/proc/sys/" + key.replace(".", "/"), value)
        for path in linux.get("readonlyPaths", []):
            step.name = f"readonly path {path}"
            rootfs.readonly_path(path)
        for path in linux.get("maskedPaths", []):
            step.name = f"masked path {path}"
            rootfs.mask_path(path)
        step.name = "readonly rootfs"
        if spec["root"].get("readonly"):
            rootfs.readonly_root()
        step.name = "cgroup"                 # before limits matter: rlimits, user, exec
        if not in_cgroup:
            _cgroup_joined(chan, new_cgroup_ns)
        step.name = "hostname"
        if spec.get("hostname"):
            sc.sethostname(spec["hostname"])
        if spec.get("domainname"):
            sc.setdomainname(spec["domainname"])
        step.name = "rlimits"
        for rl in process.get("rlimits", []):
            resource.setrlimit(rlimit_number(rl["type"]), (int(rl["soft"]), int(rl["hard"])))
        nnp = bool(process.get("noNewPrivileges"))
        step.name = "seccomp"                # without no_new_privs, the filter needs CAP_SYS_ADMIN: now
        if not nnp:
            install_seccomp(req)
        step.name = "user and capabilities"
        set_user_and_caps(process)
        step.name = "umask"
        if "umask" in process.get("user", {}):
            os.umask(int(process["user"]["umask"]))
        step.name = "cwd"                    # as the user, so permissions are checked as the user
        os.chdir(process["cwd"])
        step.name = "no_new_privs"
        if nnp:
            sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
            step.name = "seccomp"            # as late as possible: only read/close/execve remain
            install_seccomp(req)
        step.name = "find executable"        # fail at create, as runc does, not at start with exit 127
        _find_executable(process)
        step.name = "close fds"
        close_fds({fifo, chan.fileno()})
        _send(chan, {"ready": True})
    except BaseException as exc:  # every failure is reported to the monitor, then this process ends
        fail(chan, step.name, exc)
    # set-up done: wait for ``start`` (a byte through the exec fifo), then become the container process
    try:
        if os.read(fifo, 1) != b"":
            env = dict(e.split("=", 1) for e in process.get("env", []) if "=" in e)
            os.execvpe(process["args"][0], process["args"], env)
    except OSError as exc:
        code = 126 if exc.errno in (errno.EACCES, errno.ENOEXEC) else 127
        os.write(2, f"exec {process['args'][0]}: {exc.strerror}\n".encode(errors="replace"))
        os._exit(code)
    os._exit(1)
