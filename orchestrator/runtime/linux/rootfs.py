"""Building the container's filesystem view, inside its own mount namespace (called by ``init``).

Pure part: :func:`secure_join` resolves a container path under the root the way the container will see
it (symlinks resolved relative to the root, ``..`` clamped at it), so a bind-mount destination can never
land outside the root. Apply part: rootfs mounts (usually one overlay), the spec's mounts, device nodes,
``pivot_root`` with the old root detached, and the read-only / masked paths. Neighbours: ``syscalls``
(the calls), ``spec`` (option parsing), ``init`` (the order these run in).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.linux import syscalls as sc
from orchestrator.runtime.linux.spec import MountOptions, parse_mount_options

_MAX_SYMLINKS = 255

# (path, major, minor) of the devices every container gets (runtime-spec "Default Devices")
DEFAULT_DEVICES = (("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
                   ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0))
DEFAULT_LINKS = (("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
                 ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
                 ("pts/ptmx", "/dev/ptmx"))
_LOCKED = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_RDONLY
# linux.rootfsPropagation -> the flags for "/" (anything else: rslave, our default)
PROPAGATION = {"shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC, "private": sc.MS_PRIVATE,
               "rprivate": sc.MS_PRIVATE | sc.MS_REC, "slave": sc.MS_SLAVE,
               "unbindable": sc.MS_UNBINDABLE | sc.MS_REC}
DEFAULT_PROPAGATION = sc.MS_SLAVE | sc.MS_REC


def bind_flags(opts: MountOptions) -> tuple[int, int]:
    """(flags of a bind mount, flags to remount it with afterwards, or 0): a bind ignores all but
    MS_REC, so its other options (ro, nosuid, ...) take a remount. Shared with ``initplan``."""
    remount = opts.flags & ~(sc.MS_REC | sc.MS_BIND) \
        if opts.flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT) else 0
    return sc.MS_BIND | (opts.flags & sc.MS_REC), remount


def secure_join(root: str, unsafe: str) -> str:
    """``root`` + ``unsafe`` with every symlink on the way resolved as if ``root`` were ``/``."""
    pending = [p for p in unsafe.split("/") if p]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        full = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            raise RuntimeFailure("too many levels of symbolic links", op="resolve", path=unsafe,
                                 errno=errno.ELOOP)
        target = os.readlink(full)
        if target.startswith("/"):
            resolved = []
        pending = [p for p in target.split("/") if p] + pending
    return os.path.join(root, *resolved)


def _mkdirs(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise RuntimeFailure(f"cannot create mount point: {exc.strerror}", op="mkdir", path=path,
                             errno=exc.errno or 0) from exc


def _touch(path: str) -> None:
    _mkdirs(os.path.dirname(path))
    try:
        # O_RDONLY: an existing file on a read-only root (readonlyRootfs) is a fine mount point
        os.close(os.open(path, os.O_CREAT | os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
    except OSError as exc:
        raise RuntimeFailure(f"cannot create mount point: {exc.strerror}", op="create", path=path,
                             errno=exc.errno or 0) from exc


def _remount(target: str, flags: int) -> None:
    """Bind-remount with ``flags``; in a user namespace the source's nosuid/nodev/noexec are locked and
    must be kept, so on EPERM retry with the flags the mount already has."""
    try:
        sc.mount(None, target, None, flags | sc.MS_BIND | sc.MS_REMOUNT)
    except RuntimeFailure as exc:
        if exc.errno != errno.EPERM:
            raise
        locked = os.statvfs(target).f_flag & _LOCKED
        sc.mount(None, target, None, flags | sc.MS_BIND | sc.MS_REMOUNT | locked)


def make_root_private(propagation: str) -> None:
    """Stop our mounts propagating to the host (and, by default, the host's into us)."""
    sc.mount(None, "/", None, PROPAGATION.get(propagation, DEFAULT_PROPAGATION))


def mount_rootfs(root: str, rootfs: list[dict[str, Any]]) -> None:
    """The root filesystem mounts (snapshotter style: described by the caller, made here)."""
    if not rootfs:
        sc.mount(root, root, None, sc.MS_BIND | sc.MS_REC)      # pivot_root needs a mount point
    for m in rootfs:
        target = secure_join(root, m.get("target", "")) if m.get("target") else root
        if m.get("cwd"):
            os.chdir(m["cwd"])          # relative lowerdir=... paths resolve from here
        opts = parse_mount_options(m.get("options", []))
        if m["type"] == "bind" or opts.is_bind:
            flags, again = bind_flags(opts)
            sc.mount(m["source"], target, None, flags)
            if again:
                _remount(target, again)
        else:
            sc.mount(m["source"], target, m["type"], opts.flags, opts.data or None)
    # pivot_root refuses a shared new root; keep our root mount out of any peer group
    sc.mount(None, root, None, sc.MS_PRIVATE)


def mount_one(root: str, bundle: str, m: dict[str, Any]) -> None:
    """One entry of the spec's ``mounts``; the destination is resolved inside the root."""
    dest = secure_join(root, m["destination"])
    opts = parse_mount_options(m.get("options", []))
    kind = m.get("type") or ("bind" if opts.is_bind else "none")
    source = m.get("source", "")
    if kind == "bind" or opts.is_bind:
        source = source if source.startswith("/") else os.path.join(bundle, source)
        try:
            is_dir = stat.S_ISDIR(os.stat(source).st_mode)
        except OSError as exc:
            raise RuntimeFailure(f"bind source missing: {exc.strerror}", op="stat", path=source,
                                 errno=exc.errno or 0) from exc
        _mkdirs(dest) if is_dir else _touch(dest)
        flags, again = bind_flags(opts)
        sc.mount(source, dest, None, flags)
        if again:
            _remount(dest, again)
    elif kind == "cgroup":
        # our hosts may be v1/hybrid; the container gets the unified hierarchy, rooted at its own cgroup
        # by the cgroup namespace
        _mkdirs(dest)
        sc.mount("cgroup2", dest, "cgroup2", opts.flags)
    else:
        _mkdirs(dest)
        try:
            sc.mount(source or kind, dest, kind, opts.flags, opts.data or None)
        except RuntimeFailure as exc:
            if kind != "sysfs" or exc.errno != errno.EPERM:
                raise
            # sysfs of a network namespace we do not own (user ns with the host network): bind it
            sc.mount("/sys", dest, None, sc.MS_BIND | sc.MS_REC)
            _remount(dest, opts.flags)
    if opts.propagation:
        sc.mount(None, dest, None, opts.propagation)


def create_devices(root: str, devices: list[dict[str, Any]], in_userns: bool) -> None:
    """Default device nodes plus ``linux.devices``; in a user namespace mknod is refused, so the host's
    node is bind-mounted instead (as runc does)."""
    wanted: list[dict[str, Any]] = [{"path": p, "type": "c", "major": ma, "minor": mi, "fileMode": 0o666}
                                    for p, ma, mi in DEFAULT_DEVICES]
    wanted += devices
    parents: dict[str, str] = {}          # each directory resolved (and made) once, not per node
    for dev in wanted:
        where, name = os.path.split(dev["path"])
        if name in ("", ".", ".."):
            dest = secure_join(root, dev["path"])
            _mkdirs(os.path.dirname(dest))
        else:
            parent = parents.get(where)
            if parent is None:
                parent = parents[where] = secure_join(root, where)
                _mkdirs(parent)
            # the last component is never followed: an existing node or symlink there is replaced
            dest = os.path.join(parent, name)
        if os.path.lexists(dest):
            os.unlink(dest)
        if in_userns:
            _touch(dest)
            sc.mount(dev["path"], dest, None, sc.MS_BIND)
            continue
        kind = stat.S_IFBLK if dev.get("type") == "b" else stat.S_IFIFO if dev.get("type") == "p" \
            else stat.S_IFCHR
        mode = int(dev.get("fileMode", 0o666)) & 0o7777
        try:
            os.mknod(dest, mode | kind, os.makedev(int(dev.get("major", 0)), int(dev.get("minor", 0))))
            os.chmod(dest, mode)      # mknod's mode is filtered by the umask
            os.chown(dest, int(dev.get("uid", 0)), int(dev.get("gid", 0)))
        except OSError as exc:
            raise RuntimeFailure(f"cannot create device: {exc.strerror}", op="mknod", path=dest,
                                 errno=exc.errno or 0) from exc
    for target, link in DEFAULT_LINKS:
        where, name = os.path.split(link)
        parent = parents.get(where) or secure_join(root, where)
        dest = os.path.join(parent, name)
        if not os.path.lexists(dest):
            os.symlink(target, dest)


def pivot(root: str) -> None:
    """Make ``root`` the new ``/`` and detach the old root (the runc "pivot_root(., .)" trick: no
    directory for the old root is needed, and nothing of the host stays reachable)."""
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.chdir(root)
        sc.pivot_root(".", ".")
        # the old root is now stacked over the new one; step onto it, make sure its unmount does not
        # propagate anywhere, and detach it
        os.fchdir(old_root)
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount2(".", sc.MNT_DETACH)
    finally:
        os.close(old_root)
    os.chdir("/")


def readonly_path(path: str) -> None:
    if not os.path.exists(path):
        return
    sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
    _remount(path, sc.MS_RDONLY | sc.MS_REC)


def mask_path(path: str) -> None:
    if not os.path.exists(path):
        return
    if os.path.isdir(path):
        sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY)
    else:
        sc.mount("/dev/null", path, None, sc.MS_BIND)


def readonly_root() -> None:
    _remount("/", sc.MS_RDONLY)
