"""A create request compiled into the flat list of ops ``orch-init`` (``init.c``) runs: the plan as a value.

``compile_ops`` walks ``init.container_init``'s steps in the same order, for the requests a warm spare
takes (``spare.usable``: new pid, network, IPC and UTS namespaces, no user namespace, no namespace to
join, no config/secret files), and emits one op per system-level action, each naming its step, so an
error report from the C init reads like the Python init's. Everything that needs a decision (mount
option parsing, capability masks, rlimit numbers, the final environment) is made here, in Python; the
C side resolves paths inside the root (which only its mount namespace sees) and makes the calls.
``None`` means "not for the C init": the request takes the ordinary path, whose Python init reports
whatever is wrong with it.

Wire format (``encode``): per op a little-endian u32 field count, then the fields, each ended by a NUL
(none may contain one). Neighbours: ``spare`` (sends the ops), ``cmonitor`` (builds ``orch-init``), ``init``.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.linux import rootfs
from orchestrator.runtime.linux import syscalls as sc
from orchestrator.runtime.linux.spec import namespace_plan, parse_mount_options, rlimit_number

AHEAD = sc.CLONE_NEWNET | sc.CLONE_NEWIPC | sc.CLONE_NEWUTS     # made by the spare init (``spare``)

Op = tuple[str, ...]
MAX_FIELDS = 4096            # per op, init.c's MAX_FIELDS: a longer command line takes the Python init


def encode(ops: list[Op]) -> bytes:
    parts = []
    for op in ops:
        if len(op) > MAX_FIELDS:
            raise ValueError(f"{op[0]} op of {len(op)} fields")
        fields = "\0".join(op)
        if fields.count("\0") != len(op) - 1:
            raise ValueError(f"NUL byte in {op[0]} op")
        parts.append(struct.pack("<I", len(op)) + os.fsencode(fields) + b"\0")
    return b"".join(parts)


def compile_ops(req: dict[str, Any]) -> bytes | None:
    """The ops for ``req``, encoded; None when the C init is not for it (see the module docstring)."""
    try:
        return encode(_ops(req))
    except (LookupError, TypeError, ValueError, AttributeError, RuntimeFailure):
        return None       # a malformed spec: the Python init reports it, naming the step


def _ops(req: dict[str, Any]) -> list[Op]:
    spec: dict[str, Any] = req["spec"]
    process: dict[str, Any] = spec["process"]
    linux: dict[str, Any] = spec.get("linux", {})
    plan = namespace_plan(spec)
    if req.get("files") or req.get("files_payload") is not None or plan.new_user or plan.joins or \
            not plan.new_flags & sc.CLONE_NEWNS:
        # a spec without a mount namespace of its own gets the Python init's handling of it
        raise ValueError("not a spare's request")
    root = str(spec["root"]["path"])
    root = root.rstrip("/") or "/"
    ops: list[Op] = []

    def op(name: str, step: str, *fields: object) -> None:
        ops.append((name, step, *(str(f) for f in fields)))

    rest = plan.new_flags & ~(sc.CLONE_NEWPID | sc.CLONE_NEWCGROUP | AHEAD)
    if rest:
        op("unshare", "unshare", rest)
    op("root", "rootfs", root)
    op("mount", "mount propagation", "", "/", "",
       rootfs.PROPAGATION.get(linux.get("rootfsPropagation", ""), rootfs.DEFAULT_PROPAGATION), "")
    _rootfs(op, root, req.get("rootfs", []))
    new_cgroup_ns = int(bool(plan.new_flags & sc.CLONE_NEWCGROUP))
    in_cgroup = False
    for m in spec.get("mounts", []):
        if m.get("type") == "cgroup" and not in_cgroup:
            op("cgroup", "cgroup", new_cgroup_ns)
            in_cgroup = True
        _spec_mount(op, req["bundle"], m)
    if any(m["destination"].rstrip("/") == "/dev" for m in spec.get("mounts", [])):
        _devices(op, linux.get("devices", []))
    op("fifo", "exec fifo", req["exec_fifo"])
    if "oomScoreAdj" in process:
        op("write", "oom_score_adj", "/proc/self/oom_score_adj", int(process["oomScoreAdj"]))
    op("pivot", "pivot_root")
    for key, value in linux.get("sysctl", {}).items():
        op("write", "sysctl", "/proc/sys/" + key.replace(".", "/"), value)
    for path in linux.get("readonlyPaths", []):
        op("readonly", f"readonly path {path}", path)
    for path in linux.get("maskedPaths", []):
        op("mask", f"masked path {path}", path)
    if spec["root"].get("readonly"):
        op("rootro", "readonly rootfs")
    if not in_cgroup:
        op("cgroup", "cgroup", new_cgroup_ns)
    if spec.get("hostname"):
        op("hostname", "hostname", spec["hostname"])
    if spec.get("domainname"):
        op("domainname", "hostname", spec["domainname"])
    op("loopback", "loopback")
    for rl in process.get("rlimits", []):
        op("rlimit", "rlimits", rlimit_number(rl["type"]), int(rl["soft"]), int(rl["hard"]))
    nnp = bool(process.get("noNewPrivileges"))
    if not nnp and req.get("seccomp"):
        op("seccomp", "seccomp", int(req.get("seccomp_flags", 0)), req["seccomp"])
    op("user", "user and capabilities", *_user(process))
    if "umask" in process.get("user", {}):
        op("umask", "umask", int(process["user"]["umask"]))
    op("chdir", "cwd", process["cwd"])
    if nnp:
        op("nnp", "no_new_privs")
        if req.get("seccomp"):
            op("seccomp", "seccomp", int(req.get("seccomp_flags", 0)), req["seccomp"])
    env = dict(e.split("=", 1) for e in process.get("env", []) if "=" in e)
    args = [str(a) for a in process["args"]]
    op("findexec", "find executable", args[0], env.get("PATH", os.defpath))
    op("exec", "exec", len(args), *args, *(f"{k}={v}" for k, v in env.items()))
    return ops


def _rootfs(op: Any, root: str, mounts: list[dict[str, Any]]) -> None:
    """``rootfs.mount_rootfs``: the rootfs mounts, then the root made private for pivot_root."""
    if not mounts:
        op("mount", "rootfs", root, root, "", sc.MS_BIND | sc.MS_REC, "")
    for m in mounts:
        if m.get("cwd"):
            op("chdir", "rootfs", m["cwd"])
        opts = parse_mount_options(m.get("options", []))
        bind = m["type"] == "bind" or opts.is_bind
        flags, again = rootfs.bind_flags(opts) if bind else (opts.flags, 0)
        op("rootmount", "rootfs", m.get("target", ""), m["source"], m["type"], flags, opts.data,
           int(bind), again)
    op("mount", "rootfs", "", root, "", sc.MS_PRIVATE, "")


def _spec_mount(op: Any, bundle: str, m: dict[str, Any]) -> None:
    """``rootfs.mount_one``, its decisions made here."""
    opts = parse_mount_options(m.get("options", []))
    kind = m.get("type") or ("bind" if opts.is_bind else "none")
    source = str(m.get("source", ""))
    step = f"mount {m['destination']}"
    if kind == "bind" or opts.is_bind:
        source = source if source.startswith("/") else os.path.join(bundle, source)
        flags, again = rootfs.bind_flags(opts)
        op("specmount", step, "bind", source, m["destination"], "", flags, "", again, opts.propagation)
    elif kind == "cgroup":
        op("specmount", step, "cgroup", "", m["destination"], "", opts.flags, "", 0, opts.propagation)
    else:
        op("specmount", step, "fs", source or kind, m["destination"], kind, opts.flags, opts.data,
           opts.flags, opts.propagation)


def _devices(op: Any, devices: list[dict[str, Any]]) -> None:
    """``rootfs.create_devices`` outside a user namespace: nodes, then the default links."""
    wanted: list[dict[str, Any]] = [{"path": p, "type": "c", "major": ma, "minor": mi, "fileMode": 0o666}
                                    for p, ma, mi in rootfs.DEFAULT_DEVICES]
    for dev in [*wanted, *devices]:
        op("mknod", "devices", dev["path"], dev.get("type", "c"), int(dev.get("major", 0)),
           int(dev.get("minor", 0)), int(dev.get("fileMode", 0o666)), int(dev.get("uid", 0)),
           int(dev.get("gid", 0)))
    for target, link in rootfs.DEFAULT_LINKS:
        op("symlink", "devices", target, link)


def _user(process: dict[str, Any]) -> tuple[object, ...]:
    """``init.set_user_and_caps``: CAPS UID GID GIDS BOUNDING EFFECTIVE PERMITTED INHERITABLE AMBIENT
    LAST_CAP."""
    user = process.get("user", {})
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    gids = ",".join(str(int(g)) for g in user.get("additionalGids", []))
    if "capabilities" not in process:
        return 0, uid, gid, gids, 0, 0, 0, 0, 0, 0
    from orchestrator.runtime.linux import capabilities
    sets = capabilities.masks(process["capabilities"])
    return (1, uid, gid, gids, sets["bounding"], sets["effective"], sets["permitted"],
            sets["inheritable"], sets["ambient"], capabilities.last_cap())
