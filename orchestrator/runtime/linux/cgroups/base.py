"""The cgroup driver interface shared by the v1, v2 and hybrid implementations, and the logic they share.

``CgroupDriver`` (made by ``open_driver`` in ``__init__``) creates and opens ``Cgroup`` objects; a
``Cgroup`` writes limits, adds pids, reads accounting (``CgroupStats``), kills and removes itself. The
subclasses in ``v1.py`` (v1 and hybrid) and ``v2.py`` say where each file lives and how to freeze;
``apply_writes``, ``kill_all`` and ``destroy`` here are the same for all of them.
"""

from __future__ import annotations

import abc
import contextlib
import errno as errnos
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import logs
from orchestrator.errors import ContainerNotFound, RuntimeFailure, TransientRuntimeError

from . import fsio
from .compute import Computed, Write
from .convert import DeviceRule

log = logs.get(__name__)

Resources = Mapping[str, Any]


@dataclass(frozen=True)
class CgroupStats:
    """One reading of a cgroup's accounting files. Limits are None when unlimited."""

    cpu_usage_ns: int = 0
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    memory_usage_bytes: int = 0
    memory_limit_bytes: int | None = None
    memory_max_usage_bytes: int = 0          # v1 max_usage_in_bytes, v2 memory.peak (0 if absent)
    memory_cache_bytes: int = 0              # v1 memory.stat cache, v2 memory.stat file
    memory_rss_bytes: int = 0                # v1 memory.stat rss, v2 memory.stat anon
    pids_current: int = 0
    pids_limit: int | None = None
    blkio_read_bytes: int = 0
    blkio_write_bytes: int = 0
    blkio_read_ops: int = 0
    blkio_write_ops: int = 0
    oom_kill_count: int = 0


class Cgroup(abc.ABC):
    """One cgroup (in every hierarchy it lives in). ``path`` is relative to the hierarchy root."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    # -- where things are -------------------------------------------------------------------------
    @abc.abstractmethod
    def dirs(self) -> list[Path]:
        """Every directory of this cgroup, one per hierarchy (v1) or one (v2)."""

    @abc.abstractmethod
    def file(self, controller: str, name: str) -> Path:
        """The interface file ``name`` of ``controller`` ("" on v2) for this cgroup."""

    @abc.abstractmethod
    def compute(self, resources: Resources, *, always_pids: bool) -> Computed:
        """Probe the host features that matter and map ``resources`` to writes (pure part inside)."""

    def stats(self) -> CgroupStats:
        """Read the accounting files now; ``ContainerNotFound`` once the cgroup is gone (rather than
        a reading of zeros that would look like an idle container)."""
        if not self.exists():
            raise ContainerNotFound(f"cgroup {self.path!r} does not exist", op="cgroup stats",
                                    path=self.path)
        return self._stats()

    @abc.abstractmethod
    def _stats(self) -> CgroupStats:
        """Read every accounting file (missing controllers read as zero)."""

    @abc.abstractmethod
    def oom_killed(self) -> bool:
        """True once the kernel OOM killer has killed a process of this cgroup."""

    @abc.abstractmethod
    def _freeze(self, frozen: bool) -> bool:
        """Freeze or thaw every process; False when this host has no freezer for the cgroup."""

    def _kill_file(self) -> Path | None:
        """``cgroup.kill`` (v2, Linux >= 5.14) when present: kills the whole cgroup atomically."""
        return None

    # -- shared behaviour --------------------------------------------------------------------------
    def exists(self) -> bool:
        return any(d.is_dir() for d in self.dirs())

    def update(self, resources: Resources) -> None:
        """Change limits in place (a running container keeps running). Only keys present change."""
        self.apply_writes(self.compute(resources, always_pids=False))

    def apply_writes(self, computed: Computed) -> None:
        for item in computed.unenforced:
            log.warning("cgroup limit not enforced", cgroup=self.path, limit=item)
        retry: list[Write] = []
        for w in computed.writes:
            try:
                fsio.write(self.file(w.controller, w.file), w.value)
            except RuntimeFailure as exc:
                if w.retry_einval and exc.errno == errnos.EINVAL:
                    retry.append(w)
                    continue
                raise
        for w in retry:
            fsio.write(self.file(w.controller, w.file), w.value)
        if computed.devices is not None:
            self._apply_devices(computed.devices)

    def _apply_devices(self, rules: list[DeviceRule]) -> None:
        """Install a device allowlist that is not expressed as file writes (v2's eBPF filter)."""
        raise RuntimeFailure(f"{type(self).__name__} cannot apply device rules this way",
                             op="cgroup devices", path=self.path)

    def add_pid(self, pid: int) -> None:
        """Move ``pid`` (the whole process) into this cgroup in every hierarchy."""
        for d in self.dirs():
            fsio.write(d / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        """Every process in the cgroup (union over hierarchies, sorted)."""
        found: set[int] = set()
        for d in self.dirs():
            found.update(fsio.procs(d))
        return sorted(found)

    def kill_all(self, timeout_s: float = 5.0) -> None:
        """SIGKILL every process and wait until the cgroup is empty. With ``cgroup.kill`` the kernel
        does it atomically; otherwise freeze first so nothing can fork between listing and killing
        (a fork bomb would otherwise outrun us), kill each pid, then thaw so the kills are delivered."""
        deadline = time.monotonic() + timeout_s
        kill_file = self._kill_file()
        if kill_file is not None:
            fsio.write(kill_file, "1")
        else:
            frozen = self._freeze(True)
            try:
                for pid in self.pids():
                    _sigkill(pid)
            finally:
                if frozen:
                    self._freeze(False)
        while True:
            left = self.pids()
            if not left:
                return
            if time.monotonic() > deadline:
                raise TransientRuntimeError(f"cgroup {self.path} still has processes {left[:10]} "
                                            f"after SIGKILL", op="cgroup kill", path=self.path)
            for pid in left:       # late forks (no freezer) or pids that raced in
                _sigkill(pid)
            time.sleep(0.01)

    def destroy(self) -> None:
        """Remove the cgroup from every hierarchy. Idempotent; EBUSY is retried briefly (tasks that
        are still exiting), and a cgroup that still has processes or children is a TransientRuntimeError."""
        first: RuntimeFailure | None = None
        for d in self.dirs():
            try:
                fsio.rmdir(d)
            except RuntimeFailure as exc:
                first = first or exc
        if first is not None:
            raise first


def _sigkill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class CgroupDriver(abc.ABC):
    """Creates and opens cgroups under ``root`` (the cgroupfs mount, a parameter so tests can use a
    temp tree). ``kind`` is "v1", "v2" or "hybrid"."""

    kind: str

    def __init__(self, root: Path, proc_self_cgroup: Path = Path("/proc/self/cgroup")) -> None:
        self.root = root
        self.proc_self_cgroup = proc_self_cgroup

    @abc.abstractmethod
    def default_parent(self) -> str:
        """The calling process's own cgroup + "/orchestrator", relative to the hierarchy root."""

    @abc.abstractmethod
    def cgroup(self, path: str) -> Cgroup:
        """A handle on ``path`` whether or not it exists (no I/O)."""

    @abc.abstractmethod
    def _make_dirs(self, cg: Cgroup, created: list[Path]) -> None:
        """Create the cgroup's directories (and missing parents), appending each one made to
        ``created`` as soon as it exists so a failure half-way can still be undone."""

    def create(self, path: str, resources: Resources) -> Cgroup:
        """Create ``path`` (parents as needed) and apply ``resources``; on failure, remove what this
        call created so nothing is left half-made. An existing cgroup is reused and updated."""
        cg = self.cgroup(path)
        created: list[Path] = []
        try:
            self._make_dirs(cg, created)
            cg.apply_writes(cg.compute(resources, always_pids=True))
        except BaseException:
            for d in reversed(created):
                with contextlib.suppress(RuntimeFailure):
                    fsio.rmdir(d, attempts=1)
            raise
        return cg

    def open(self, path: str) -> Cgroup:
        """An existing cgroup; raises ``ContainerNotFound`` (op="cgroup open") when it is absent."""
        cg = self.cgroup(path)
        if not cg.exists():
            raise ContainerNotFound(f"cgroup {cg.path!r} does not exist", op="cgroup open",
                                    path=cg.path)
        return cg
