"""The caller's side of ``exec -t``: a pty whose slave the exec'd process gets as its stdio and
controlling terminal (``execproc``), and the loop that copies between it and our own stdio.

Our stdin goes to the terminal (only with ``exec -i``), the terminal to our stdout, until the exec helper
has reported and closed its status pipe; what the terminal still holds then is drained briefly (a
background process the command left may keep the slave open: we do not wait for it). The window size
follows ours: set at the start and on SIGWINCH (when we run in the main thread). Putting our own
terminal into raw mode is the CLI's business (``cli.stack_cmds``). Neighbours: ``procio`` (the caller),
``execproc``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import termios
import threading
from collections.abc import Iterator

_DRAIN_S = 0.2          # after the process is done: how long the terminal's last output may take


def open_pty() -> tuple[int, int]:
    """(master, slave), both close-on-exec, the slave's size that of our terminal (if we have one)."""
    master, slave = os.openpty()
    for fd in (master, slave):
        os.set_inheritable(fd, False)
    copy_size(master)
    return master, slave


def copy_size(master: int) -> None:
    for ours in (0, 1):
        with contextlib.suppress(OSError):
            size = fcntl.ioctl(ours, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(master, termios.TIOCSWINSZ, size)
            return


@contextlib.contextmanager
def resizing(master: int) -> Iterator[None]:
    """SIGWINCH copies our window size to the terminal while this lasts (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGWINCH, lambda _s, _f: copy_size(master))
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, old)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except InterruptedError:
            continue


def relay(master: int, status_r: int, stdin: bool, status: list[bytes]) -> None:
    """Copy until the helper closed ``status_r``, appending what it wrote there to ``status`` (which
    the caller keeps whatever happens, an interrupt included)."""
    reading = {master, status_r} | ({0} if stdin else set())
    while status_r in reading:
        try:
            ready, _, _ = select.select(list(reading), [], [])
        except InterruptedError:            # SIGWINCH
            continue
        for fd in ready:
            if fd == status_r:
                data = os.read(status_r, 65536)
                if data:
                    status.append(data)
                else:
                    reading.discard(status_r)
            elif fd == master:
                data = _read_master(master)
                if data:
                    _write_all(1, data)
                else:
                    reading.discard(master)
            else:
                data = os.read(0, 65536)
                if data:
                    _write_all(master, data)
                else:                       # our input ended: the terminal's end-of-file character
                    reading.discard(0)
                    _write_all(master, b"\x04")
    while master in reading:                # the last output, if it comes at once
        ready, _, _ = select.select([master], [], [], _DRAIN_S)
        data = _read_master(master) if ready else b""
        if not data:
            break
        _write_all(1, data)


def _read_master(master: int) -> bytes:
    try:
        return os.read(master, 65536)
    except OSError as exc:
        if exc.errno == errno.EIO:          # every slave closed: the process and its children are gone
            return b""
        raise
