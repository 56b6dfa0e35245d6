"""Filesystem helpers shared by every layer: ``write_atomic`` (write a temp file, rename it) and
``read_if_present`` (a whole small file through a plain descriptor, None when it is not there).

It imports nothing from the rest of ``orchestrator`` so that any package (manifest excepted, which never
writes) may use it under the import-linter contracts; callers translate ``OSError`` into their own typed
error (``RuntimeFailure``, ``ImageError``, ...) at their boundary. Neighbours: ``runtime.linux.statedir``,
``images.store``, ``reconcile.bundle``, the CLI's export writer. ``secrets.materialise`` keeps its own
dir-fd writer (it must not follow symlinks in a container's tmpfs).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def write_atomic(path: Path | str, data: bytes, *, mode: int = 0o600, fsync: bool = False) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old file or the whole new one, never a
    part. The temp file is ``.<name>.<pid>.<random>.tmp`` in the same directory (a rename does not cross
    filesystems), created with O_EXCL: two writers (two processes, or two threads) never share one, the
    last rename wins. It is removed when anything fails. ``fsync`` makes the data durable before the
    rename (the rename itself is not synced: a crash may leave the old file, never a torn one)."""
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_GONE: tuple[type[OSError], ...] = (FileNotFoundError, NotADirectoryError)


def read_if_present(path: Path | str, gone: tuple[type[OSError], ...] = _GONE) -> bytes | None:
    """The whole file, or None when opening or reading it raises one of ``gone``; other errors are the
    caller's. No file object: state and cgroup files are read by the thousand on every reconcile pass,
    and ``open()`` cost most of that."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except gone:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except gone:
        return None
    finally:
        os.close(fd)
