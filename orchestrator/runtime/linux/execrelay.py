"""The caller's side of a streamed ``exec`` (``procio``): copy between our stdio and the process's.

The process never gets our own stdio (a terminal of ours would be its controlling terminal, open to
TIOCSTI and tcsetattr): it gets pipes, or with ``-t`` the slave of a pty made here (``open_pty``), and
``relay`` copies. Its output goes to our stdout/stderr as it comes. Our stdin goes to its input (only
with ``exec -i``) without ever blocking on it: what it has not read yet waits in a buffer while its
output keeps flowing, and we read no more of ours meanwhile. At the end of our input a pipe is closed
and a terminal gets its end-of-file character. Everything ends once the exec helper has reported and
closed its status pipe; output still coming then is drained for at most ``_DRAIN_S`` (a background
process the command left may hold the pipe or the terminal open: we do not wait for it). A pty's
window size follows ours (at the start, and on SIGWINCH in the main thread). Raw mode for our own
terminal is the CLI's (``cli.container_cmds``). Neighbours: ``procio`` (the caller), ``execproc``
(the other side).
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
import time
from collections.abc import Callable, Iterator

_DRAIN_S = 0.2          # after the process is done: how long its last output may take


def open_pty() -> tuple[int, int]:
    """(master, slave), both close-on-exec, the master non-blocking, the size that of our terminal."""
    master, slave = os.openpty()
    for fd in (master, slave):
        os.set_inheritable(fd, False)
    os.set_blocking(master, False)
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
        signal.signal(signal.SIGWINCH, old if old is not None else signal.SIG_DFL)


def pty_eof(master: int) -> Callable[[bytes], None]:
    """At the end of our input: the terminal's end-of-file character, twice after a partial line
    (once ends the line, once more is the end of file)."""
    def end(last: bytes) -> None:
        eof = termios.tcgetattr(master)[6][termios.VEOF]
        char = eof if isinstance(eof, bytes) else bytes([eof])
        with contextlib.suppress(OSError):
            os.write(master, char if last.endswith((b"\n", b"\r")) or not last else char * 2)
    return end


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _read(fd: int) -> bytes | None:
    """What ``fd`` has; b"" at its end; None when nothing is there after all (a non-blocking pty)."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno == errno.EIO:          # a pty whose every slave is closed: the process is gone
            return b""
        raise


def _copy(fd: int, dest: int) -> bool:
    """What ``fd`` has, to ``dest``; False once ``fd`` is at its end."""
    out = _read(fd)
    if out:
        _write_all(dest, out)
    return out != b""


def relay(status_r: int, status: list[bytes], outputs: dict[int, int], feed: int | None,
          end_input: Callable[[bytes], None]) -> None:
    """Until the helper closed ``status_r`` (what it wrote there is appended to ``status``, which the
    caller keeps whatever happens): each of ``outputs`` (process side -> our fd) copied as it comes;
    our stdin to ``feed`` (non-blocking: the process's input pipe or the pty master), ``end_input``
    called with the last bytes given once our stdin ends. ``feed`` None: the process reads nothing."""
    reading = {status_r, *outputs} | ({0} if feed is not None else set())
    pending, last = b"", b""
    while status_r in reading:
        wanted = reading - {0} if pending else reading
        ready, writable, _ = select.select(list(wanted), [feed] if pending and feed is not None else [], [])
        if writable:
            try:
                pending = pending[os.write(writable[0], pending):]
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.EIO):
                    raise
                # it closed its input (a pipe), or every slave of the pty is closed: the rest of
                # ours goes nowhere
                pending, feed = b"", None
                reading.discard(0)
            if not pending and 0 not in reading and feed is not None:
                end_input(last)
                feed = None                 # ended: once
        for fd in ready:
            if fd == status_r:
                data = os.read(status_r, 65536)
                if data:
                    status.append(data)
                else:
                    reading.discard(status_r)
            elif fd == 0:
                data = os.read(0, 65536)
                if data:
                    pending, last = pending + data, data
                else:
                    reading.discard(0)
                    if not pending and feed is not None:
                        end_input(last)
                        feed = None
            elif not _copy(fd, outputs[fd]):
                reading.discard(fd)
    outs = [fd for fd in outputs if fd in reading]
    end = time.monotonic() + _DRAIN_S
    while outs and (left := end - time.monotonic()) > 0:     # the last output, if it comes at once
        ready, _, _ = select.select(outs, [], [], left)
        if not ready:
            break
        for fd in ready:
            if not _copy(fd, outputs[fd]):
                outs.remove(fd)
