"""Materialisation: write config and secret files under a directory, safely and atomically.

Each file lands at ``dest_dir / <its container target without the leading slash>`` with the mount's
uid, gid and mode. ``dest_dir`` is the per-container tmpfs for secrets (``secrets.tmpfs``), or a
directory under the container's state dir for configs (configs are not secret); it may also be an open
directory fd (a tmpfs detached after its bind mounts were made, reachable only through that fd).
Guarantees:

- no path escapes ``dest_dir``: ``..`` and empty components are refused, and every directory below
  ``dest_dir`` is opened relative to its parent with O_NOFOLLOW (no symlink, planted by a container that
  can write there, is ever followed; the same walk is safe under ``/proc/PID/root``);
- atomic: content goes to a temp file in the same directory (O_EXCL|O_NOFOLLOW, created 0600), then
  fchown + fchmod (chown after chmod would clear set-id bits), then rename over the target, so a reader
  sees the old file or the new one, never a mix;
- ``rotate`` rewrites only files whose content changed. A container sees a rename only through a mounted
  *directory*; through a single-file bind mount it keeps the old inode, so for those the runtime passes
  ``in_place=True`` (same inode rewritten: not atomic for a concurrent reader, hence signal after it).

Neighbours: ``secrets.tmpfs`` (the mount), ``secrets.value``; called by the runtime's container setup
(files received over its setup channel) and by the reconciler for ``signal``/``none`` rotations. Imports
nothing from ``manifest``: anything with target/uid/gid/mode (``FileMount``) will do, so the runtime can
use it without breaking its import contract.
"""

from __future__ import annotations

import os
import secrets as _random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orchestrator.errors import RuntimeFailure
from orchestrator.fsutil import write_all
from orchestrator.secrets.value import SecretValue

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
DIR_MODE = 0o755                       # directories created on the way to a target


class FileMeta(Protocol):
    """What materialisation needs of a mount; ``manifest.model.FileMount`` has it."""

    @property
    def target(self) -> str: ...
    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...
    @property
    def mode(self) -> int: ...


Content = bytes | SecretValue
Item = tuple[FileMeta, Content]
IdMap = Sequence[tuple[int, int, int]]            # (container id, host id, count), as in the model


@dataclass(frozen=True)
class FileSpec:
    """A FileMeta of our own, e.g. with ids already translated to the host's."""

    target: str
    uid: int
    gid: int
    mode: int


def _to_host(cid: int, id_map: IdMap, what: str, target: str) -> int:
    for inside, outside, count in id_map:
        if inside <= cid < inside + count:
            return outside + (cid - inside)
    raise RuntimeFailure(f"{what} {cid} is not mapped in the container's user namespace",
                         op="materialise", path=target)


def host_ids(items: Sequence[Item], uid_map: IdMap, gid_map: IdMap) -> list[Item]:
    """Items with uid/gid translated through a user namespace's maps: the tmpfs is written from the
    host's user namespace, so a file for container uid 101 must belong to host uid ``map(101)``."""
    return [(FileSpec(m.target, _to_host(m.uid, uid_map, "uid", m.target),
                      _to_host(m.gid, gid_map, "gid", m.target), m.mode), c) for m, c in items]


def relative_parts(target: str, *, op: str = "materialise") -> list[str]:
    """The components of a container path below the destination root; refuses escapes and NUL bytes
    (the kernel would cut the path there). ``op`` names the caller's step in the error."""
    if not isinstance(target, str) or not target.startswith("/"):
        raise RuntimeFailure("file target must be an absolute container path", op=op, path=str(target))
    parts = [p for p in target.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or any("\0" in p for p in parts):
        raise RuntimeFailure("file target escapes its destination", op=op, path=target)
    return parts


def content_bytes(content: Content) -> bytes:
    """The bytes of a file's content (a ``SecretValue`` revealed: only for writing it)."""
    return content.reveal() if isinstance(content, SecretValue) else bytes(content)


Dest = Path | int                      # a directory path, or an open directory fd (O_PATH is enough)


@contextmanager
def _parent_fd(root: Dest, parts: Sequence[str], *, create: bool) -> Iterator[int]:
    """An fd of the directory holding ``parts[-1]``, reached without following any symlink."""
    try:
        if isinstance(root, int):
            # a detached tmpfs is reachable only through the fd that was kept: reopen it as a directory
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root)
            root = Path(f"/proc/self/fd/{root}")
        else:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise RuntimeFailure(f"cannot open destination: {exc.strerror}", op="open", path=str(root),
                             errno=exc.errno or 0) from exc
    try:
        walked = root
        for part in parts[:-1]:
            walked = walked / part
            if create:
                with suppress(FileExistsError):
                    os.mkdir(part, DIR_MODE, dir_fd=fd)
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                # ELOOP / ENOTDIR: a symlink or a file where a directory should be; refuse, never follow
                raise RuntimeFailure(f"unsafe or missing directory: {exc.strerror}", op="open",
                                     path=str(walked), errno=exc.errno or 0) from exc
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def _write_atomic(dfd: int, name: str, data: bytes, meta: FileMeta, shown: str) -> None:
    tmp = f".{name}.tmp-{_random.token_hex(4)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dfd)
        try:
            write_all(fd, data)
            os.fchown(fd, meta.uid, meta.gid)
            os.fchmod(fd, meta.mode)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError as exc:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise RuntimeFailure(f"cannot write file: {exc.strerror}", op="write", path=shown,
                             errno=exc.errno or 0) from exc


def _write_in_place(dfd: int, name: str, data: bytes, meta: FileMeta, shown: str) -> None:
    """Rewrite the existing inode (what a single-file bind mount in a container points at)."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        _write_atomic(dfd, name, data, meta, shown)
        return
    except OSError as exc:
        raise RuntimeFailure(f"cannot open file: {exc.strerror}", op="open", path=shown,
                             errno=exc.errno or 0) from exc
    try:
        # one pwrite, then truncate: a reader racing this may see a mix, which is why in-place
        # rotation is followed by the signal that tells the process to re-read
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fchown(fd, meta.uid, meta.gid)
        os.fchmod(fd, meta.mode)
    except OSError as exc:
        raise RuntimeFailure(f"cannot rewrite file: {exc.strerror}", op="write", path=shown,
                             errno=exc.errno or 0) from exc
    finally:
        os.close(fd)


def _check_unique(items: Sequence[Item]) -> None:
    seen: set[tuple[str, ...]] = set()
    for meta, _ in items:
        parts = tuple(relative_parts(meta.target))
        if parts in seen:
            raise RuntimeFailure("two files for the same target", op="materialise", path=meta.target)
        seen.add(parts)


def tmpfs_size_for(items: Sequence[Item]) -> int:
    """A tmpfs size for these files: every file takes whole pages, twice over (a rotation writes the
    new file before the old one goes), plus room for directories; at least 256 KiB."""
    page = os.sysconf("SC_PAGE_SIZE")
    pages = sum(-(-max(len(content_bytes(c)), 1) // page) for _, c in items)
    return max(256 * 1024, (2 * pages + 2 * len(items) + 16) * page)


def write_files(dest_dir: Dest, items: Sequence[Item]) -> list[str]:
    """Write every item under ``dest_dir``; returns the relative paths written, in order."""
    _check_unique(items)
    written: list[str] = []
    for meta, content in items:
        parts = relative_parts(meta.target)
        with _parent_fd(dest_dir, parts, create=True) as dfd:
            _write_atomic(dfd, parts[-1], content_bytes(content), meta, meta.target)
        written.append("/".join(parts))
    return written


def write_secret_files(dest_dir: Dest, items: Sequence[Item]) -> list[str]:
    """Secrets: ``dest_dir`` must be the container's tmpfs (never a directory on disk)."""
    return write_files(dest_dir, items)


def write_config_files(dest_dir: Dest, items: Sequence[Item]) -> list[str]:
    """Configs: may live on disk, e.g. under the container's state dir."""
    return write_files(dest_dir, items)


def _current(dfd: int, name: str) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def rotate(dest_dir: Dest, items: Sequence[Item], *, in_place: bool = False) -> list[str]:
    """Rewrite the files whose content differs from what is there; returns the relative paths changed.

    Files whose content is unchanged are not touched (no rename, no new inode), so a ``signal`` mount
    whose file did not change need not be signalled."""
    _check_unique(items)
    changed: list[str] = []
    for meta, content in items:
        parts = relative_parts(meta.target)
        data = content_bytes(content)
        with _parent_fd(dest_dir, parts, create=True) as dfd:
            if _current(dfd, parts[-1]) == data:
                continue
            writer = _write_in_place if in_place else _write_atomic
            writer(dfd, parts[-1], data, meta, meta.target)
        changed.append("/".join(parts))
    return changed
