"""Compose service keys about limits and security: ``deploy``, the legacy resource keys, ``blkio_config``,
``ulimits``, capabilities, ``security_opt``, ``read_only`` and ``sysctls``.

Each handler reads one key of a service and writes our manifest's ``resources`` / ``security`` /
``replicas`` / ``restart`` / ``update`` / ``ulimits`` fields into ``out``. When two Compose keys set the
same field (``mem_limit`` and ``deploy.resources.limits.memory``), the value kept is the ``deploy`` one and
a differing value is reported, as Compose itself refuses distinct values.

Neighbours: ``interop.compose_service`` dispatches to :data:`HANDLERS`; ``interop.compose_units`` parses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestrator.interop import compose_units as units
from orchestrator.interop.compose_context import Ctx, as_bool, as_int, as_list, as_map, key_values
from orchestrator.interop.yamlsource import MarkedMap

Handler = Callable[[Ctx, MarkedMap, str, str, dict[str, Any]], None]


def _put(ctx: Ctx, out: dict[str, Any], section: str, field: str, value: Any,
         node: MarkedMap, key: str, path: str) -> None:
    target = out.setdefault(section, {})
    if field in target and target[field] != value:
        ctx.warn(node, key, path, f"conflicts with another key setting {section}.{field} "
                                  f"({target[field]!r}); keeping {value!r}")
    target[field] = value


def _bytes(ctx: Ctx, node: MarkedMap, key: str, path: str) -> str | int | None:
    try:
        n = units.parse_bytes(node[key])
    except ValueError as exc:
        ctx.error(node, key, path, str(exc))
        return None
    return units.format_bytes(n)


def _cpus(ctx: Ctx, node: MarkedMap, key: str, path: str) -> float | None:
    try:
        return float(node[key])
    except (TypeError, ValueError):
        ctx.error(node, key, path, f"expected a number of CPUs, got {node[key]!r}")
        return None


def _legacy(section: str, field: str, parse: str) -> Handler:
    """A handler for a one-value key (``cpus``, ``mem_limit``, ``cpuset`` ...) written to section.field."""
    def handle(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
        value: Any
        if parse == "bytes":
            value = _bytes(ctx, svc, key, path)
        elif parse == "cpus":
            value = _cpus(ctx, svc, key, path)
        elif parse == "int":
            value = as_int(ctx, svc, key, path)
        else:
            value = str(svc[key])
        if value is not None:
            _put(ctx, out, section, field, value, svc, key, path)
    return handle


def _pids_limit(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    n = as_int(ctx, svc, key, path)
    if n is None:
        return
    if n <= 0:       # Compose: 0 or -1 = unlimited; our runtime always caps the process count
        ctx.warn(svc, key, path, f"unlimited pids ({n}) is not supported; the default limit applies")
        return
    _put(ctx, out, "resources", "pids", n, svc, key, path)


def _blkio(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    cfg = as_map(ctx, svc, key, path)
    blkio: dict[str, Any] = {}
    for k in cfg:
        sub = f"{path}.{k}"
        field = {"device_read_bps": "readBps", "device_write_bps": "writeBps",
                 "device_read_iops": "readIops", "device_write_iops": "writeIops"}.get(str(k))
        if k == "weight":
            blkio["weight"] = as_int(ctx, cfg, k, sub)
        elif field is not None:
            rates = []
            for i, item in enumerate(as_list(ctx, cfg, k, sub)):
                if not isinstance(item, MarkedMap) or "path" not in item or "rate" not in item:
                    ctx.error(cfg[k], i, f"{sub}[{i}]", "expected {path, rate}")
                    continue
                rate = (_bytes(ctx, item, "rate", f"{sub}[{i}].rate") if field.endswith("Bps")
                        else as_int(ctx, item, "rate", f"{sub}[{i}].rate"))
                if rate is not None:
                    rates.append({"device": str(item["path"]), "rate": rate})
            blkio[field] = rates
        else:       # weight_device: per-device weights have no place in our model
            ctx.unsupported(cfg, str(k), sub, "per-device block IO weights are not supported")
    if blkio:
        out.setdefault("resources", {})["blkio"] = blkio


def _ulimits(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    result: dict[str, Any] = {}
    cfg = as_map(ctx, svc, key, path)
    for name in cfg:
        sub = f"{path}.{name}"
        value = cfg[name]
        if isinstance(value, MarkedMap):
            soft, hard = as_int(ctx, value, "soft", sub) if "soft" in value else None, \
                as_int(ctx, value, "hard", sub) if "hard" in value else None
            if soft is None or hard is None:
                ctx.error(cfg, name, sub, "expected {soft, hard}")
                continue
        else:
            soft = hard = as_int(ctx, cfg, name, sub)
            if soft is None:
                continue
        result[str(name)] = {"soft": soft, "hard": hard}
    if result:
        out["ulimits"] = result


def _caps(field: str) -> Handler:
    def handle(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
        raw = (str(c).upper() for c in as_list(ctx, svc, key, path))
        caps = sorted({c if c == "ALL" or c.startswith("CAP_") else f"CAP_{c}" for c in raw})
        if caps:
            out.setdefault("security", {}).setdefault("capabilities", {})[field] = caps
    return handle


def _security_opt(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    opts = as_list(ctx, svc, key, path)
    for i, raw in enumerate(opts):
        text = str(raw)
        name, _, value = text.replace("=", ":", 1).partition(":")
        sub = f"{path}[{i}]"
        if name == "seccomp" and value:
            profile = value if value in ("unconfined", "default") else ctx.path_of(value)
            out.setdefault("security", {})["seccomp"] = profile
        elif name == "no-new-privileges":
            enabled = value.lower() in ("", "true", "1")
            out.setdefault("security", {})["noNewPrivileges"] = enabled
        else:
            ctx.warn(opts, i, sub, f"unsupported security option '{text}' ignored"
                                   " (only seccomp and no-new-privileges are supported)")


def _read_only(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    value = as_bool(ctx, svc, key, path)
    if value is not None:
        out.setdefault("security", {})["readOnlyRootfs"] = value


def _sysctls(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    values = key_values(ctx, svc, key, path)
    if values:
        out.setdefault("security", {})["sysctls"] = {k: v or "" for k, v in sorted(values.items())}


_RESTART_CONDITIONS = {"none": "never", "on-failure": "on-failure", "any": "always"}


def _deploy(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    deploy = as_map(ctx, svc, key, path)
    for k in deploy:
        sub = f"{path}.{k}"
        if k == "replicas":
            replicas = as_int(ctx, deploy, k, sub)
            if replicas is not None:
                out["replicas"] = replicas
        elif k == "resources":
            _deploy_resources(ctx, as_map(ctx, deploy, k, sub), sub, out)
        elif k == "update_config":
            _update_config(ctx, as_map(ctx, deploy, k, sub), sub, out)
        elif k == "restart_policy":
            _restart_policy(ctx, as_map(ctx, deploy, k, sub), sub, out)
        elif k == "mode" and deploy[k] == "replicated":
            continue
        else:
            ctx.unsupported(deploy, str(k), sub, "a one-host orchestrator has no swarm placement")


def _deploy_resources(ctx: Ctx, res: MarkedMap, path: str, out: dict[str, Any]) -> None:
    for kind in res:
        sub = f"{path}.{kind}"
        section = as_map(ctx, res, kind, sub)
        if kind not in ("limits", "reservations"):
            ctx.unsupported(res, str(kind), sub)
            continue
        for k in section:
            leaf = f"{sub}.{k}"
            if kind == "limits" and k == "cpus":
                _legacy("resources", "cpus", "cpus")(ctx, section, k, leaf, out)
            elif kind == "limits" and k == "memory":
                _legacy("resources", "memory", "bytes")(ctx, section, k, leaf, out)
            elif kind == "limits" and k == "pids":
                _pids_limit(ctx, section, k, leaf, out)
            elif kind == "reservations" and k == "memory":
                _legacy("resources", "memoryReservation", "bytes")(ctx, section, k, leaf, out)
            elif kind == "reservations" and k == "cpus":
                ctx.unsupported(section, str(k), leaf, "CPU reservations have no equivalent; use "
                                                      "cpu_shares for a relative weight")
            else:
                ctx.unsupported(section, str(k), leaf)


def _update_config(ctx: Ctx, cfg: MarkedMap, path: str, out: dict[str, Any]) -> None:
    update: dict[str, Any] = {}
    for k in cfg:
        sub = f"{path}.{k}"
        value = cfg[k]
        if k == "parallelism":
            update["parallelism"] = as_int(ctx, cfg, k, sub)
        elif k == "order" and value in ("start-first", "stop-first"):
            update["order"] = value
        elif k == "failure_action" and value in ("rollback", "pause"):
            update["failureAction"] = value
        elif k == "failure_action" and value == "continue":
            update["failureAction"] = "pause"
            ctx.warn(cfg, k, sub, "failure_action 'continue' is not supported; using 'pause'")
        elif k in ("monitor", "delay"):
            try:
                update[k] = units.format_duration(units.parse_duration(value))
            except ValueError as exc:
                ctx.error(cfg, k, sub, str(exc))
        elif k in ("order", "failure_action"):
            ctx.error(cfg, k, sub, f"unknown value {value!r}")
        else:
            ctx.unsupported(cfg, str(k), sub)
    if update:
        out["update"] = update


def _restart_policy(ctx: Ctx, cfg: MarkedMap, path: str, out: dict[str, Any]) -> None:
    for k in cfg:
        sub = f"{path}.{k}"
        if k == "condition" and cfg[k] in _RESTART_CONDITIONS:
            out.setdefault("restart", {})["policy"] = _RESTART_CONDITIONS[cfg[k]]
        elif k == "max_attempts":
            out.setdefault("restart", {})["maxRetries"] = as_int(ctx, cfg, k, sub)
        elif k == "condition":
            ctx.error(cfg, k, sub, f"unknown restart condition {cfg[k]!r}")
        else:
            ctx.unsupported(cfg, str(k), sub)


def _devices(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    items = as_list(ctx, svc, key, path)
    for i, item in enumerate(items):
        host, _, rest = str(item).partition(":")
        inner, _, perms = rest.partition(":")
        if perms == "" and inner and not inner.startswith("/"):
            inner, perms = host, inner                # "/dev/x:rw"
        if inner and inner != host:
            ctx.warn(items, i, f"{path}[{i}]", f"device {host} is made available at the same path, "
                                               f"not at {inner}")
        if not host.startswith("/dev/"):
            ctx.error(items, i, f"{path}[{i}]", f"expected a /dev/ path, got {host!r}")
            continue
        entry = f"{host}:{perms}" if perms else host
        out.setdefault("resources", {}).setdefault("devices", []).append(entry)


def _namespace(ns: str) -> Handler:
    def handle(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
        value = str(svc[key])
        if value in ("host", "private"):
            out.setdefault("namespaces", {})[ns] = value
        else:
            ctx.warn(svc, key, path, f"{key} {value!r} ignored: only 'host' or 'private'")
    return handle


def _oom_score_adj(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    value = as_int(ctx, svc, key, path)
    if value is not None:
        out["oomScoreAdj"] = value


HANDLERS: dict[str, Handler] = {
    "devices": _devices,
    "pid": _namespace("pid"),
    "ipc": _namespace("ipc"),
    "uts": _namespace("uts"),
    "cgroup": _namespace("cgroup"),
    "oom_score_adj": _oom_score_adj,
    "deploy": _deploy,
    "cpus": _legacy("resources", "cpus", "cpus"),
    "cpu_shares": _legacy("resources", "cpuShares", "int"),
    "cpuset": _legacy("resources", "cpuset", "str"),
    "mem_limit": _legacy("resources", "memory", "bytes"),
    "memswap_limit": _legacy("resources", "memorySwap", "bytes"),
    "mem_reservation": _legacy("resources", "memoryReservation", "bytes"),
    "pids_limit": _pids_limit,
    "blkio_config": _blkio,
    "ulimits": _ulimits,
    "cap_add": _caps("add"),
    "cap_drop": _caps("drop"),
    "security_opt": _security_opt,
    "read_only": _read_only,
    "sysctls": _sysctls,
}
