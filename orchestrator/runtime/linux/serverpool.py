"""A pool of fork servers for ``LinuxRuntime``: started on demand, one per concurrent caller.

One server handles one request at a time and waits for each container's set-up report, so the
executor's parallel creates would queue behind each other; the pool starts another server only when
every started one is busy, up to a size (the CPU count, capped). Neighbours: ``forkclient`` (one
server and its client), ``native`` (the only user).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from orchestrator.runtime.linux.forkclient import ForkServer


class ServerPool:
    """Fork servers, each started on first need: one while callers take turns, up to ``size`` when
    they run at once (the executor creates independent containers from a thread pool, and a single
    server would serialise their set-ups). A no-op apply or a ``ps`` never starts one: each is a second
    interpreter (~0.3 s of CPU). Popen is fork+exec, so starting one with threads running is safe."""

    def __init__(self, size: int, c_spare: tuple[str, str] | None = None) -> None:
        self._size = size
        self.c_spare = c_spare           # orch-spare's and orch-init's paths (None: Python spares)
        self._cond = threading.Condition()
        self._idle: list[ForkServer] = []
        self._all: list[ForkServer] = []
        self._starting = 0

    @contextlib.contextmanager
    def get(self) -> Iterator[ForkServer]:
        server: ForkServer | None = None
        with self._cond:
            while not self._idle and len(self._all) + self._starting >= self._size:
                self._cond.wait()
            if self._idle:
                server = self._idle.pop()
            else:
                self._starting += 1
        if server is None:
            try:
                server = ForkServer(self.c_spare)
            finally:
                with self._cond:
                    self._starting -= 1
                    if server is not None:
                        self._all.append(server)
                    self._cond.notify()
        try:
            yield server
        finally:
            with self._cond:
                self._idle.append(server)
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            servers, self._all, self._idle = self._all, [], []
        for server in servers:
            server.close()
