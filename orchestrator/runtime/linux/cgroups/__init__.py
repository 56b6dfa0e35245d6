"""cgroup drivers: resource limits and accounting for containers, on cgroup v1, v2 and hybrid hosts.

``open_driver(root)`` detects the layout (statfs of ``root`` and ``root/unified``) and returns a
``CgroupDriver`` (``driver_for(root)``: the same, detected once per process); ``driver.create(path,
resources)`` makes a ``Cgroup`` from an OCI ``linux.resources`` dict, and the ``Cgroup`` adds pids,
updates limits in place, reads ``CgroupStats``, kills and removes itself. The runtime
(``orchestrator.runtime.linux``) is the only caller.

Modules: ``compute`` (pure resources -> file writes; ``convert`` holds the v1->v2 conversions),
``detect`` (layout and /proc/self/cgroup), ``base`` (interface and shared behaviour), ``v1`` (v1 and
hybrid), ``v2``, ``devices_bpf`` (v2 device allowlist as an eBPF program), ``fsio`` (file I/O and error
translation).

Paths are relative to each hierarchy's root ("orchestrator/c1"); the same path is used in every v1
hierarchy. ``driver.open`` raises ``ContainerNotFound`` for a cgroup that does not exist.
"""

from __future__ import annotations

from pathlib import Path

from .base import Cgroup, CgroupDriver, CgroupStats
from .compute import Computed, V1Features, V2Features, Write, compute_v1, compute_v2
from .convert import blkio_weight_to_io_weight, shares_to_weight, swap_to_v2
from .detect import StatfsType, detect_kind, statfs_type
from .v1 import V1Driver
from .v2 import V2Driver

__all__ = [
    "Cgroup",
    "CgroupDriver",
    "CgroupStats",
    "Computed",
    "V1Features",
    "V2Features",
    "Write",
    "blkio_weight_to_io_weight",
    "compute_v1",
    "compute_v2",
    "detect_kind",
    "driver_for",
    "open_driver",
    "shares_to_weight",
    "statfs_type",
    "swap_to_v2",
]


def open_driver(cgroup_root: Path = Path("/sys/fs/cgroup"), *, statfs: StatfsType = statfs_type,
                proc_self_cgroup: Path = Path("/proc/self/cgroup")) -> CgroupDriver:
    """The driver for the layout mounted at ``cgroup_root``. ``statfs`` and ``proc_self_cgroup`` are
    injectable so unit tests can describe any host with a temp directory tree."""
    kind = detect_kind(cgroup_root, statfs)
    if kind == "v2":
        return V2Driver(cgroup_root, proc_self_cgroup)
    return V1Driver(cgroup_root, proc_self_cgroup, hybrid=(kind == "hybrid"))


_DRIVERS: dict[Path, CgroupDriver] = {}


def driver_for(cgroup_root: Path = Path("/sys/fs/cgroup")) -> CgroupDriver:
    """``open_driver`` once per root and process. The fork server calls it before forking, so the
    children that join or read a container's cgroup (exec helpers, the Python supervisor) inherit the
    detected layout and each hierarchy's resolved path (~0.7 ms per child otherwise)."""
    driver = _DRIVERS.get(cgroup_root)
    if driver is None:
        driver = _DRIVERS[cgroup_root] = open_driver(cgroup_root)
    return driver
