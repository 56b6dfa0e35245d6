"""The API process's side of the fork server (``forkserver``): ``ForkServer`` starts one and sends it
requests; ``Exchange`` is one request in flight (a create's with its "go" pipe: ``ForkServer.exchange``).

Also the sealed copies the server and the C spares run from (``sealed_interpreter``, ``sealed_copy``:
runc's fix for CVE-2019-5736). Neighbours: ``forkserver`` (the server), ``serverpool`` (one client per
concurrent caller), ``native`` (the only user), ``monitor.await_go`` (the other end of the go pipe).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from orchestrator.errors import RuntimeFailure

MAX_MSG = 4 << 20          # a request or reply: one SOCK_SEQPACKET message
GO = b"g"                  # on a create's "go" pipe: its cgroup is made (``monitor.await_go``)


def sealed_interpreter() -> int:
    """A sealed, close-on-exec memfd copy of the interpreter binary (runc's fix for CVE-2019-5736).

    Every process that becomes a container process (init, exec helper) descends from a process exec'd
    from this copy, so their ``/proc/self/exe`` (which a hostile image reaches with a command or a
    ``#!/proc/self/exe`` script) is this memfd, never the host's python file: nothing a container holds
    can be reopened for writing on the host, and the seals make the copy itself immutable. Only the
    executable is copied; a shared libpython (pyenv builds link one by an absolute RUNPATH) is mapped
    from the host file but is not reachable through /proc/self/exe, and the non-dumpable init and exec
    helper keep /proc/PID/map_files out of the container's reach. Callers exec it via
    ``/proc/self/fd/N`` with ``argv[0] = sys.executable`` and close their descriptor afterwards.
    """
    return sealed_copy(os.path.realpath(sys.executable), "orchestrator-python")


def sealed_copy(exe: str, name: str) -> int:
    """``sealed_interpreter`` for any program: ``orch-init`` is run from one too (``cspare``)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        src = os.open(exe, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size, done = os.fstat(src).st_size, 0
            while done < size:
                sent = os.sendfile(fd, src, done, size - done)
                if sent == 0:
                    raise OSError(errno.EIO, f"short copy of {exe}", exe)
                done += sent
        finally:
            os.close(src)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Exchange:
    """One request in flight (``ForkServer.exchange``): the caller's word, then the server's reply."""

    def __init__(self, sock: socket.socket, go_w: int) -> None:
        self._sock, self._go_w = sock, go_w
        self.reply: dict[str, Any] | None = None

    def go(self, ok: bool) -> None:
        """For a create sent with a "go" pipe: its cgroup is made (True), or give it up (False: the
        pipe is closed unwritten, which is also what our exit does)."""
        if self._go_w >= 0:
            with contextlib.suppress(OSError):      # the monitor gone already: its report says why
                if ok:
                    os.write(self._go_w, GO)
            os.close(self._go_w)
            self._go_w = -1

    def receive(self) -> dict[str, Any]:
        if self.reply is None:
            self.go(False)                          # never left waiting for a word that never comes
            try:
                raw = self._sock.recv(MAX_MSG)
            except OSError as exc:
                raise RuntimeFailure(f"fork server unreachable: {exc}", op="forkserver",
                                     errno=exc.errno or 0) from exc
            if not raw:
                raise RuntimeFailure("fork server exited", op="forkserver")
            reply: dict[str, Any] = json.loads(raw)
            self.reply = reply
        return self.reply


class ForkServer:
    """Client side: starts the server process and sends it one request at a time."""

    def __init__(self, c_spare: tuple[str, str] | None = None) -> None:
        """``c_spare``: the paths of ``orch-spare`` and ``orch-init`` (``cmonitor``): the server's warm
        spares are then C ones (``cspare``), otherwise Python ones (``spare``)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MSG)
        self._lock = threading.Lock()
        self._sock = ours
        exe = -1
        try:
            exe = sealed_interpreter()
            # argv[0] stays sys.executable: python derives sys.prefix / sys.path (and a venv) from it;
            # only the binary the kernel maps (and /proc/self/exe) is the sealed copy. A process group
            # of its own: a Ctrl-C at the terminal is the CLI's to handle (it closes us), not a
            # KeyboardInterrupt traceback in the server; it still ends when our socket closes.
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.runtime.linux.forkserver", str(theirs.fileno()),
                 str(exe), *(c_spare or ())],
                executable=f"/proc/self/fd/{exe}", pass_fds=[theirs.fileno(), exe],
                stdin=subprocess.DEVNULL, close_fds=True, process_group=0)
        except OSError as exc:
            ours.close()
            raise RuntimeFailure(f"cannot start the fork server: {exc}", op="spawn", path=sys.executable,
                                 errno=exc.errno or 0) from exc
        finally:
            theirs.close()
            if exe >= 0:
                os.close(exe)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def request(self, req: dict[str, Any], fds: Sequence[int] = ()) -> dict[str, Any]:
        with self.exchange(req, fds) as talk:
            return talk.receive()

    @contextlib.contextmanager
    def exchange(self, req: dict[str, Any], fds: Sequence[int] = (), *,
                 go: bool = False) -> Iterator[Exchange]:
        """Send ``req`` and let the caller work while the server does; the reply is read by
        ``receive()``. With ``go`` (a create) the request gets a "go" pipe (its read end sent last,
        ``"go": true`` in the JSON): the caller says ``go(True)`` once the container's cgroup is
        made, ``go(False)`` to give it up. Whatever happens once the request is sent (an exception,
        even a KeyboardInterrupt), the create is given up and the reply is still read, so the next
        request never gets this one's and no monitor waits for a word that never comes."""
        with self._lock:
            talk: Exchange | None = None
            go_r = go_w = -1
            try:
                if go:
                    go_r, go_w = os.pipe2(os.O_CLOEXEC)
                    fds, req = [*fds, go_r], {**req, "go": True}
                talk = Exchange(self._sock, go_w)
                go_w = -1                   # the Exchange's to close now
                try:
                    socket.send_fds(self._sock, [json.dumps(req).encode()], list(fds))
                except OSError as exc:
                    talk.reply = {}         # nothing sent: nothing to read
                    talk.go(False)
                    raise RuntimeFailure(f"fork server unreachable: {exc}", op="forkserver",
                                         errno=exc.errno or 0) from exc
                yield talk
            finally:
                for fd in (go_r, go_w):
                    if fd >= 0:
                        os.close(fd)        # the server has its own copy of the read end
                if talk is not None and talk.reply is None:
                    talk.go(False)
                    with contextlib.suppress(RuntimeFailure):
                        talk.receive()

    def close(self) -> None:
        self._sock.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
