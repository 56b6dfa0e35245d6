"""cgroup v2 (unified hierarchy) driver: one directory per cgroup, controllers enabled top-down.

v2 only lets a cgroup use a controller that its parent lists in ``cgroup.subtree_control``, so creating
``a/b/c`` enables cpu, cpuset, io, memory and pids in the root's, ``a``'s and ``b``'s subtree_control
first. The kernel's "no internal processes" rule makes that fail with EBUSY on a non-root cgroup that
holds processes: the orchestrator must then run in a delegated cgroup with its own processes in a leaf
(systemd ``Delegate=yes``), or be given a ``cgroup_parent`` elsewhere; the error says so.
Device allowlists become an eBPF program attached to the cgroup (``devices_bpf``).
Mapping of limits: ``compute.compute_v2``; shared behaviour: ``base.py``.
"""

from __future__ import annotations

import errno as errnos
import time
from pathlib import Path

from orchestrator.errors import RuntimeFailure

from . import devices_bpf, fsio
from .base import Cgroup, CgroupDriver, CgroupStats, Resources
from .compute import Computed, V2Features, compute_v2
from .convert import DeviceRule
from .detect import cgroup_path, join_parent, read_proc_cgroup

WANTED_CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids")


class V2Cgroup(Cgroup):
    def __init__(self, path: str, root: Path) -> None:
        super().__init__(path)
        self.root = root
        self.dir = root / path

    def dirs(self) -> list[Path]:
        return [self.dir]

    def file(self, controller: str, name: str) -> Path:
        return self.dir / name

    def compute(self, resources: Resources, *, always_pids: bool) -> Computed:
        io_weight = next((f for f in ("io.bfq.weight", "io.weight") if (self.dir / f).exists()), None)
        features = V2Features(swap=(self.dir / "memory.swap.max").exists(), io_weight_file=io_weight)
        has_pids = (self.dir / "pids.max").exists()
        return compute_v2(resources, features, always_pids=always_pids and has_pids)

    def _keyed(self, name: str) -> dict[str, int]:
        return fsio.flat_keyed(fsio.read_optional(self.dir / name))

    def _limit(self, name: str) -> int | None:
        text = fsio.read_optional(self.dir / name)
        if text is None or text.strip() in ("", "max"):
            return None
        return int(text.split()[0])

    def _stats(self) -> CgroupStats:
        cpu = self._keyed("cpu.stat")
        mem = self._keyed("memory.stat")
        io = _io_totals(fsio.read_optional(self.dir / "io.stat"))
        return CgroupStats(
            cpu_usage_ns=cpu.get("usage_usec", 0) * 1000,
            cpu_user_ns=cpu.get("user_usec", 0) * 1000,
            cpu_system_ns=cpu.get("system_usec", 0) * 1000,
            memory_usage_bytes=fsio.read_int(self.dir / "memory.current"),
            memory_limit_bytes=self._limit("memory.max"),
            memory_max_usage_bytes=fsio.read_int(self.dir / "memory.peak"),   # Linux >= 5.19
            memory_cache_bytes=mem.get("file", 0),
            memory_rss_bytes=mem.get("anon", 0),
            pids_current=fsio.read_int(self.dir / "pids.current"),
            pids_limit=self._limit("pids.max"),
            blkio_read_bytes=io.get("rbytes", 0),
            blkio_write_bytes=io.get("wbytes", 0),
            blkio_read_ops=io.get("rios", 0),
            blkio_write_ops=io.get("wios", 0),
            oom_kill_count=self._keyed("memory.events").get("oom_kill", 0),
        )

    def _apply_devices(self, rules: list[DeviceRule]) -> None:
        devices_bpf.attach(self.dir, rules)

    def oom_killed(self) -> bool:
        return self._keyed("memory.events").get("oom_kill", 0) > 0

    def _kill_file(self) -> Path | None:
        kill = self.dir / "cgroup.kill"
        return kill if kill.exists() else None

    def _freeze(self, frozen: bool) -> bool:
        freeze = self.dir / "cgroup.freeze"
        if not freeze.exists():
            return False
        fsio.write(freeze, "1" if frozen else "0")
        if frozen:
            deadline = time.monotonic() + 1.0
            while self._keyed("cgroup.events").get("frozen") != 1 and time.monotonic() < deadline:
                time.sleep(0.005)
        return True


def _io_totals(text: str | None) -> dict[str, int]:
    """Sum ``MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=..`` lines of io.stat over devices."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if value.isdigit():
                out[key] = out.get(key, 0) + int(value)
    return out


class V2Driver(CgroupDriver):
    kind = "v2"

    def cgroup(self, path: str) -> V2Cgroup:
        return V2Cgroup(cgroup_path(path), self.root)

    def default_parent(self) -> str:
        own = read_proc_cgroup(self.proc_self_cgroup)
        if "" not in own:
            raise RuntimeFailure("no cgroup v2 entry (0::) in /proc/self/cgroup", op="cgroup detect",
                                 path=str(self.proc_self_cgroup))
        return join_parent(own[""])

    def enable_controllers(self, d: Path) -> None:
        """Let ``d``'s children use every wanted controller that ``d`` itself has."""
        available = set((fsio.read_optional(d / "cgroup.controllers") or "").split())
        enabled = set((fsio.read_optional(d / "cgroup.subtree_control") or "").split())
        for name in WANTED_CONTROLLERS:
            if name not in available or name in enabled:
                continue
            try:
                fsio.write(d / "cgroup.subtree_control", f"+{name}")
            except RuntimeFailure as exc:
                if exc.errno == errnos.EBUSY:
                    raise RuntimeFailure(
                        f"cannot enable the {name} controller below {d}: it holds processes (cgroup v2 "
                        f"'no internal processes' rule); run the orchestrator in a delegated cgroup "
                        f"with its processes in a leaf, or set cgroup_parent",
                        op="cgroup enable controllers", path=str(d), errno=exc.errno) from exc
                raise

    def _make_dirs(self, cg: Cgroup, created: list[Path]) -> None:
        current = self.root
        for part in cg.path.split("/"):
            self.enable_controllers(current)
            current = current / part
            if fsio.mkdir(current):
                created.append(current)
