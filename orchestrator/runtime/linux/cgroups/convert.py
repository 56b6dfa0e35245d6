"""Pure conversions between OCI ``linux.resources`` values and cgroup v1/v2 file values.

Used by ``compute.py``; nothing here reads files. The v1 -> v2 conversions follow runc and crun so a
container gets the same kernel settings from us as from them:

* cpu shares -> ``cpu.weight``: the quadratic-in-log2 mapping of crun >= 1.23 and runc >= 1.3.2
  (``l = log2(shares); weight = ceil(10 ** ((l*l + 125*l) / 612 - 7/34))``). We use it rather than the
  older linear ``1 + ((shares - 2) * 9999) / 262142`` because it maps the two defaults onto each other
  (1024 shares -> weight 100) and keeps both ends (2 -> 1, 262144 -> 10000); the linear formula gives a
  default container weight 39, i.e. a 2.5x lower priority than an unconfigured cgroup next to it
  (runc#4772, crun#1721, kubernetes#131216).
* blkio weight (10..1000) -> ``io.weight`` (1..10000): ``1 + (w - 10) * 9999 / 990`` (runc); when
  ``io.bfq.weight`` exists it takes the v1 value unchanged (BFQ's range is 1..1000).
* memory swap: OCI ``swap`` is memory+swap (v1 ``memory.memsw``); v2 ``memory.swap.max`` is swap alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import RuntimeFailure

SHARES_MIN, SHARES_MAX = 2, 262144
WEIGHT_MIN, WEIGHT_MAX = 1, 10000


def shares_to_weight(shares: int) -> int:
    """cgroup v1 ``cpu.shares`` -> v2 ``cpu.weight`` (0 means unset and stays 0)."""
    if shares == 0:
        return 0
    if shares <= SHARES_MIN:
        return WEIGHT_MIN
    if shares >= SHARES_MAX:
        return WEIGHT_MAX
    l2 = math.log2(shares)
    # round away float noise so exact points (1024 -> 2.0 -> 100) do not ceil up to 101
    exponent = round((l2 * l2 + 125 * l2) / 612.0 - 7.0 / 34.0, 9)
    return max(WEIGHT_MIN, min(WEIGHT_MAX, math.ceil(10 ** exponent)))


def blkio_weight_to_io_weight(weight: int) -> int:
    """v1 ``blkio.weight`` (10..1000) -> v2 ``io.weight`` (1..10000); 0 means unset."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def swap_to_v2(swap: int, memory: int) -> int:
    """OCI memory+swap -> v2 ``memory.swap.max`` (-1 = max, 0 = leave unset), as runc does."""
    if memory == -1 and swap == 0:
        return -1          # unlimited memory and no explicit swap: unlimited swap too, like v1
    if swap in (-1, 0):
        return swap
    if memory in (0, -1):
        raise RuntimeFailure("cannot set a swap limit without a memory limit", op="cgroup compute",
                             path="memory.swap")
    if swap < memory:
        raise RuntimeFailure(f"memory+swap limit {swap} is below the memory limit {memory}",
                             op="cgroup compute", path="memory.swap")
    return swap - memory


def max_or(value: int) -> str:
    """Kernel spelling of a limit: negative = unlimited ("max")."""
    return "max" if value < 0 else str(value)


def section(resources: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = resources.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RuntimeFailure(f"resources.{key} must be an object, not {type(value).__name__}",
                             op="cgroup compute", path=key)
    return value


def get_int(obj: Mapping[str, Any], key: str, where: str) -> int:
    """An integer field, 0 when absent or null (OCI: unset)."""
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuntimeFailure(f"{where}.{key} must be an integer, not {value!r}", op="cgroup compute",
                             path=f"{where}.{key}")
    return value


def get_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RuntimeFailure(f"{where}.{key} must be a string, not {value!r}", op="cgroup compute",
                             path=f"{where}.{key}")
    return value


THROTTLE_KEYS = {
    "throttleReadBpsDevice": ("read_bps_device", "rbps"),
    "throttleWriteBpsDevice": ("write_bps_device", "wbps"),
    "throttleReadIOPSDevice": ("read_iops_device", "riops"),
    "throttleWriteIOPSDevice": ("write_iops_device", "wiops"),
}


def throttles(block_io: Mapping[str, Any]) -> list[tuple[str, int, int, int]]:
    """``(oci key, major, minor, rate)`` for every throttle entry, in spec order."""
    out: list[tuple[str, int, int, int]] = []
    for key in THROTTLE_KEYS:
        entries = block_io.get(key) or []
        if not isinstance(entries, list):
            raise RuntimeFailure(f"blockIO.{key} must be a list", op="cgroup compute", path=key)
        for i, entry in enumerate(entries):
            where = f"blockIO.{key}[{i}]"
            if not isinstance(entry, Mapping):
                raise RuntimeFailure(f"{where} must be an object", op="cgroup compute", path=where)
            rate = get_int(entry, "rate", where)
            if rate < 0:
                raise RuntimeFailure(f"{where}.rate must not be negative", op="cgroup compute",
                                     path=where)
            out.append((key, get_int(entry, "major", where), get_int(entry, "minor", where), rate))
    return out


@dataclass(frozen=True)
class DeviceRule:
    """One validated OCI device rule. ``major``/``minor`` None = any; kind "a" = every device."""

    allow: bool
    kind: str           # "a" | "b" | "c"
    major: int | None
    minor: int | None
    access: str         # letters of "rwm"

    def v1_line(self) -> str:
        """The ``devices.allow|deny`` line, e.g. ``c 1:3 rwm``."""
        if self.kind == "a":
            # "a" means every device whatever the numbers; the kernel ignores the rest of the line
            return "a"
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.kind} {major}:{minor} {self.access}"


def device_rule(rule: Mapping[str, Any], index: int) -> DeviceRule:
    """Validate one OCI ``linux.resources.devices`` entry."""
    where = f"devices[{index}]"
    if not isinstance(rule, Mapping):
        raise RuntimeFailure(f"{where} must be an object", op="cgroup compute", path=where)
    allow = rule.get("allow")
    if not isinstance(allow, bool):
        raise RuntimeFailure(f"{where}.allow must be true or false", op="cgroup compute", path=where)
    kind = get_str(rule, "type", where) or "a"
    if kind not in ("a", "b", "c"):
        raise RuntimeFailure(f"{where}.type must be a, b or c, not {kind!r}", op="cgroup compute",
                             path=where)
    access = get_str(rule, "access", where) or "rwm"
    if set(access) - set("rwm"):
        raise RuntimeFailure(f"{where}.access must be letters of 'rwm', not {access!r}",
                             op="cgroup compute", path=where)

    def num(key: str) -> int | None:
        value = get_int(rule, key, where) if rule.get(key) is not None else -1
        return None if value == -1 else value

    return DeviceRule(allow, kind, num("major"), num("minor"), "".join(dict.fromkeys(access)))


def device_rules(resources: Mapping[str, Any]) -> list[DeviceRule] | None:
    """All device rules, or None when the spec has no ``devices`` key (leave device access alone)."""
    devices = resources.get("devices")
    if devices is None:
        return None
    if not isinstance(devices, list):
        raise RuntimeFailure("resources.devices must be a list", op="cgroup compute", path="devices")
    return [device_rule(rule, i) for i, rule in enumerate(devices)]
