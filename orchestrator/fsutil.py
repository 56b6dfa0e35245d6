"""Filesystem helpers shared by every layer: ``write_atomic`` (write a temp file, rename it),
``read_if_present`` (a whole small file through a plain descriptor, None when it is not there),
``write_all`` (all of a buffer to a descriptor) and ``Trash`` (delete a directory tree now for every
reader, on the disk in the background).

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


def write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd`` (a pipe or a file may take less than asked in one write(2))."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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
            write_all(fd, data)
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


class Trash:
    """Directories deleted by renaming them into ``path`` (gone from every reader's view at once) and
    removing them in one background thread: on this host's ext4 the unlinks of a container's state dir
    cost ~2 ms, most of a delete, and a writable layer can hold any number of files. ``path`` must be on
    the filesystem of what is discarded (a rename). Whatever a crash left there is queued at start."""

    def __init__(self, path: Path) -> None:
        import queue
        import threading
        self.path = path
        path.mkdir(exist_ok=True)
        self._doomed: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._closed = False
        self._sweeper = threading.Thread(target=self._sweep, name="trash-sweeper", daemon=True)
        self._sweeper.start()
        for entry in os.listdir(path):
            self._doomed.put(path / entry)

    def _sweep(self) -> None:
        import shutil
        while (doomed := self._doomed.get()) is not None:
            shutil.rmtree(doomed, ignore_errors=True)

    def discard(self, cdir: Path) -> None:
        """Remove ``cdir``: atomically from every reader's view (rename), then from the disk (here
        and now once ``close`` has been called: nothing would sweep it)."""
        import shutil
        import uuid
        if self._closed:
            shutil.rmtree(cdir, ignore_errors=True)
            return
        doomed = self.path / f"{cdir.name}.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(cdir, doomed)
        except FileNotFoundError:
            return
        except OSError:                  # another filesystem mounted there (EXDEV): remove it here
            shutil.rmtree(cdir, ignore_errors=True)
            return
        self._doomed.put(doomed)

    def close(self) -> None:
        """Until everything queued is removed."""
        self._closed = True
        self._doomed.put(None)
        self._sweeper.join()
