"""Protocols and value types shared by every runtime backend.

The reconciler (``orchestrator.reconcile``) talks only to these protocols; ``runtime.linux`` (native),
``runtime.runc`` (Debian's runc, for differential tests) and ``runtime.fake`` (pure unit tests) implement
them. The runtime's input is an OCI runtime-spec bundle (``config.json``) plus the root filesystem as a
list of mounts to perform (containerd's snapshotter style: the caller describes mounts, the runtime mounts
them inside the container's own mount namespace so the host mount table never changes).
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class Status(enum.StrEnum):
    """OCI runtime-spec states, plus ``unknown`` for a container whose process we cannot verify."""

    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Mount:
    """One mount to perform, as data (type, source, options). ``target`` is relative to the rootfs
    when used for the root filesystem list ("" = the rootfs itself)."""

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()
    # directory to chdir into before mounting, so relative paths in options (overlay lowerdir=l/ab:l/cd)
    # resolve; keeps long layer lists under the kernel's one-page limit on mount data
    cwd: str = ""


@dataclass(frozen=True)
class ContainerState:
    """What the runtime knows of one container, re-read from its state dir and /proc on every call."""

    id: str
    status: Status
    bundle: str
    pid: int = 0
    pid_start_time: int = 0          # field 22 of /proc/PID/stat; guards against pid reuse
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int | None = None
    exit_signal: int | None = None
    oom_killed: bool = False
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LogLine:
    time: float
    stream: str                      # "stdout" | "stderr"
    text: str


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""


class Runtime(Protocol):
    """Lifecycle of OCI containers. Every method names the container by id; ``delete`` is idempotent."""

    name: str

    def create(self, container_id: str, bundle: Path, rootfs: Sequence[Mount] = ()) -> ContainerState:
        """Set the container up (namespaces, mounts, cgroups) with its init waiting to exec the
        process; ``rootfs`` mounts are made in the container's mount namespace onto ``root.path``."""
        ...

    def start(self, container_id: str) -> None: ...

    def state(self, container_id: str) -> ContainerState:
        """Raises ContainerNotFound for an unknown id."""
        ...

    def list(self) -> list[ContainerState]: ...

    def kill(self, container_id: str, sig: int = signal.SIGTERM) -> None: ...

    def delete(self, container_id: str, *, force: bool = False) -> None:
        """Remove everything the container had (processes when forced, mounts, cgroups, state).
        Deleting a container that does not exist is not an error."""
        ...

    def wait(self, container_id: str, timeout: float | None = None) -> ContainerState: ...

    def exec(self, container_id: str, argv: Sequence[str], *, env: Sequence[str] = (),
             cwd: str | None = None, tty: bool = False, capture: bool = True,
             timeout: float | None = None, stdin: bool = False) -> ExecResult:
        """Run ``argv`` in the running container. With ``timeout`` (seconds) a process still running
        then is killed and ``ExecTimeout`` raised; ``None`` waits for as long as it runs. ``capture``:
        its output comes back in the result, else it goes to our own stdout/stderr as it is written.
        ``stdin``: it reads our stdin (``exec -i``), else /dev/null."""
        ...

    def logs(self, container_id: str, *, since: float = 0.0, follow: bool = False) -> Iterator[LogLine]: ...
