"""Safe extraction of one image layer tar into a directory, in overlayfs form.

Called by ``orchestrator.images.store`` (which verifies digests around it and renames the result into
place); reads nothing but the tar stream it is given and writes nothing outside ``dest``.

Why our own extractor instead of ``tarfile.extractall``: every path is resolved component by component
from an open directory fd of the layer root with ``O_NOFOLLOW`` (openat style), so a symlink planted by an
earlier entry can never redirect a later write, whatever the order of entries; the rules below are checked
per entry and a violation raises ``UnsafeArchiveError`` naming the archive and the entry.

Rules:
- names: no absolute paths, no ``..`` component, no NUL, not empty; a leading ``./`` is dropped.
- parents are opened with ``O_DIRECTORY|O_NOFOLLOW``; a parent that is a symlink is refused.
- regular files are created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` after removing what was there.
- hard links must point at an entry already extracted in this layer (resolved the same safe way).
- device nodes: only the harmless character devices every container gets anyway (null, zero, full,
  random, urandom, tty, console, ptmx) are allowed; every other char/block device is refused. FIFOs are
  allowed.
- caps: ``max_entries`` and ``max_bytes`` (sum of member sizes) bound a layer; exceeding either is refused.
- owners are kept when running as root (chown before chmod, so setuid/setgid bits survive); modes are kept.
- xattrs from PAX ``SCHILY.xattr.*`` headers: only ``security.capability`` and ``user.*`` are applied;
  ``trusted.*`` (overlay metadata) from an archive is never honoured.
- OCI whiteouts become overlayfs whiteouts: ``.wh.NAME`` -> char device 0/0 ``NAME``; ``.wh..wh..opq``
  -> xattr ``trusted.overlay.opaque=y`` on its directory.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, cast

from orchestrator.errors import ImageError, UnsafeArchiveError
from orchestrator.fsutil import write_all

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
# (major, minor) of char devices a layer may carry: the runtime's default device set
ALLOWED_CHAR_DEVICES = frozenset({(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)})
_COPY_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_IS_ROOT = os.geteuid() == 0


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Limits:
    max_entries: int = 1_000_000
    max_bytes: int = 64 << 30


@dataclass
class LayerStats:
    entries: int = 0
    bytes: int = 0          # sum of regular file sizes


def split_name(name: str, *, archive: str) -> list[str]:
    """Validated path components of a tar member name (pure; raises UnsafeArchiveError)."""
    if "\0" in name:
        raise UnsafeArchiveError(f"{archive}: entry {name!r}: NUL byte in name")
    if name.startswith("/"):
        raise UnsafeArchiveError(f"{archive}: entry {name!r}: absolute path refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: entry {name!r}: '..' component refused")
    return parts


class _Extractor:
    """One layer extraction: a root dir fd, a small cache of parent dir fds, the running totals."""

    def __init__(self, dest: Path, archive: str, limits: Limits) -> None:
        self.archive = archive
        self.limits = limits
        self.stats = LayerStats()
        self.root_fd = os.open(dest, _DIR_FLAGS)
        self._fds: dict[tuple[str, ...], int] = {}
        # dirs whose mtime must be set after their children are written
        self._dir_times: list[tuple[tuple[str, ...], float]] = []

    def close(self) -> None:
        self._drop_cache()
        os.close(self.root_fd)

    def _drop_cache(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _refuse(self, name: str, why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{self.archive}: entry {name!r}: {why}")

    def _dir_fd(self, parts: tuple[str, ...], name: str) -> int:
        """fd of the directory ``parts`` under the root, created as needed, never via a symlink."""
        if not parts:
            return self.root_fd
        cached = self._fds.get(parts)
        if cached is not None:
            return cached
        parent = self._dir_fd(parts[:-1], name)
        comp = parts[-1]
        try:
            fd = os.open(comp, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            os.mkdir(comp, 0o755, dir_fd=parent)
            fd = os.open(comp, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._refuse(name, f"parent {'/'.join(parts)!r} is not a directory "
                                         "(writing through a symlink is refused)") from exc
            raise
        self._fds[parts] = fd
        return fd

    def _clear(self, parent: int, parts: list[str], *, keep_dir: bool) -> bool:
        """Remove what is at ``parts`` (never following it). Returns True when a dir was kept."""
        comp = parts[-1]
        try:
            st = os.stat(comp, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            _rmtree_at(parent, comp)
            # cached fds inside the removed tree would point at unlinked dirs
            gone = tuple(parts)
            for key in [k for k in self._fds if k[:len(gone)] == gone]:
                os.close(self._fds.pop(key))
            return False
        os.unlink(comp, dir_fd=parent)
        return False

    def add(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        name = m.name
        self.stats.entries += 1
        if self.stats.entries > self.limits.max_entries:
            raise self._refuse(name, f"more than {self.limits.max_entries} entries in one layer")
        if m.isreg():
            self.stats.bytes += m.size
            if self.stats.bytes > self.limits.max_bytes:
                raise self._refuse(name, f"layer content exceeds {self.limits.max_bytes} bytes")
        parts = split_name(name, archive=self.archive)
        if len(self._fds) >= 256:                    # evict only between entries: fds in use stay open
            self._drop_cache()
        if not parts:
            return                                   # "./" itself: the layer root
        base = parts[-1]
        parent = self._dir_fd(tuple(parts[:-1]), name)
        if base == OPAQUE_MARKER:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT_PREFIX):
            target = base[len(WHITEOUT_PREFIX):]
            if not target or target in (".", ".."):
                raise self._refuse(name, "malformed whiteout")
            self._clear(parent, [*parts[:-1], target], keep_dir=False)
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
            os.utime(target, (m.mtime, m.mtime), dir_fd=parent, follow_symlinks=False)
            return
        if m.isdir():
            if not self._clear(parent, parts, keep_dir=True):
                os.mkdir(base, 0o755, dir_fd=parent)
            fd = self._dir_fd(tuple(parts), name)
            self._set_meta_fd(fd, m)
            self._dir_times.append((tuple(parts), m.mtime))
            return
        self._clear(parent, parts, keep_dir=False)
        if m.isreg():
            self._write_file(tar, m, parent, base)
        elif m.issym():
            os.symlink(m.linkname, base, dir_fd=parent)
            self._set_meta_path(parent, base, m, symlink=True)
        elif m.islnk():
            self._hardlink(m, parent, base)
        elif m.ischr() or m.isblk():
            if not (m.ischr() and (m.devmajor, m.devminor) in ALLOWED_CHAR_DEVICES):
                kind = "char" if m.ischr() else "block"
                raise self._refuse(name, f"{kind} device {m.devmajor}:{m.devminor} refused "
                                         "(only null, zero, full, random, urandom, tty, console, ptmx)")
            os.mknod(base, stat.S_IFCHR | (m.mode & 0o7777), os.makedev(m.devmajor, m.devminor),
                     dir_fd=parent)
            self._set_meta_path(parent, base, m)
        elif m.isfifo():
            os.mkfifo(base, m.mode & 0o7777, dir_fd=parent)
            self._set_meta_path(parent, base, m)
        else:
            raise self._refuse(name, f"unsupported entry type {m.type!r}")

    def _write_file(self, tar: tarfile.TarFile, m: tarfile.TarInfo, parent: int, base: str) -> None:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=parent)
        try:
            src = tar.extractfile(m)
            if src is None:
                raise self._refuse(m.name, "unreadable regular file")
            left = m.size
            while left > 0:
                chunk = src.read(min(_COPY_CHUNK, left))
                if not chunk:
                    raise ImageError(f"{self.archive}: entry {m.name!r}: truncated file data")
                left -= len(chunk)
                write_all(fd, chunk)
            self._set_meta_fd(fd, m)
        finally:
            os.close(fd)

    def _hardlink(self, m: tarfile.TarInfo, parent: int, base: str) -> None:
        tparts = split_name(m.linkname, archive=self.archive)
        if not tparts:
            raise self._refuse(m.name, "hard link to the layer root")
        tparent = self._dir_fd(tuple(tparts[:-1]), m.name)
        try:
            os.link(tparts[-1], base, src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise self._refuse(m.name, f"hard link target {m.linkname!r} is not an earlier entry of "
                                       "this layer") from exc

    def _set_meta_fd(self, fd: int, m: tarfile.TarInfo) -> None:
        if _IS_ROOT:
            os.fchown(fd, m.uid, m.gid)              # before chmod: chown clears setuid/setgid
        self._xattrs_fd(fd, m)
        os.fchmod(fd, m.mode & 0o7777)
        if not m.isdir():
            os.utime(fd, (m.mtime, m.mtime))

    def _set_meta_path(self, parent: int, base: str, m: tarfile.TarInfo, *, symlink: bool = False) -> None:
        if _IS_ROOT:
            os.chown(base, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
        if not symlink:
            os.chmod(base, m.mode & 0o7777, dir_fd=parent, follow_symlinks=False)
        os.utime(base, (m.mtime, m.mtime), dir_fd=parent, follow_symlinks=False)

    def _xattrs_fd(self, fd: int, m: tarfile.TarInfo) -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            attr = key[len("SCHILY.xattr."):]
            if attr == "security.capability" or attr.startswith("user."):
                raw = value.encode("utf-8", "surrogateescape")
                try:
                    os.setxattr(fd, attr, raw)
                except OSError as exc:   # fs without user xattrs: optional metadata, skip
                    if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                        raise

    def finish(self) -> None:
        """Directory mtimes last, since creating children changed them."""
        self._drop_cache()
        for parts, mtime in reversed(self._dir_times):
            fd = self.root_fd
            try:
                for comp in parts:                   # look up only: never recreate a removed dir
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                    if fd != self.root_fd:
                        os.close(fd)
                    fd = nfd
                os.utime(fd, (mtime, mtime))
            except OSError:
                pass                                 # removed or replaced by a later entry
            finally:
                if fd != self.root_fd:
                    os.close(fd)


def _rmtree_at(parent: int, name: str) -> None:
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    try:
        for entry in os.scandir(fd):
            if entry.is_dir(follow_symlinks=False):
                _rmtree_at(fd, entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


MAX_META_HEADER = 1 << 20       # PAX / GNU long-name records: real ones are a few hundred bytes
_META_TYPES = frozenset({tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                         tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK})


def _capped_tarinfo(archive: str) -> type[tarfile.TarInfo]:
    """A TarInfo that refuses oversized metadata records before tarfile reads them into memory."""

    class CappedTarInfo(tarfile.TarInfo):
        def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
            if self.type in _META_TYPES and self.size > MAX_META_HEADER:
                raise UnsafeArchiveError(f"{archive}: entry {self.name!r}: {self.size}-byte metadata "
                                         f"header refused (cap {MAX_META_HEADER})")
            # private hook of tarfile (stable since 2.x), not in the type stubs
            result: tarfile.TarInfo = super()._proc_member(tar)  # type: ignore[misc]
            return result

    return CappedTarInfo


def extract_layer(stream: Readable, dest: Path, *, archive: str, limits: Limits = Limits(),
                  on_entry: Callable[[LayerStats], None] | None = None) -> LayerStats:
    """Unpack the (uncompressed) tar ``stream`` into the existing empty dir ``dest``.

    ``archive`` names the source in errors (e.g. ``busybox.oci.tar:sha256:ab12…``). OS errors are
    translated to ImageError naming the entry; the caller discards ``dest`` on any error.
    """
    ex = _Extractor(dest, archive, limits)
    current = "<header>"
    try:
        # stream mode ("r|") only ever calls read(), which is all a Readable offers
        with tarfile.open(fileobj=cast(IO[bytes], stream), mode="r|", bufsize=_COPY_CHUNK,
                          tarinfo=_capped_tarinfo(archive)) as tar:
            for member in tar:
                current = member.name
                ex.add(tar, member)
                if on_entry is not None:
                    on_entry(ex.stats)
        ex.finish()
    except tarfile.TarError as exc:
        raise ImageError(f"{archive}: bad tar data near entry {current!r}: {exc}") from exc
    except OSError as exc:
        raise ImageError(f"{archive}: entry {current!r}: failed: {exc}") from exc
    finally:
        ex.close()
    return ex.stats
