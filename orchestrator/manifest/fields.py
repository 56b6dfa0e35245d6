"""Field converters of ``manifest.convert`` that need no document context: raw (schema-valid) value -> model.

Restart policy, resources (cgroup limits), security, ulimits, rolling update and signal names: each
function takes the raw value of one manifest field and returns the frozen model value with units
parsed, defaults from ``manifest.model`` applied and unordered collections sorted. Split out of
``convert`` to keep each module small; like ``convert``, only the manifest package calls these.
"""

from __future__ import annotations

from typing import Any, cast

from orchestrator.manifest import model as m
from orchestrator.manifest import units


def text(value: Any) -> str:
    """A scalar as the string a label or env value becomes (``true``, not ``True``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def restart(raw: Any) -> m.RestartPolicy:
    if raw is None:
        return m.RestartPolicy()
    if isinstance(raw, str):
        return m.RestartPolicy(policy=cast(m.RestartPolicyName, raw))
    backoff = raw.get("backoff") or {}
    d = m.RestartPolicy()
    return m.RestartPolicy(
        policy=raw.get("policy", d.policy),
        max_retries=int(raw["maxRetries"]) if "maxRetries" in raw else None,
        backoff_initial_s=units.parse_duration(backoff.get("initial", d.backoff_initial_s)),
        backoff_max_s=units.parse_duration(backoff.get("max", d.backoff_max_s)),
        reset_after_s=units.parse_duration(raw.get("resetAfter", d.reset_after_s)),
    )


def rates(raw: list[dict[str, Any]] | None) -> tuple[m.DeviceRate, ...]:
    # bytes/s and IO/s share the syntax: 10Mi, 1k or a plain number
    return tuple(sorted((m.DeviceRate(r["device"], units.parse_bytes(r["rate"])) for r in raw or ()),
                        key=lambda r: r.device))


def resources(raw: dict[str, Any]) -> m.Resources:
    blk = raw.get("blkio") or {}
    devices = []
    for d in raw.get("devices") or ():
        if isinstance(d, str):
            dev, _, perms = d.partition(":")
            devices.append(m.DeviceRule(dev, perms or "rwm"))
        else:
            devices.append(m.DeviceRule(d["path"], d.get("permissions", "rwm")))

    def opt_bytes(key: str) -> int | None:
        return units.parse_bytes(raw[key]) if key in raw else None

    return m.Resources(
        cpus=units.parse_cpus(raw["cpus"]) if "cpus" in raw else None,
        cpu_shares=int(raw["cpuShares"]) if "cpuShares" in raw else None,
        cpuset_cpus=raw.get("cpuset"),
        cpuset_mems=raw.get("cpusetMems"),
        memory=opt_bytes("memory"),
        memory_swap=opt_bytes("memorySwap"),
        memory_reservation=opt_bytes("memoryReservation"),
        pids=int(raw.get("pids", m.Resources().pids)),
        blkio=m.Blkio(weight=int(blk["weight"]) if "weight" in blk else None,
                      read_bps=rates(blk.get("readBps")),
                      write_bps=rates(blk.get("writeBps")),
                      read_iops=rates(blk.get("readIops")),
                      write_iops=rates(blk.get("writeIops"))),
        devices=tuple(sorted(devices, key=lambda d: d.path)),
    )


def cap(name: str) -> str:
    up = name.upper()
    return up if up == "ALL" or up.startswith("CAP_") else f"CAP_{up}"


def idmap(raw: list[dict[str, int]]) -> tuple[tuple[int, int, int], ...]:
    return tuple((int(e["containerId"]), int(e["hostId"]), int(e["size"])) for e in raw)


def security(raw: dict[str, Any]) -> m.Security:
    caps = raw.get("capabilities") or {}
    userns_raw = raw.get("userns", False)
    userns: m.UserNamespace | None
    if userns_raw is True:
        userns = m.UserNamespace()
    elif isinstance(userns_raw, dict):
        d = m.UserNamespace()
        uid = idmap(userns_raw["uidMap"]) if "uidMap" in userns_raw else d.uid_map
        gid = idmap(userns_raw["gidMap"]) if "gidMap" in userns_raw else uid
        userns = m.UserNamespace(uid_map=uid, gid_map=gid)
    else:
        userns = None
    d_sec = m.Security()
    return m.Security(
        seccomp=raw.get("seccomp", d_sec.seccomp),
        cap_add=tuple(sorted({cap(c) for c in caps.get("add", ())})),
        cap_drop=tuple(sorted({cap(c) for c in caps.get("drop", ())})),
        read_only_rootfs=bool(raw.get("readOnlyRootfs", False)),
        no_new_privileges=bool(raw.get("noNewPrivileges", True)),
        userns=userns,
        sysctls=tuple(sorted((k, text(v)) for k, v in (raw.get("sysctls") or {}).items())),
        masked_paths=tuple(sorted(set(raw.get("maskedPaths", ())))),
        readonly_paths=tuple(sorted(set(raw.get("readonlyPaths", ())))),
    )


def ulimit(name: str, raw: Any) -> m.Ulimit:
    if isinstance(raw, dict):
        return m.Ulimit(name, int(raw["soft"]), int(raw["hard"]))
    return m.Ulimit(name, int(raw), int(raw))


def update(raw: dict[str, Any]) -> m.UpdateConfig:
    d = m.UpdateConfig()
    return m.UpdateConfig(
        order=raw.get("order", d.order),
        parallelism=int(raw.get("parallelism", d.parallelism)),
        failure_action=raw.get("failureAction", d.failure_action),
        monitor_s=units.parse_duration(raw.get("monitor", d.monitor_s)),
        delay_s=units.parse_duration(raw.get("delay", d.delay_s)),
    )


def signal(name: str) -> str:
    return name if name.startswith("SIG") else f"SIG{name}"
