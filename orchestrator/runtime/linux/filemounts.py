"""Config and secret files in a container: a private tmpfs, read-only binds, rotation in place.

Three sides, one module (each small):

* API side (``native``): :func:`payload_fd` puts the encoded files (``runtime.files``) in a memfd, which
  is passed over the fork server's socket (SCM_RIGHTS); nothing of the content touches config.json, the
  state dir or any file. :func:`record` writes the layout (targets, owners, modes: no content) to the
  state dir so rotation knows which mount each target is in.
* Init side (``init``, in the container's own mount namespace, before ``pivot_root``): :func:`install`
  mounts a tmpfs (``nosuid,nodev,noexec``, ``noswap``, mode 0700) on the empty ``<state dir>/files``
  mount point, writes every file with its owner and mode (``secrets.materialise``), bind-mounts the
  shared directories (``/run/secrets``, ``/run/configs``) and every other target read-only into the
  root, then detaches the staging mount: the tmpfs is reachable only through those binds, lives only
  in the container's mount namespace (never on the host's mount table) and is freed when it dies.
* Rotation (a child of the fork server, :func:`rotate_in`): join the container's mount namespace, make
  a private writable clone of each bind (``open_tree(OPEN_TREE_CLONE)`` + ``mount_setattr`` clearing
  read-only; the container's own mounts are never changed, not even briefly) and rewrite changed files:
  by atomic rename in a directory mount, in place for a single-file bind (a rename would not reach it).

Configs use the same tmpfs as secrets (simplest: one mechanism, one set of tests; a config is small).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from orchestrator.errors import RuntimeFailure
from orchestrator.fsutil import write_all
from orchestrator.runtime.files import FileSpec, check_files, dir_mount_of, layout, normalise, plan_mounts
from orchestrator.runtime.linux import rootfs, statedir
from orchestrator.runtime.linux import syscalls as sc
from orchestrator.secrets import materialise, tmpfs

STAGING = "files"                 # the tmpfs mount point under the container's state dir (stays empty)
MEMFD_NAME = "orch-files"         # the payload memfd's name (also the monitor's kept copy for restarts)
LAYOUT = "files.json"             # targets, owners, modes and the mount plan; never content
BIND_OPTIONS = ["bind", "ro", "nosuid", "nodev", "noexec"]

# the new mount API: same numbers on x86_64 and aarch64 (the unified syscall table)
_SYS_OPEN_TREE = 428
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 1
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_SYMLINK_NOFOLLOW = 0x100
_MOUNT_ATTR_RDONLY = 0x1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _syscall_failed(op: str, path: str) -> RuntimeFailure:
    err = ctypes.get_errno()
    return RuntimeFailure(f"{op} failed: {os.strerror(err)}", op=op, path=path, errno=err)


def writable_clone(path: str) -> int:
    """A detached, writable copy of the mount at ``path`` (an O_PATH fd; closing it unmounts it)."""
    fd = int(_libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(path),
                           _OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_SYMLINK_NOFOLLOW))
    if fd < 0:
        raise _syscall_failed("open_tree", path)
    attr = _MountAttr(0, _MOUNT_ATTR_RDONLY, 0, 0)
    if _libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH, ctypes.byref(attr),
                     ctypes.sizeof(attr)) < 0:
        exc = _syscall_failed("mount_setattr", path)
        os.close(fd)
        raise exc
    return fd


# ---- API side -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def payload_fd(files: Sequence[FileSpec]) -> Iterator[int]:
    """A memfd holding the encoded files, for one fork-server request; closed afterwards. -1 (and
    no memfd) when there are no files."""
    from orchestrator.runtime.files import encode_payload
    if not files:
        yield -1
        return
    fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC)
    try:
        write_all(fd, encode_payload(files))
        yield fd
    finally:
        os.close(fd)


def check_create(container_id: str, spec: dict[str, Any], files: Sequence[FileSpec]) -> None:
    """Before anything is made: the files are sane, and the container has a mount namespace of its own
    (the tmpfs and its binds must not land in a namespace shared with anyone else)."""
    if not files:
        return
    check_files(files)
    namespaces = spec.get("linux", {}).get("namespaces", [])
    if not any(ns.get("type") == "mount" and not ns.get("path") for ns in namespaces):
        raise RuntimeFailure(f"container {container_id}: files need a new mount namespace", op="create",
                             path=container_id)


def record(cdir: Path, files: Sequence[FileSpec]) -> None:
    """Make the (empty) staging mount point and record the layout; called before the init exists."""
    (cdir / STAGING).mkdir(mode=0o700)
    statedir.write_json(cdir / LAYOUT, {"plan": plan_mounts(files).to_dict(), "files": layout(files)})


def recorded_targets(cdir: Path) -> set[str]:
    raw = statedir.read_json(cdir / LAYOUT) or {}
    return {str(f["target"]) for f in raw.get("files", [])}


def read_payload(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks, offset = [], 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


# ---- init side ----------------------------------------------------------------------------------------

def _items(files: Sequence[FileSpec]) -> list[materialise.Item]:
    return [(materialise.FileSpec(normalise(f.target), f.uid, f.gid, f.mode), f.content) for f in files]


def install(root: str, staging: str, files: Sequence[FileSpec]) -> None:
    """In the container's mount namespace, before pivot_root: tmpfs, files, read-only binds."""
    items = _items(files)
    # mode 0700: between here and the detach below nothing else should find its way in; the
    # directories below it that get bound are 0755, the files have their own modes
    tmpfs.make_tmpfs(Path(staging), materialise.tmpfs_size_for(items), mode=0o700)
    try:     # from here on the staging mount exists and must be detached, whatever fails
        materialise.write_secret_files(Path(staging), items)
        plan = plan_mounts(files)
        # directories first: a single-file target is never below one (plan_mounts), but keep parents
        # before children anyway
        for target in (*plan.dirs, *plan.files):
            rootfs.mount_one(root, "", {"destination": target, "type": "bind",
                                        "source": staging + target, "options": BIND_OPTIONS})
    finally:
        # detach the staging mount: the binds keep the tmpfs alive, the mount point is empty again
        sc.umount2(staging, sc.MNT_DETACH)


# ---- rotation (forked child of the fork server) -------------------------------------------------------

def _id_map(pid: int, name: str) -> list[tuple[int, int, int]]:
    with open(f"/proc/{pid}/{name}") as f:
        return [(int(a), int(b), int(c)) for a, b, c in (line.split() for line in f if line.strip())]


def _rewrite_in_place(proc_fd: int, tree: int, data: bytes, uid: int, gid: int, mode: int,
                      target: str) -> bool:
    """Rewrite the file that the mount ``tree`` is, keeping its inode; False when unchanged."""
    try:
        # through the host's /proc (opened before setns): the container's /proc cannot see us
        fd = os.open(f"self/fd/{tree}", os.O_RDWR | os.O_CLOEXEC, dir_fd=proc_fd)
    except OSError as exc:
        raise RuntimeFailure(f"cannot open file: {exc.strerror}", op="open", path=target,
                             errno=exc.errno or 0) from exc
    try:
        size = os.fstat(fd).st_size
        if size == len(data) and os.pread(fd, size + 1, 0) == data:
            return False
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        return True
    except OSError as exc:
        raise RuntimeFailure(f"cannot rewrite file: {exc.strerror}", op="write", path=target,
                             errno=exc.errno or 0) from exc
    finally:
        os.close(fd)


def rotate_in(pid: int, start_time: int, files: Sequence[FileSpec]) -> list[str]:
    """Rewrite the changed files of the running container whose init is ``pid``; returns the targets
    changed. Runs in a disposable single-threaded child: it joins the container's mount namespace."""
    if statedir.start_time(pid) != start_time:
        raise RuntimeFailure("container init is gone", op="files", path=f"/proc/{pid}")
    # the files are written from the host's user namespace: container ids -> host ids
    items = materialise.host_ids(_items(files), _id_map(pid, "uid_map"), _id_map(pid, "gid_map"))
    proc_fd = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        sc.setns(ns, sc.CLONE_NEWNS, f"/proc/{pid}/ns/mnt")    # also moves our root and cwd to its /
    finally:
        os.close(ns)
    by_dir: dict[str, list[materialise.Item]] = {}
    changed: list[str] = []
    for meta, content in items:
        directory = dir_mount_of(meta.target)
        if directory:
            inner = materialise.FileSpec(meta.target[len(directory):], meta.uid, meta.gid, meta.mode)
            by_dir.setdefault(directory, []).append((inner, content))
            continue
        tree = writable_clone(meta.target)
        try:
            data = content.reveal() if not isinstance(content, bytes) else content
            if _rewrite_in_place(proc_fd, tree, data, meta.uid, meta.gid, meta.mode, meta.target):
                changed.append(meta.target)
        finally:
            os.close(tree)
    for directory, dir_items in by_dir.items():
        tree = writable_clone(directory)
        try:
            changed += [f"{directory}/{rel}" for rel in materialise.rotate(tree, dir_items)]
        finally:
            os.close(tree)
    return sorted(changed)


def run_rotation(req: dict[str, Any], payload: bytes, report_fd: int) -> NoReturn:
    """Body of the fork server's rotation child: one JSON report, ``{"changed": [...]}`` or an error."""
    from orchestrator.runtime.files import decode_payload
    from orchestrator.runtime.linux.init import _error
    try:
        changed = rotate_in(int(req["pid"]), int(req["start_time"]), decode_payload(payload))
        msg: dict[str, Any] = {"ok": True, "changed": changed}
    except BaseException as exc:  # reported to update_files; messages name targets, never content
        msg = {"ok": False, "error": _error("rotate files", exc)}
    os.write(report_fd, json.dumps(msg).encode())
    os._exit(0)


def refresh_kept_payload(monitor_pid: int, files: Sequence[FileSpec]) -> bool:
    """After a rotation, put the new contents into the payload memfd the monitor keeps for restarts
    (``monitor._keep_payload``), so a restarted init gets the rotated files, not the ones of create.
    Found by its name among the monitor's fds; False when there is none (no restart policy)."""
    from orchestrator.runtime.files import decode_payload, encode_payload
    fd_dir = f"/proc/{monitor_pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False
    for name in names:
        with contextlib.suppress(OSError):
            if not os.readlink(f"{fd_dir}/{name}").startswith(f"/memfd:{MEMFD_NAME} "):
                continue
            fd = os.open(f"{fd_dir}/{name}", os.O_RDWR | os.O_CLOEXEC)
            try:
                kept = {f.target: f for f in decode_payload(read_payload(fd))}
                kept.update({normalise(f.target): f for f in files})
                data = encode_payload(list(kept.values()))
                # whole new content first, then the length: a restart reading at the same moment is
                # the only (rare) loser, and fails with a clear "malformed files payload"
                os.pwrite(fd, data, 0)
                os.ftruncate(fd, len(data))
            finally:
                os.close(fd)
            return True
    return False


def check_update(cdir: Path, files: Sequence[FileSpec]) -> None:
    """Rotation rewrites existing files only: a new target needs a new mount, i.e. a re-create."""
    known = recorded_targets(cdir)
    for f in files:
        if normalise(f.target) not in known:
            raise RuntimeFailure("file target was not mounted at create; re-create the container",
                                 op="update_files", path=normalise(f.target))

