"""cgroup v1 driver, and the hybrid variant (v1 controllers plus the controller-less v2 tree at
``<root>/unified``, as systemd sets up on older distributions and on this project's test hosts).

A v1 cgroup is one directory per controller hierarchy (``<root>/memory/<path>``, ``<root>/pids/<path>``,
...; co-mounted hierarchies such as ``cpu,cpuacct`` are one directory). In hybrid mode the cgroup also
gets a directory in ``unified`` so that systemd-style tracking sees it and ``cgroup.kill`` can kill it
atomically. Mapping of limits: ``compute.compute_v1``; shared behaviour: ``base.py``.
"""

from __future__ import annotations

import errno
import functools
import os
import threading
import time
from pathlib import Path

from orchestrator.errors import RuntimeFailure

from . import fsio
from .base import Cgroup, CgroupDriver, CgroupStats, Resources
from .compute import Computed, V1Features, compute_v1
from .detect import cgroup_path, join_parent, read_proc_cgroup

CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")
# v1 shows "no limit" as PAGE_COUNTER_MAX pages in bytes (just under 2**63); anything this big is "none"
UNLIMITED_FLOOR = 1 << 62
_NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def hierarchies(root: Path) -> dict[str, Path]:
    """Mounted v1 controller hierarchies under ``root``: {controller: hierarchy root}."""
    out: dict[str, Path] = {}
    for name in CONTROLLERS:
        base = root / name
        if (base / "cgroup.procs").exists():
            out[name] = base
    return out


@functools.cache
def distinct_bases(bases: tuple[Path, ...]) -> tuple[tuple[Path, Path], ...]:
    """(hierarchy root, its real path), once per mounted hierarchy: cpu and cpuacct may be symlinks to
    one "cpu,cpuacct" mount. Resolved once per process (a container create used to resolve every
    hierarchy path twice: ~100 lstat calls)."""
    seen: set[Path] = set()
    out = []
    for base in bases:
        real = base.resolve()
        if real not in seen:
            seen.add(real)
            out.append((base, real))
    return tuple(out)


class V1Cgroup(Cgroup):
    def __init__(self, path: str, hier: dict[str, Path], unified: Path | None) -> None:
        super().__init__(path)
        self.hier = hier
        self.unified = unified

    def dirs(self) -> list[Path]:
        out = [base / self.path for base, _real in distinct_bases(tuple(self.hier.values()))]
        if self.unified is not None:
            out.append(self.unified / self.path)
        return out

    def file(self, controller: str, name: str) -> Path:
        base = self.hier.get(controller)
        if base is None:
            raise RuntimeFailure(f"cgroup v1 controller {controller!r} is not mounted (needed for {name})",
                                 op="cgroup write", path=f"{controller}/{self.path}/{name}")
        return base / self.path / name

    def _optional(self, controller: str, name: str) -> Path | None:
        base = self.hier.get(controller)
        return None if base is None else base / self.path / name

    def _exists(self, controller: str, name: str) -> bool:
        p = self._optional(controller, name)
        return p is not None and p.exists()

    def compute(self, resources: Resources, *, always_pids: bool) -> Computed:
        weight_file = next((f for f in ("blkio.weight", "blkio.bfq.weight") if self._exists("blkio", f)),
                           None)
        limit_file = self._optional("memory", "memory.limit_in_bytes")
        current = fsio.read_int(limit_file, 2**63 - 1) if limit_file else 2**63 - 1
        features = V1Features(memsw=self._exists("memory", "memory.memsw.limit_in_bytes"),
                              blkio_weight_file=weight_file, current_memory_limit=current)
        return compute_v1(resources, features, always_pids=always_pids and "pids" in self.hier)

    def _read(self, controller: str, name: str) -> str | None:
        p = self._optional(controller, name)
        return None if p is None else fsio.read_optional(p)

    def _int(self, controller: str, name: str) -> int:
        p = self._optional(controller, name)
        return 0 if p is None else fsio.read_int(p)

    def _limit(self, controller: str, name: str) -> int | None:
        text = self._read(controller, name)
        if text is None or text.strip() in ("", "max"):
            return None
        value = int(text.split()[0])
        return None if value >= UNLIMITED_FLOOR or value < 0 else value

    def _stats(self) -> CgroupStats:
        if self._exists("cpuacct", "cpuacct.usage_user"):
            user = self._int("cpuacct", "cpuacct.usage_user")
            system = self._int("cpuacct", "cpuacct.usage_sys")
        else:   # older kernels: cpuacct.stat in USER_HZ ticks
            ticks = fsio.flat_keyed(self._read("cpuacct", "cpuacct.stat"))
            user, system = ticks.get("user", 0) * _NS_PER_TICK, ticks.get("system", 0) * _NS_PER_TICK
        mem = fsio.flat_keyed(self._read("memory", "memory.stat"))
        io_bytes = _blkio_totals(self._read("blkio", "blkio.throttle.io_service_bytes_recursive")
                                 or self._read("blkio", "blkio.throttle.io_service_bytes"))
        io_ops = _blkio_totals(self._read("blkio", "blkio.throttle.io_serviced_recursive")
                               or self._read("blkio", "blkio.throttle.io_serviced"))
        return CgroupStats(
            cpu_usage_ns=self._int("cpuacct", "cpuacct.usage"),
            cpu_user_ns=user,
            cpu_system_ns=system,
            memory_usage_bytes=self._int("memory", "memory.usage_in_bytes"),
            memory_limit_bytes=self._limit("memory", "memory.limit_in_bytes"),
            memory_max_usage_bytes=self._int("memory", "memory.max_usage_in_bytes"),
            # total_* include child cgroups (use_hierarchy is always on in current kernels)
            memory_cache_bytes=mem.get("total_cache", mem.get("cache", 0)),
            memory_rss_bytes=mem.get("total_rss", mem.get("rss", 0)),
            pids_current=self._int("pids", "pids.current"),
            pids_limit=self._limit("pids", "pids.max"),
            blkio_read_bytes=io_bytes.get("Read", 0),
            blkio_write_bytes=io_bytes.get("Write", 0),
            blkio_read_ops=io_ops.get("Read", 0),
            blkio_write_ops=io_ops.get("Write", 0),
            oom_kill_count=self._oom_kills(),
        )

    def _oom_kills(self) -> int:
        return fsio.flat_keyed(self._read("memory", "memory.oom_control")).get("oom_kill", 0)

    def oom_killed(self) -> bool:
        return self._oom_kills() > 0

    def _kill_file(self) -> Path | None:
        if self.unified is None:
            return None
        kill = self.unified / self.path / "cgroup.kill"
        return kill if kill.exists() else None

    def _freeze(self, frozen: bool) -> bool:
        state = self._optional("freezer", "freezer.state")
        if state is None or not state.exists():
            return False
        fsio.write(state, "FROZEN" if frozen else "THAWED")
        if frozen:
            # FREEZING -> FROZEN once every task has stopped; a task in an uninterruptible sleep can
            # hold it in FREEZING, so wait a bounded time and then proceed anyway
            deadline = time.monotonic() + 1.0
            while fsio.read(state).strip() != "FROZEN" and time.monotonic() < deadline:
                time.sleep(0.005)
        return True


def _blkio_totals(text: str | None) -> dict[str, int]:
    """Sum ``MAJ:MIN Op value`` lines of blkio.throttle.io_service_* over devices, per op."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            out[parts[1]] = out.get(parts[1], 0) + int(parts[2])
    return out


class V1Driver(CgroupDriver):
    """cgroup v1; ``hybrid=True`` also manages the matching directory in ``<root>/unified``."""

    def __init__(self, root: Path, proc_self_cgroup: Path = Path("/proc/self/cgroup"),
                 *, hybrid: bool = False) -> None:
        super().__init__(root, proc_self_cgroup)
        self.kind = "hybrid" if hybrid else "v1"
        self.hier = hierarchies(root)
        if not self.hier:
            raise RuntimeFailure(f"no cgroup v1 controller hierarchies under {root}", op="cgroup detect",
                                 path=str(root))
        self.unified = root / "unified" if hybrid else None
        self._cpusets_ready: set[str] = set()      # existing cpuset levels already given cpus and mems
        self._parents_seen: set[str] = set()       # parent levels known to exist (one mkdir saved each)
        self._lock = threading.Lock()

    def cgroup(self, path: str) -> V1Cgroup:
        return V1Cgroup(cgroup_path(path), self.hier, self.unified)

    def default_parent(self) -> str:
        """On v1 each hierarchy has its own membership. When they agree (a systemd service: all show
        the unit's cgroup) that path is used; when they differ the name=systemd one (which follows the
        service unit), then the unified one, then memory's is used: one path for all hierarchies keeps
        a container's directories identical across them."""
        own = read_proc_cgroup(self.proc_self_cgroup)
        paths = {own[c] for c in self.hier if c in own}
        if len(paths) == 1:
            return join_parent(paths.pop())
        for key in ("name=systemd", "", "memory"):
            if key in own:
                return join_parent(own[key])
        return join_parent("/")

    def _make_dirs(self, cg: Cgroup, created: list[Path]) -> None:
        # one at a time: creates run in parallel threads, and a parent is recorded as known only once
        # its cpuset is initialised (another thread would skip it and copy an empty one)
        with self._lock:
            try:
                self._make_dirs_once(cg, created)
            except RuntimeFailure as exc:
                if exc.errno != errno.ENOENT or not self._parents_seen:
                    raise
                self._parents_seen.clear()          # a parent we knew was removed since: make it again
                self._cpusets_ready.clear()
                self._make_dirs_once(cg, created)

    def _make_dirs_once(self, cg: Cgroup, created: list[Path]) -> None:
        parts = cg.path.split("/")
        cpuset = self.hier.get("cpuset")
        cpuset_real = distinct_bases((cpuset,))[0][1] if cpuset is not None else None
        bases = [(base, real == cpuset_real) for base, real in distinct_bases(tuple(self.hier.values()))]
        if self.unified is not None:
            bases.append((self.unified, False))
        for base, is_cpuset in bases:
            # plain strings: this loop runs for every hierarchy and level of every create, and pathlib
            # objects cost ~0.15 ms of a ~0.7 ms create
            current = str(base)
            for i, part in enumerate(parts):
                parent, current = current, f"{current}/{part}"
                if i < len(parts) - 1 and current in self._parents_seen:
                    continue        # a parent made or found before (a gone one fails the leaf: below)
                made = fsio.mkdir(current)
                if i < len(parts) - 1:
                    self._parents_seen.add(current)
                if made:
                    created.append(Path(current))
                if is_cpuset and (made or current not in self._cpusets_ready):
                    # existing levels too (once per driver): a parent made by someone else may be empty
                    _init_cpuset(current, parent)
                    if not made:
                        self._cpusets_ready.add(current)


def _init_cpuset(d: Path | str, parent: Path | str | None = None) -> None:
    """A new v1 cpuset cgroup starts with empty cpus and mems and refuses tasks until both are set;
    copy them from the parent (top-down, as each level is created) like runc's cpusetEnsureParent."""
    parent = os.path.dirname(d) if parent is None else parent
    for name in ("cpuset.cpus", "cpuset.mems"):
        mine = f"{d}/{name}"
        inherited = fsio.read(f"{parent}/{name}").strip()
        if inherited and not fsio.read(mine).strip():
            fsio.write(mine, inherited)
