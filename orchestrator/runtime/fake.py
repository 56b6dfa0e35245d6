"""An in-memory ``Runtime`` that records every call: the test double for the pure core's unit tests.

It behaves like a strict OCI runtime (create -> created; start only from created; delete of a running
container needs ``force``; delete of an unknown id is fine) so tests catch ordering bugs. Tests drive
drift with ``crash``/``vanish``/``set_health``. With ``path`` it persists its containers as JSON after
every change, so a forked child killed with ``os._exit`` mid-apply leaves state the next apply (in the
test process) observes: the crash-injection tests need exactly that. Never used outside tests.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from orchestrator.errors import ContainerNotFound, RuntimeFailure
from orchestrator.fsutil import write_atomic
from orchestrator.runtime.base import ContainerState, ExecResult, LogLine, Mount, Status

ExecHandler = Callable[[str, Sequence[str]], ExecResult]
_HANDLED = frozenset({signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH})


class FakeRuntime:
    name = "fake"

    def __init__(self, path: Path | None = None, *, exec_handler: ExecHandler | None = None) -> None:
        self.path = path
        self.calls: list[tuple[str, str]] = []
        self.exec_handler = exec_handler
        self.resources: dict[str, Mapping[str, Any]] = {}
        self.files: dict[str, dict[str, bytes]] = {}          # container -> target -> content
        self.fail_on: dict[tuple[str, str], Exception] = {}   # (op, id prefix) -> error to raise
        # called after a start: an int makes the process exit at once with that code
        self.start_hook: Callable[[str], int | None] | None = None
        self.logs_by_id: dict[str, list[LogLine]] = {}
        self._lock = threading.Lock()
        self._next_pid = 1000
        self.containers: dict[str, ContainerState] = {}
        if path is not None and path.exists():
            for d in json.loads(path.read_text()):
                d["status"] = Status(d["status"])
                self.containers[d["id"]] = ContainerState(**d)

    # -- helpers for tests --------------------------------------------------------------------------

    def _save(self) -> None:
        if self.path is None:
            return
        write_atomic(self.path, json.dumps([asdict(c) for c in self.containers.values()]).encode())

    def _record(self, op: str, cid: str) -> None:
        self.calls.append((op, cid))
        for (fop, prefix), exc in self.fail_on.items():
            if fop == op and cid.startswith(prefix):
                raise exc

    def crash(self, cid: str, exit_code: int = 1, *, oom: bool = False, sig: int | None = None) -> None:
        with self._lock:
            c = self.containers[cid]
            self.containers[cid] = replace(c, status=Status.STOPPED, pid=0, exit_code=exit_code,
                                           exit_signal=sig, oom_killed=oom, finished_at=time.time())
            self._save()

    def vanish(self, cid: str) -> None:
        with self._lock:
            del self.containers[cid]
            self._save()

    def ops(self, *names: str) -> list[tuple[str, str]]:
        return [c for c in self.calls if not names or c[0] in names]

    # -- the Runtime protocol -------------------------------------------------------------------------

    def create(self, container_id: str, bundle: Path, rootfs: Sequence[Mount] = (), *,
               files: Sequence[Any] = ()) -> ContainerState:
        with self._lock:
            self._record("create", container_id)
            self.files[container_id] = {f.target: f.data() for f in files}
            if container_id in self.containers:
                raise RuntimeFailure(f"container {container_id} already exists", op="create")
            st = ContainerState(container_id, Status.CREATED, str(bundle), created_at=time.time())
            self.containers[container_id] = st
            self._save()
            return st

    def start(self, container_id: str) -> None:
        with self._lock:
            self._record("start", container_id)
            c = self._get(container_id)
            if c.status != Status.CREATED:
                raise RuntimeFailure(f"container {container_id} is {c.status}, not created", op="start")
            self._next_pid += 1
            self.containers[container_id] = replace(c, status=Status.RUNNING, pid=self._next_pid,
                                                    pid_start_time=self._next_pid, started_at=time.time())
            code = self.start_hook(container_id) if self.start_hook is not None else None
            if code is not None:
                self.containers[container_id] = replace(self.containers[container_id], status=Status.STOPPED,
                                                        pid=0, exit_code=code, finished_at=time.time())
                self.logs_by_id[container_id] = [LogLine(time.time(), "stderr", f"exiting with {code}")]
            self._save()

    def state(self, container_id: str) -> ContainerState:
        with self._lock:
            return self._get(container_id)

    def _get(self, container_id: str) -> ContainerState:
        try:
            return self.containers[container_id]
        except KeyError:
            raise ContainerNotFound(f"container {container_id} not found", op="state") from None

    def list(self) -> list[ContainerState]:
        with self._lock:
            return list(self.containers.values())

    def kill(self, container_id: str, sig: int = signal.SIGTERM) -> None:
        with self._lock:
            self._record("kill", container_id)
            c = self._get(container_id)
            # the fake's process handles the usual "reload" signals and dies of every other one
            if c.status == Status.RUNNING and sig not in _HANDLED:
                self.containers[container_id] = replace(c, status=Status.STOPPED, pid=0, exit_signal=sig,
                                                        exit_code=128 + sig, finished_at=time.time())
                self._save()

    def delete(self, container_id: str, *, force: bool = False) -> None:
        with self._lock:
            self._record("delete", container_id)
            c = self.containers.get(container_id)
            if c is None:
                return
            if c.status == Status.RUNNING and not force:
                raise RuntimeFailure(f"container {container_id} is running", op="delete")
            del self.containers[container_id]
            self._save()

    def wait(self, container_id: str, timeout: float | None = None) -> ContainerState:
        return self.state(container_id)

    def exec(self, container_id: str, argv: Sequence[str], *, env: Sequence[str] = (),
             cwd: str | None = None, tty: bool = False, capture: bool = True,
             timeout: float | None = None, stdin: bool = False) -> ExecResult:
        with self._lock:
            self._record("exec", container_id)
            if self._get(container_id).status != Status.RUNNING:
                raise RuntimeFailure(f"container {container_id} is not running", op="exec")
        if self.exec_handler is not None:
            return self.exec_handler(container_id, argv)
        return ExecResult(0, b"", b"")

    def logs(self, container_id: str, *, since: float = 0.0, follow: bool = False) -> Iterator[LogLine]:
        yield from (ln for ln in self.logs_by_id.get(container_id, []) if ln.time >= since)

    def update_files(self, container_id: str, files: Sequence[Any]) -> tuple[str, ...]:
        """Rewrite files in place; returns the targets whose content changed."""
        with self._lock:
            self._record("update_files", container_id)
            old = self.files.setdefault(container_id, {})
            changed = tuple(f.target for f in files if old.get(f.target) != f.data())
            old.update({f.target: f.data() for f in files})
            return changed

    def update(self, container_id: str, resources: Mapping[str, Any]) -> None:
        """Change cgroup limits in place (the native runtime's ``update``)."""
        with self._lock:
            self._record("update", container_id)
            if self._get(container_id).status not in (Status.RUNNING, Status.CREATED):
                raise RuntimeFailure(f"container {container_id} is not alive", op="update")
            self.resources[container_id] = dict(resources)
