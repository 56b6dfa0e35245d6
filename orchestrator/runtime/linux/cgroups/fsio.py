"""Thin file I/O on cgroupfs, with OS errors translated once into ``RuntimeFailure``.

Used by the v1 and v2 drivers (``v1.py``, ``v2.py``) and the shared ``base.py``; the pure mapping code in
``compute.py`` never touches files. Interface files always exist on a real cgroupfs, so writes open
without ``O_CREAT``: writing a file the kernel does not offer fails loudly instead of creating a stray
regular file (this also keeps unit tests honest, whose temp trees must create the files they expect).
"""

from __future__ import annotations

import errno as errnos
import os
import time
from pathlib import Path

from orchestrator.errors import RuntimeFailure, TransientRuntimeError
from orchestrator.fsutil import read_if_present


def write(path: Path | str, value: str) -> None:
    """Write ``value`` to one interface file in a single write(2), as the kernel expects."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as exc:
        raise RuntimeFailure(f"cannot open cgroup file {path} to write {value!r}: {exc.strerror}",
                             op="cgroup write", path=str(path), errno=exc.errno or 0) from exc
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        raise RuntimeFailure(f"cannot write {value!r} to cgroup file {path}: {exc.strerror}",
                             op="cgroup write", path=str(path), errno=exc.errno or 0) from exc
    finally:
        os.close(fd)


def read(path: Path | str) -> str:
    try:
        data = read_if_present(path, ())         # no error is "not there" here: a missing file fails
    except OSError as exc:
        raise RuntimeFailure(f"cannot read cgroup file {path}: {exc.strerror}",
                             op="cgroup read", path=str(path), errno=exc.errno or 0) from exc
    return (data or b"").decode(errors="replace")


def read_optional(path: Path | str) -> str | None:
    """The file's text, or None when the controller or kernel does not offer it."""
    try:
        data = read_if_present(path)
    except OSError as exc:
        raise RuntimeFailure(f"cannot read cgroup file {path}: {exc.strerror}",
                             op="cgroup read", path=str(path), errno=exc.errno or 0) from exc
    return None if data is None else data.decode(errors="replace")


def read_int(path: Path, default: int = 0) -> int:
    text = read_optional(path)
    if text is None or not text.strip():
        return default
    word = text.split()[0]
    return default if word == "max" else int(word)


def flat_keyed(text: str | None) -> dict[str, int]:
    """Parse ``key value`` lines (memory.stat, cpu.stat, memory.events, memory.oom_control)."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def mkdir(path: Path | str) -> bool:
    """Create one cgroup directory; False when it already existed."""
    try:
        os.mkdir(path)
    except FileExistsError:
        return False
    except OSError as exc:
        raise RuntimeFailure(f"cannot create cgroup {path}: {exc.strerror}",
                             op="cgroup mkdir", path=str(path), errno=exc.errno or 0) from exc
    return True


def rmdir(path: Path, *, attempts: int = 40, delay_s: float = 0.05) -> None:
    """Remove one cgroup directory; a missing one is fine. EBUSY (tasks still exiting, or a child
    cgroup) is retried briefly, then reported as transient."""
    for attempt in range(attempts):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errnos.EBUSY and attempt < attempts - 1:
                time.sleep(delay_s)
                continue
            cls = TransientRuntimeError if exc.errno == errnos.EBUSY else RuntimeFailure
            raise cls(f"cannot remove cgroup {path}: {exc.strerror}",
                      op="cgroup rmdir", path=str(path), errno=exc.errno or 0) from exc


def procs(path: Path) -> list[int]:
    """Pids in ``cgroup.procs`` of one cgroup directory (empty if it is gone)."""
    text = read_optional(f"{path}/cgroup.procs")
    return [int(x) for x in (text or "").split()]
