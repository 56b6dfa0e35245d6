"""Which cgroup layout a host has, and which cgroup the calling process is in.

``detect_kind`` decides v1 / v2 / hybrid from the filesystem types of the cgroup root and of
``<root>/unified`` (statfs f_type), the same test runc and systemd make; the statfs function is a
parameter so unit tests describe a layout without mounting anything. ``parse_proc_cgroup`` reads
``/proc/self/cgroup``. Used by ``__init__.open_driver`` and the drivers' ``default_parent``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from pathlib import Path

from orchestrator.errors import RuntimeFailure

CGROUP2_SUPER_MAGIC = 0x63677270
CGROUP_SUPER_MAGIC = 0x27E0EB
TMPFS_MAGIC = 0x01021994

StatfsType = Callable[[Path], int]

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def statfs_type(path: Path) -> int:
    """``f_type`` of the filesystem holding ``path`` (Python's os.statvfs does not expose it)."""
    # struct statfs starts with a word-sized f_type on every Linux ABI we run on; 256 bytes is larger
    # than the whole struct on all of them
    buf = ctypes.create_string_buffer(256)
    if _libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise RuntimeFailure(f"cannot statfs {path}: {os.strerror(err)}", op="statfs", path=str(path),
                             errno=err)
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def detect_kind(root: Path, statfs: StatfsType = statfs_type) -> str:
    """"v2" when the root is cgroup2; "hybrid" when it is a tmpfs of v1 hierarchies with a cgroup2
    tree at ``unified``; "v1" when it is a tmpfs without one."""
    root_type = statfs(root)
    if root_type == CGROUP2_SUPER_MAGIC:
        return "v2"
    if root_type != TMPFS_MAGIC:
        raise RuntimeFailure(f"{root} is neither cgroup2 nor a tmpfs of cgroup v1 hierarchies "
                             f"(f_type {root_type:#x})", op="cgroup detect", path=str(root))
    unified = root / "unified"
    try:
        if unified.is_dir() and statfs(unified) == CGROUP2_SUPER_MAGIC:
            return "hybrid"
    except RuntimeFailure:
        pass
    return "v1"


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/<pid>/cgroup`` -> {controller: path}. The v2 line (``0::/x``) is keyed "" and named
    hierarchies keep their ``name=`` prefix; co-mounted controllers (``cpu,cpuacct``) get one key each."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _hid, controllers, path = parts
        if not controllers:
            out[""] = path
            continue
        for name in controllers.split(","):
            out[name] = path
    return out


def read_proc_cgroup(proc_self_cgroup: Path) -> dict[str, str]:
    try:
        return parse_proc_cgroup(proc_self_cgroup.read_text())
    except OSError as exc:
        raise RuntimeFailure(f"cannot read {proc_self_cgroup}: {exc.strerror}", op="read",
                             path=str(proc_self_cgroup), errno=exc.errno or 0) from exc


def clean_path(path: str) -> str:
    """A cgroup path relative to the hierarchy root, without leading or trailing slashes; refuses
    ``..`` and empty components so a name can never walk out of the cgroup tree."""
    parts = [p for p in path.strip("/").split("/")]
    if parts == [""]:
        return ""
    if any(p in ("", ".", "..") for p in parts):
        raise RuntimeFailure(f"invalid cgroup path {path!r}", op="cgroup path", path=path)
    return "/".join(parts)


def cgroup_path(path: str) -> str:
    """``clean_path`` for a cgroup we manage: the hierarchy root itself is never ours to limit,
    kill or remove."""
    cleaned = clean_path(path)
    if not cleaned:
        raise RuntimeFailure("refusing to manage the root cgroup", op="cgroup path", path=path)
    return cleaned


def join_parent(own: str, name: str = "orchestrator") -> str:
    own_clean = clean_path(own)
    return f"{own_clean}/{name}" if own_clean else name
