"""Reading and checking an OCI runtime-spec bundle, and the pure translations the init needs.

``native`` calls :func:`load_bundle` in the API process (validation happens at the edge, before any
process is forked); ``init``/``rootfs`` use the pure helpers (:func:`parse_mount_options`,
:func:`namespace_plan`, :func:`rlimit_number`) inside the container init. Validation is the vendored
runtime-spec JSON schema (``orchestrator/data/oci-runtime-spec``, Linux parts) when present, followed by
a list of small named checks for what our init relies on (runc's ``configs/validate`` style).
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.linux import syscalls as sc
from orchestrator.runtime.linux.security_defaults import sysctl_refusal

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "data" / "oci-runtime-spec"

# option -> (clear?, flag); runc's mountPropagationMapping / flags table
_FLAG_OPTIONS: dict[str, tuple[bool, int]] = {
    "async": (True, sc.MS_SYNCHRONOUS), "atime": (True, sc.MS_NOATIME), "bind": (False, sc.MS_BIND),
    "defaults": (False, 0), "dev": (True, sc.MS_NODEV), "diratime": (True, sc.MS_NODIRATIME),
    "dirsync": (False, sc.MS_DIRSYNC), "exec": (True, sc.MS_NOEXEC), "mand": (False, sc.MS_MANDLOCK),
    "noatime": (False, sc.MS_NOATIME), "nodev": (False, sc.MS_NODEV),
    "nodiratime": (False, sc.MS_NODIRATIME), "noexec": (False, sc.MS_NOEXEC),
    "nosuid": (False, sc.MS_NOSUID), "norelatime": (True, sc.MS_RELATIME),
    "nostrictatime": (True, sc.MS_STRICTATIME), "nosymfollow": (False, sc.MS_NOSYMFOLLOW),
    "rbind": (False, sc.MS_BIND | sc.MS_REC), "relatime": (False, sc.MS_RELATIME),
    "remount": (False, sc.MS_REMOUNT), "ro": (False, sc.MS_RDONLY), "rw": (True, sc.MS_RDONLY),
    "strictatime": (False, sc.MS_STRICTATIME), "suid": (True, sc.MS_NOSUID),
    "sync": (False, sc.MS_SYNCHRONOUS), "lazytime": (False, sc.MS_LAZYTIME),
}
_PROPAGATION: dict[str, int] = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}


@dataclass(frozen=True)
class MountOptions:
    flags: int                 # MS_* flags for the mount call
    propagation: int           # MS_SHARED/SLAVE/PRIVATE/UNBINDABLE (+REC): a separate call after mounting
    data: str                  # filesystem-specific options, comma-joined

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


def parse_mount_options(options: list[str] | tuple[str, ...]) -> MountOptions:
    flags = propagation = 0
    data: list[str] = []
    for opt in options:
        if opt in _FLAG_OPTIONS:
            clear, flag = _FLAG_OPTIONS[opt]
            flags = flags & ~flag if clear else flags | flag
        elif opt in _PROPAGATION:
            propagation |= _PROPAGATION[opt]
        else:
            data.append(opt)
    return MountOptions(flags, propagation, ",".join(data))


@dataclass(frozen=True)
class NamespacePlan:
    new_flags: int                          # namespaces to unshare (besides user)
    new_user: bool                          # unshare a user namespace first (maps written by the monitor)
    joins: tuple[tuple[int, str], ...]      # (clone flag, path) of existing namespaces to setns into


def namespace_plan(spec: dict[str, Any]) -> NamespacePlan:
    flags, joins, new_user = 0, [], False
    for ns in spec.get("linux", {}).get("namespaces", []):
        flag = sc.NAMESPACES[ns["type"]][0]
        if ns.get("path"):
            joins.append((flag, ns["path"]))
        elif flag == sc.CLONE_NEWUSER:
            new_user = True
        else:
            flags |= flag
    # a joined user namespace must come first: it decides what the other joins are allowed to do
    joins.sort(key=lambda j: j[0] != sc.CLONE_NEWUSER)
    return NamespacePlan(flags, new_user, tuple(joins))


def rlimit_number(name: str) -> int:
    value = getattr(resource, name, None)
    if not isinstance(value, int):
        raise RuntimeFailure(f"unknown rlimit {name}", op="setrlimit", path=name)
    return value


# ---- validation -------------------------------------------------------------------------------------

Check = Callable[[dict[str, Any]], str]


def _args(spec: dict[str, Any]) -> str:
    args = spec.get("process", {}).get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        return "process.args: must be a non-empty list of strings"
    return ""


def _cwd(spec: dict[str, Any]) -> str:
    ok = str(spec.get("process", {}).get("cwd", "")).startswith("/")
    return "" if ok else "process.cwd: must be an absolute path"


def _terminal(spec: dict[str, Any]) -> str:
    if spec.get("process", {}).get("terminal"):
        return "process.terminal: a terminal is not supported by the native runtime"
    return ""


def _hooks(spec: dict[str, Any]) -> str:
    if any(spec.get("hooks", {}).values()):
        return "hooks: OCI hooks are not supported by the native runtime"
    return ""


def _root(spec: dict[str, Any]) -> str:
    root = spec.get("root")
    return "" if isinstance(root, dict) and isinstance(root.get("path"), str) else "root.path: required"


def _mounts(spec: dict[str, Any]) -> str:
    for i, m in enumerate(spec.get("mounts", [])):
        if not str(m.get("destination", "")).startswith("/"):
            return f"mounts[{i}].destination: must be an absolute path"
    return ""


def _namespaces(spec: dict[str, Any]) -> str:
    seen: set[str] = set()
    for i, ns in enumerate(spec.get("linux", {}).get("namespaces", [])):
        kind = ns.get("type")
        if kind not in sc.NAMESPACES:
            return f"linux.namespaces[{i}].type: unknown namespace {kind!r}"
        if kind in seen:
            return f"linux.namespaces[{i}].type: duplicate namespace {kind!r}"
        seen.add(kind)
    linux = spec.get("linux", {})
    if (linux.get("uidMappings") or linux.get("gidMappings")) and "user" not in seen:
        return "linux.uidMappings: needs a user namespace"
    new_user = "user" in seen and not any(ns.get("path") for ns in linux.get("namespaces", [])
                                          if ns.get("type") == "user")
    if new_user and (not linux.get("uidMappings") or not linux.get("gidMappings")):
        return "linux.namespaces: a new user namespace needs uidMappings and gidMappings"
    if spec.get("hostname") and "uts" not in seen:
        return "hostname: needs a uts namespace (the host name would change otherwise)"
    mount = [ns for ns in linux.get("namespaces", []) if ns.get("type") == "mount"]
    if not mount or mount[0].get("path"):
        # the init mounts the rootfs, changes propagation and pivots: in the host's namespace (or a
        # joined one, which may be the host's) that would move someone else's root
        return "linux.namespaces: needs a new mount namespace (none, or one joined by path, is refused)"
    return ""


_UNCHANGED = 0xFFFFFFFF          # (uid_t)-1: "leave unchanged" to setresuid/setresgid, not an id


def _an_id(value: object) -> bool:
    return isinstance(value, int) and 0 <= value < _UNCHANGED


def _user(spec: dict[str, Any]) -> str:
    user = spec.get("process", {}).get("user", {})
    for key in ("uid", "gid"):
        if key in user and not _an_id(user[key]):
            return f"process.user.{key}: {user[key]!r} is not an id (-1 and 4294967295 mean 'unchanged')"
    if not all(_an_id(g) for g in user.get("additionalGids") or []):
        return "process.user.additionalGids: each must be an id below 4294967295"
    return ""


_NS_PROC = {"network": "net", "uts": "uts", "ipc": "ipc"}


def _own_namespace(spec: dict[str, Any], kind: str) -> bool:
    """The container has its own ``kind`` namespace: a new one, or a joined one that is not the host's
    (runc's ``isHostNetNS`` check, applied to uts and ipc too; "host" = this API process's)."""
    for ns in spec.get("linux", {}).get("namespaces", []):
        if ns.get("type") != kind:
            continue
        if not ns.get("path"):
            return True
        try:
            theirs, ours = os.stat(ns["path"]), os.stat(f"/proc/self/ns/{_NS_PROC[kind]}")
        except OSError:
            return True           # the join itself fails later, with its own error
        return (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino)
    return False


def _sysctls(spec: dict[str, Any]) -> str:
    """runc's rule: only namespaced sysctls, each with the container's own copy of its namespace (the
    init writes /proc/sys after pivot_root; a host knob written there changes the host)."""
    for key in spec.get("linux", {}).get("sysctl") or {}:
        why = sysctl_refusal(str(key), own_netns=_own_namespace(spec, "network"),
                             own_utsns=_own_namespace(spec, "uts"), own_ipcns=_own_namespace(spec, "ipc"))
        if why:
            return f"linux.sysctl: {why}"
    return ""


def _rlimits(spec: dict[str, Any]) -> str:
    for i, rl in enumerate(spec.get("process", {}).get("rlimits", [])):
        if not isinstance(getattr(resource, str(rl.get("type")), None), int):
            return f"process.rlimits[{i}].type: unknown rlimit {rl.get('type')!r}"
    return ""


CHECKS: tuple[Check, ...] = (_args, _cwd, _terminal, _hooks, _root, _mounts, _namespaces, _user, _sysctls,
                             _rlimits)


def _schema_errors(spec: dict[str, Any]) -> list[str]:
    if not (SCHEMA_DIR / "config-schema.json").exists():
        return []
    from orchestrator.runtime.linux.specschema import errors  # jsonschema is heavy: API process only
    return errors(spec, SCHEMA_DIR)


def validate(spec: dict[str, Any]) -> list[str]:
    """Every problem found (schema first, then our checks); empty when the spec is usable."""
    problems = _schema_errors(spec)
    problems += [msg for msg in (check(spec) for check in CHECKS) if msg]
    return problems


def load_bundle(bundle: Path) -> dict[str, Any]:
    """Read ``bundle/config.json``, validate it, and make ``root.path`` absolute."""
    path = bundle / "config.json"
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(f"cannot read runtime spec: {exc}", op="load", path=str(path)) from exc
    if not isinstance(spec, dict):
        raise RuntimeFailure("runtime spec is not a JSON object", op="validate", path=str(path))
    problems = validate(spec)
    if problems:
        raise RuntimeFailure("invalid runtime spec: " + "; ".join(problems), op="validate", path=str(path))
    root = Path(spec["root"]["path"])
    spec["root"]["path"] = str(root if root.is_absolute() else (bundle / root).absolute())
    return spec
