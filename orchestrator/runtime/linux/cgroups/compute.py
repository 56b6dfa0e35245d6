"""Pure mapping of OCI ``linux.resources`` to ordered cgroup file writes, for v1 and for v2.

``compute_v1`` and ``compute_v2`` take the resources dict plus the few facts about the host that change
the answer (``V1Features``/``V2Features``: which optional files exist, the current memory limit) and
return a list of ``Write``; ``v1.py``/``v2.py`` probe the features and perform the writes, in order.
Unit tests check this mapping without root (tests/unit/cgroups). Conversions live in ``convert.py``.

Only keys that are present (and non-zero, OCI's "unset") produce writes, so ``update()`` with a partial
dict changes just those limits; ``pids.max`` is the exception and is always written (``max`` when the
spec gives no positive limit) so a container never silently inherits an unrelated pids limit.
Not mapped: realtime cpu, ``blockIO.weightDevice``/``leafWeight``, hugepage and network limits. On v2
the device rules are returned as ``Computed.devices`` for ``devices_bpf`` to compile and attach.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import RuntimeFailure

from .convert import (
    THROTTLE_KEYS,
    DeviceRule,
    blkio_weight_to_io_weight,
    device_rules,
    get_int,
    get_str,
    max_or,
    section,
    shares_to_weight,
    swap_to_v2,
    throttles,
)


@dataclass(frozen=True)
class Write:
    """Write ``value`` to ``file`` in the ``controller`` hierarchy (v1; "" on v2's single tree)."""

    controller: str
    file: str
    value: str
    # the kernel may refuse this write until a later one is done (cpu period before quota): on EINVAL
    # retry it once after the rest, as runc does
    retry_einval: bool = False


@dataclass(frozen=True)
class V1Features:
    memsw: bool = True                          # memory.memsw.* exists (swap accounting on)
    blkio_weight_file: str | None = "blkio.weight"  # or "blkio.bfq.weight", or None (no weight knob)
    # memory.limit_in_bytes now; the kernel shows "unlimited" as a huge number, kept as such
    current_memory_limit: int = 2**63 - 1


@dataclass(frozen=True)
class V2Features:
    swap: bool = True                           # memory.swap.max exists
    io_weight_file: str | None = "io.weight"    # or "io.bfq.weight", or None


@dataclass
class Computed:
    writes: list[Write] = field(default_factory=list)
    unenforced: list[str] = field(default_factory=list)   # asked for, cannot be enforced here
    devices: list[DeviceRule] | None = None               # v2 only: rules for the eBPF device filter

    def add(self, controller: str, file: str, value: str, *, retry_einval: bool = False) -> None:
        self.writes.append(Write(controller, file, value, retry_einval))


def _cpu_quota_period(cpu: Mapping[str, Any]) -> tuple[int, int]:
    quota, period = get_int(cpu, "quota", "cpu"), get_int(cpu, "period", "cpu")
    if period < 0:
        raise RuntimeFailure(f"cpu.period must be positive, not {period}", op="cgroup compute",
                             path="cpu.period")
    return quota, period


def _pids_value(resources: Mapping[str, Any]) -> str:
    limit = get_int(section(resources, "pids"), "limit", "pids")
    return str(limit) if limit > 0 else "max"


def compute_v1(resources: Mapping[str, Any], features: V1Features = V1Features(),
               *, always_pids: bool = True) -> Computed:
    out = Computed()
    memory = section(resources, "memory")
    limit = get_int(memory, "limit", "memory")
    swap = get_int(memory, "swap", "memory")
    if limit == -1 and swap == 0 and features.memsw:
        swap = -1      # "unlimited memory" means unlimited memory+swap too (runc)
    if swap and not features.memsw:
        out.unenforced.append("memory.swap (no memory.memsw.* files: swap accounting is off)")
        swap = 0
    mem_writes = []
    if limit:
        mem_writes.append(("memory.limit_in_bytes", str(limit)))
    if swap:
        mem_writes.append(("memory.memsw.limit_in_bytes", str(swap)))
    # The kernel keeps memsw >= limit at every instant, so raising both must write memsw first and
    # lowering both must write the limit first.
    if limit and swap and (swap == -1 or features.current_memory_limit < swap):
        mem_writes.reverse()
    for file, value in mem_writes:
        out.add("memory", file, value)
    reservation = get_int(memory, "reservation", "memory")
    if reservation:
        out.add("memory", "memory.soft_limit_in_bytes", str(reservation))
    if memory.get("swappiness") is not None:
        out.add("memory", "memory.swappiness", str(get_int(memory, "swappiness", "memory")))
    if memory.get("disableOOMKiller"):
        out.add("memory", "memory.oom_control", "1")

    cpu = section(resources, "cpu")
    shares = get_int(cpu, "shares", "cpu")
    if shares:
        out.add("cpu", "cpu.shares", str(shares))
    quota, period = _cpu_quota_period(cpu)
    if period:
        out.add("cpu", "cpu.cfs_period_us", str(period), retry_einval=bool(quota))
    if quota:
        out.add("cpu", "cpu.cfs_quota_us", str(quota))
    for key in ("cpus", "mems"):
        if value := get_str(cpu, key, "cpu"):
            out.add("cpuset", f"cpuset.{key}", value)

    if always_pids or resources.get("pids"):
        out.add("pids", "pids.max", _pids_value(resources))

    block_io = section(resources, "blockIO")
    weight = get_int(block_io, "weight", "blockIO")
    if weight:
        if features.blkio_weight_file:
            out.add("blkio", features.blkio_weight_file, str(weight))
        else:
            out.unenforced.append("blockIO.weight (no blkio.weight or blkio.bfq.weight file)")
    for key, major, minor, rate in throttles(block_io):
        out.add("blkio", f"blkio.throttle.{THROTTLE_KEYS[key][0]}", f"{major}:{minor} {rate}")

    rules = device_rules(resources)
    if rules is not None:
        # allowlist: start from nothing allowed unless the spec's own first rule is an all-devices rule
        if not rules or rules[0].kind != "a":
            out.add("devices", "devices.deny", "a")
        for rule in rules:
            out.add("devices", "devices.allow" if rule.allow else "devices.deny", rule.v1_line())
    if _unified(resources):
        out.unenforced.append("unified (raw cgroup v2 files; this host's controllers are v1)")
    return out


def compute_v2(resources: Mapping[str, Any], features: V2Features = V2Features(),
               *, always_pids: bool = True) -> Computed:
    out = Computed()
    memory = section(resources, "memory")
    limit = get_int(memory, "limit", "memory")
    swap = swap_to_v2(get_int(memory, "swap", "memory"), limit)
    if swap and not features.swap:
        out.unenforced.append("memory.swap (no memory.swap.max file)")
        swap = 0
    # memory.swap.max and memory.max are independent on v2, so no ordering constraint here
    if limit:
        out.add("", "memory.max", max_or(limit))
    if swap:
        out.add("", "memory.swap.max", max_or(swap))
    reservation = get_int(memory, "reservation", "memory")
    if reservation:
        out.add("", "memory.low", max_or(reservation))
    if memory.get("disableOOMKiller"):
        out.unenforced.append("memory.disableOOMKiller (no v2 equivalent)")

    cpu = section(resources, "cpu")
    weight = shares_to_weight(get_int(cpu, "shares", "cpu"))
    if weight:
        out.add("", "cpu.weight", str(weight))
    quota, period = _cpu_quota_period(cpu)
    if quota or period:
        # runc's spelling: quota <= 0 is "max"; the period is kept by the kernel when omitted
        value = str(quota) if quota > 0 else "max"
        out.add("", "cpu.max", f"{value} {period}" if period else value)
    for key in ("cpus", "mems"):
        if value := get_str(cpu, key, "cpu"):
            out.add("", f"cpuset.{key}", value)

    if always_pids or resources.get("pids"):
        out.add("", "pids.max", _pids_value(resources))

    block_io = section(resources, "blockIO")
    blkio_weight = get_int(block_io, "weight", "blockIO")
    if blkio_weight:
        if features.io_weight_file == "io.bfq.weight":
            out.add("", "io.bfq.weight", str(blkio_weight))
        elif features.io_weight_file:
            out.add("", features.io_weight_file, str(blkio_weight_to_io_weight(blkio_weight)))
        else:
            out.unenforced.append("blockIO.weight (no io.weight or io.bfq.weight file)")
    per_device: dict[tuple[int, int], dict[str, int]] = {}
    for key, major, minor, rate in throttles(block_io):
        per_device.setdefault((major, minor), {})[THROTTLE_KEYS[key][1]] = rate
    for (major, minor), limits in per_device.items():
        # one line per device; a rate of 0 lifts that limit ("max"), matching v1 where 0 removes it
        fields = " ".join(f"{name}={rate if rate else 'max'}" for name, rate in limits.items())
        out.add("", "io.max", f"{major}:{minor} {fields}")

    # OCI "unified": raw v2 file -> value pairs, written last so they can refine anything above
    for key, value in _unified(resources).items():
        out.add("", key, value)

    # v2 has no device files: the rules become an eBPF program attached by the driver (devices_bpf)
    out.devices = device_rules(resources)
    return out


def _unified(resources: Mapping[str, Any]) -> dict[str, str]:
    raw = section(resources, "unified")
    for key, value in raw.items():
        # a plain interface file name ("memory.high"), never a path or a cgroup.* core file
        if not isinstance(value, str) or "/" in key or "." not in key or key.startswith("cgroup."):
            raise RuntimeFailure(f"unified.{key} is not a settable cgroup v2 file with a string value",
                                 op="cgroup compute", path=f"unified.{key}")
    return dict(raw)
