"""The exclusive apply lock: ``fcntl.flock`` on ``<root>/apply.lock``.

Two applies (or an apply and a ``down``) never interleave: the second fails fast with ``another apply is
running (pid N, since T)`` or, with ``--wait-lock``, waits. flock is released by the kernel when the
holder dies, so a ``kill -9`` never leaves a stale lock; the pid/time written into the file are only for
the message (the file is not state, and rewriting it is the one write a no-op apply makes).

Neighbours: ``cli.stack_cmds`` takes it around every mutating verb; ``reconcile.controller`` expects the
caller to hold it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from orchestrator.errors import LockedError, StateError


class ApplyLock:
    def __init__(self, root: Path, *, wait: bool = False, timeout_s: float | None = None) -> None:
        self.path = root / "apply.lock"
        self.wait = wait
        self.timeout_s = timeout_s
        self._fd = -1

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StateError(f"cannot open lock file {self.path}: {exc.strerror}") from exc
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise StateError(f"cannot lock {self.path}: {exc.strerror}") from exc
                if not self.wait or (deadline is not None and time.monotonic() >= deadline):
                    holder = _holder(fd)
                    os.close(fd)
                    raise LockedError(f"another apply is running ({holder}); retry later or pass "
                                      "--wait-lock") from None
                time.sleep(0.05)
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {time.time():.3f}\n".encode(), 0)
        except OSError as exc:
            self.release()
            raise StateError(f"cannot write lock file {self.path}: {exc.strerror}") from exc

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)   # closing the last fd drops the flock
            self._fd = -1

    def __enter__(self) -> ApplyLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
        pid, since = int(text[0]), float(text[1])
    except (OSError, ValueError, IndexError):
        return "pid unknown"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
    return f"pid {pid}, since {stamp}"
