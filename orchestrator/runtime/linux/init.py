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

import ctypes
import errno
import fcntl
import json
import os
import resource
import signal
import socket
import struct
from typing import Any, NoReturn

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.files import FileSpec, environment
from orchestrator.runtime.linux import filemounts, rootfs
from orchestrator.runtime.linux import syscalls as sc
from orchestrator.runtime.linux.spec import namespace_plan, rlimit_number

PR_SET_DUMPABLE = 4        # <linux/prctl.h>


def make_undumpable() -> None:
    """PR_SET_DUMPABLE 0, as runc's nsexec does first (CVE-2016-9962): until ``execve`` this process is
    the runtime's own program; a container process with the same uid and capabilities must not open its
    /proc/PID/exe, fd/ (our channels) or mem (code injection before seccomp). Only ptrace-capable
    (CAP_SYS_PTRACE) processes can then, and the container has none. The kernel makes the final program
    dumpable again at its ``execve``; since 4.11 our own /proc/self files stay owned by the user
    namespace's root, so nothing of the set-up needs us dumpable."""
    sc.prctl(PR_SET_DUMPABLE, 0)


def reset_signals() -> None:
    """Every disposition back to SIG_DFL and an empty blocked mask, right before ``execve``: python
    ignores SIGPIPE and SIGXFSZ and ignored signals survive ``execve`` (``yes | head`` would spin
    forever); runc gives a container process SigIgn 0 and SigBlk 0."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            # python records every disposition it inherited (SIG_IGN included) and every one it set;
            # only those not known to be SIG_DFL cost a sigaction call (~60 calls otherwise)
            if signal.getsignal(sig) is not signal.SIG_DFL:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):       # glibc's reserved real-time signals (32, 33): not ours
            continue
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


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

        from orchestrator.runtime.linux.cgroups import driver_for
        driver_for(Path(req["cgroup"]["root"])).open(req["cgroup"]["path"]).add_pid(pid)


def stage1(req: dict[str, Any], chan: socket.socket, stdio: tuple[int, int, int]) -> NoReturn:
    """With a user namespace: create it (maps written by the monitor), then the other namespaces owned
    by it, and fork the init into the new pid namespace."""
    step = _Step()
    try:
        step.name = "dumpable"
        make_undumpable()
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
        step.name = "dumpable"       # before joining any namespace a container process lives in
        make_undumpable()
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


# openat2(2) (Linux 5.6; one number on every architecture). Here rather than in ``syscalls`` only because
# that module is not this change's to edit; it belongs there.
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_AT_FDCWD = -100
# resolved once, when the fork server imports us, not in every container's init
_SYSCALL = ctypes.CDLL(None, use_errno=True).syscall
_SYSCALL.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _through_magic_link(path: str) -> bool:
    """True when resolving ``path`` crosses a /proc magic link (``/proc/self/exe``, ``/proc/PID/fd/N``,
    directly or behind an image symlink): openat2 with RESOLVE_NO_MAGICLINKS then fails with ELOOP
    where a plain open succeeds. Unknown (False) when openat2 is unavailable or filtered."""
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, _RESOLVE_NO_MAGICLINKS)
    fd = _SYSCALL(_SYS_OPENAT2, _AT_FDCWD, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd >= 0:
        os.close(fd)
        return False
    if ctypes.get_errno() != errno.ELOOP:
        return False
    try:                                     # ELOOP from a plain symlink loop is not our business
        os.close(os.open(path, os.O_PATH | os.O_CLOEXEC))
    except OSError:
        return False
    return True


def check_executable(arg0: str, env: dict[str, str], *, must_exist: bool = True) -> None:
    """``arg0`` names an executable file of the container (PATH searched as ``execvpe`` will), reached
    without a /proc magic link. ``/proc/self/exe`` of a runtime process is the interpreter that forked
    it (a sealed memfd, see ``forkclient.sealed_interpreter``); refusing it outright is runc's second
    line of defence against CVE-2019-5736 (a ``#!/proc/self/exe`` script is left to the memfd). With
    ``must_exist`` False a missing program is left for ``execve`` to report."""
    candidates = [arg0] if "/" in arg0 else \
        [os.path.join(d or ".", arg0) for d in env.get("PATH", os.defpath).split(":")]
    for cand in candidates:
        if _through_magic_link(cand):
            raise RuntimeFailure(f"executable {arg0!r} resolves through a /proc magic link ({cand}): "
                                 "refused", op="exec", path=cand, errno=errno.ELOOP)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return
    if must_exist:
        raise RuntimeFailure(f"executable file {arg0!r} not found in the container", op="exec", path=arg0,
                             errno=errno.ENOENT)


def _find_executable(process: dict[str, Any]) -> None:
    env = dict(e.split("=", 1) for e in process.get("env", []) if "=" in e)
    check_executable(process["args"][0], env)


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


def loopback_up() -> None:
    """Set IFF_UP on ``lo`` of our network namespace: two ioctls, no netlink library in the init."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH22x", b"lo", 0)              # struct ifreq: name, then ifr_flags
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock.fileno(), siocgifflags, ifreq))[1]
        if not flags & iff_up:
            fcntl.ioctl(sock.fileno(), siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


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

        step.name = "dumpable"               # stage1/direct did already; cheap, and keeps this self-contained
        make_undumpable()
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
        files: list[FileSpec] = []
        if req.get("files_payload") is not None:
            # configs and secrets: a tmpfs bound read-only into the root, before pivot_root hides staging
            step.name = "files"
            from orchestrator.runtime.files import decode_payload
            files = decode_payload(req.pop("files_payload"))
            filemounts.install(root, os.path.join(req["state_dir"], filemounts.STAGING), files)
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
        step.name = "loopback"               # a new network namespace starts with lo down (Docker and
        if any(ns["type"] == "network" and not ns.get("path")   # podman bring it up, network none too)
               for ns in linux.get("namespaces", [])):
            loopback_up()
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
        step.name = "secret environment"     # ``env:`` secrets, from the in-memory payload only
        secret_env = environment(files)      # refuses NUL / non-UTF-8 naming the variable, not the value
        del files
        step.name = "close fds"
        close_fds({fifo, chan.fileno()})
        _send(chan, {"ready": True})
    except BaseException as exc:  # every failure is reported to the monitor, then this process ends
        fail(chan, step.name, exc)
    # set-up done: wait for ``start`` (a byte through the exec fifo), then become the container process
    try:
        if os.read(fifo, 1) != b"":
            env = dict(e.split("=", 1) for e in process.get("env", []) if "=" in e)
            env.update(secret_env)           # a secret mount's ``env`` wins over the spec's variable
            reset_signals()                  # last: python's SIG_IGN for SIGPIPE/SIGXFSZ must not leak
            os.execvpe(process["args"][0], process["args"], env)
    except OSError as exc:
        code = 126 if exc.errno in (errno.EACCES, errno.ENOEXEC) else 127
        os.write(2, f"exec {process['args'][0]}: {exc.strerror}\n".encode(errors="replace"))
        os._exit(code)
    os._exit(1)
