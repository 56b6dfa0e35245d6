"""One Compose service -> one service of our manifest (a plain dict in the schema's camelCase shape).

Each supported key has a handler; any other key is reported as a warning with its ``file:line``, never
dropped silently. Limits and security keys live in ``interop.compose_resources``, ports and mounts in
``interop.compose_mounts``; this module has the process, environment, networks, dependencies, health
check and restart keys, and the dispatch over all of them.

Neighbours: ``interop.compose`` calls :func:`convert_service` for every active service;
``interop.compose_units`` parses value syntaxes; ``interop.interpolate`` reads ``env_file`` files.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from orchestrator.errors import Problem
from orchestrator.interop import compose_units as units
from orchestrator.interop.compose_context import Ctx, as_int, as_list, as_map, key_values
from orchestrator.interop.compose_mounts import file_mounts, ports, tmpfs, volumes
from orchestrator.interop.compose_resources import HANDLERS as RESOURCE_HANDLERS
from orchestrator.interop.compose_resources import Handler
from orchestrator.interop.interpolate import parse_dotenv
from orchestrator.interop.yamlsource import MarkedList, MarkedMap

_WHY = {
    "build": "build the image first and refer to it with 'image'",
    "container_name": "container names are derived from the stack, service and replica",
    "expose": "ports are reachable on shared networks without it",
    "privileged": "use cap_add for the capabilities the service needs",
    "logging": "log drivers are not configurable",
    "extra_hosts": "host name overrides are not supported",
    "dns": "the network's resolver is used",
    "init": "the init process is not configurable",
}


def _argv(ctx: Ctx, svc: MarkedMap, key: str, path: str) -> list[str] | None:
    value = svc[key]
    if value is None:
        return None
    if isinstance(value, MarkedList):
        return [str(v) for v in value]
    try:
        return shlex.split(str(value))
    except ValueError as exc:
        ctx.error(svc, key, path, f"cannot split command: {exc}")
        return None


def _command(field: str) -> Handler:
    def handle(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
        argv = _argv(ctx, svc, key, path)
        if argv is not None:
            out[field] = argv
    return handle


def _plain(field: str) -> Handler:
    def handle(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
        if svc[key] is not None:
            out[field] = str(svc[key])
    return handle


def _environment(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    env = out.setdefault("env", {})
    for name, value in key_values(ctx, svc, key, path).items():
        if value is None:          # "KEY" alone: the value comes from the environment, if it is set
            if name in ctx.env:
                env[name] = ctx.env[name]
            else:
                ctx.warn(svc, key, f"{path}.{name}", f"{name} has no value and is not set; left out")
            continue
        env[name] = value


def _env_file(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    raw = svc[key]
    entries = raw if isinstance(raw, MarkedList) else [raw]
    merged: dict[str, str] = {}
    for item in entries:
        required = True
        name = item
        if isinstance(item, MarkedMap):
            name = item.get("path")
            required = bool(item.get("required", True))
        file = Path(ctx.path_of(str(name)))
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            if required:
                ctx.error(svc, key, path, f"cannot read env file {file}: {exc.strerror}")
            continue
        except UnicodeDecodeError:
            ctx.error(svc, key, path, f"env file {file} is not UTF-8 text")
            continue
        problems: list[Problem] = []
        merged.update(parse_dotenv(text, str(file), ctx.env, problems))
        ctx.problems.extend(problems)
    # environment overrides env_file, whatever the key order in the file
    env = out.setdefault("env", {})
    out["env"] = {**merged, **env}


def _networks(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    raw = svc[key]
    names: list[str] = []
    if isinstance(raw, MarkedMap):
        for net, cfg in raw.items():
            names.append(ctx.name(net, raw, net, f"{path}.{net}", "network"))
            for k in (cfg if isinstance(cfg, MarkedMap) else {}):
                ctx.unsupported(cfg, str(k), f"{path}.{net}.{k}",
                                "services are reached by their service name only")
    else:
        items = as_list(ctx, svc, key, path)
        names = [ctx.name(n, items, i, f"{path}[{i}]", "network") for i, n in enumerate(items)]
    if names:
        out["_networks"] = sorted(set(names))


def _network_mode(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    mode = str(svc[key])
    if mode in ("host", "none", "bridge"):
        out["_mode"] = mode
    elif mode.startswith(("service:", "container:")):
        other = mode.partition(":")[2]
        out["_mode"] = f"container:{ctx.name(other, svc, key, path, 'service')}"
        if mode.startswith("container:"):
            ctx.warn(svc, key, path, f"'{mode}' is read as the service '{other}' of this stack")
    else:
        ctx.error(svc, key, path, f"unsupported network_mode {mode!r}")


_CONDITIONS = {"service_started": "started", "service_healthy": "healthy",
               "service_completed_successfully": "completed"}


def _depends_on(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    raw = svc[key]
    deps: dict[str, str] = {}
    if isinstance(raw, MarkedMap):
        for dep, cfg in raw.items():
            sub = f"{path}.{dep}"
            name = ctx.name(dep, raw, dep, sub, "service")
            cond = "service_started"
            for k in (cfg if isinstance(cfg, MarkedMap) else {}):
                if k == "condition" and cfg[k] in _CONDITIONS:
                    cond = cfg[k]
                elif k == "condition":
                    ctx.error(cfg, k, f"{sub}.condition", f"unknown condition {cfg[k]!r}")
                elif k == "required" and cfg[k] is True:
                    continue
                else:
                    ctx.unsupported(cfg, str(k), f"{sub}.{k}")
            deps[name] = _CONDITIONS[cond]
    else:
        items = as_list(ctx, svc, key, path)
        for i, dep in enumerate(items):
            deps[ctx.name(dep, items, i, f"{path}[{i}]", "service")] = "started"
    out["dependsOn"] = dict(sorted(deps.items()))


def _healthcheck(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    hc = as_map(ctx, svc, key, path)
    result: dict[str, Any] = {}
    if hc.get("disable") is True:
        return
    for k in hc:
        sub = f"{path}.{k}"
        value = hc[k]
        if k == "test":
            test = [str(v) for v in value] if isinstance(value, MarkedList) else ["CMD-SHELL", str(value)]
            if test[:1] == ["NONE"]:
                return                      # the image's health check, disabled
            if test[:1] == ["CMD"] and len(test) > 1:
                result["exec"] = test[1:]
            elif test[:1] == ["CMD-SHELL"] and len(test) == 2:
                result["exec"] = ["/bin/sh", "-c", test[1]]
            else:
                ctx.error(hc, k, sub, "expected [CMD, ...], [CMD-SHELL, cmd], [NONE] or a string")
        elif k in ("interval", "timeout", "start_period"):
            try:
                seconds = units.parse_duration(value)
            except ValueError as exc:
                ctx.error(hc, k, sub, str(exc))
                continue
            result[{"start_period": "startPeriod"}.get(k, k)] = units.format_duration(seconds)
        elif k == "retries":
            result["retries"] = as_int(ctx, hc, k, sub)
        elif k != "disable":
            ctx.unsupported(hc, str(k), sub)
    if "exec" not in result:
        ctx.warn(svc, key, path, "health check without 'test' (the image's) ignored")
        return
    out["healthcheck"] = result


def _restart(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    value = svc[key]
    text = "no" if value is False else str(value)       # `restart: false` means no
    policy, _, count = text.partition(":")
    if policy == "no":
        out["restart"] = {"policy": "never"}
    elif policy == "always":
        out["restart"] = {"policy": "always"}
    elif policy == "unless-stopped":
        out["restart"] = {"policy": "always"}
        ctx.warn(svc, key, path, "'unless-stopped' becomes 'always' (a stopped service is removed "
                                 "from the stack instead)")
    elif policy == "on-failure":
        out["restart"] = {"policy": "on-failure"}
        if count:
            try:
                out["restart"]["maxRetries"] = int(count)
            except ValueError:
                ctx.error(svc, key, path, f"expected on-failure[:N], got {text!r}")
    else:
        ctx.error(svc, key, path, f"unknown restart policy {text!r}")


def _replicas(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    n = as_int(ctx, svc, key, path)
    if n is not None:
        out["replicas"] = n


def _labels(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    out["labels"] = {k: v or "" for k, v in sorted(key_values(ctx, svc, key, path).items())}


def _duration(field: str) -> Handler:
    def handle(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
        try:
            out[field] = units.format_duration(units.parse_duration(svc[key]))
        except ValueError as exc:
            ctx.error(svc, key, path, str(exc))
    return handle


def _group_add(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    items = as_list(ctx, svc, key, path)
    for i, item in enumerate(items):
        if str(item).isdigit():
            out.setdefault("groups", []).append(int(str(item)))
        else:
            ctx.warn(items, i, f"{path}[{i}]", f"group name '{item}' ignored: only numeric gids")


def _network(ctx: Ctx, svc: MarkedMap, path: str, out: dict[str, Any]) -> None:
    """``network_mode`` and ``networks`` together make our one ``network`` field."""
    mode, networks = out.pop("_mode", None), out.pop("_networks", None)
    if mode not in (None, "bridge") and networks:
        ctx.warn(svc, "networks", f"{path}.networks", f"networks ignored with network_mode {mode!r}")
    if mode not in (None, "bridge"):
        out["network"] = mode
    elif networks:
        out["network"] = {"networks": networks}


HANDLERS: dict[str, Handler] = {
    "image": _plain("image"),
    "command": _command("command"),
    "entrypoint": _command("entrypoint"),
    "environment": _environment,
    "env_file": _env_file,
    "ports": ports,
    "volumes": volumes,
    "tmpfs": tmpfs,
    "networks": _networks,
    "network_mode": _network_mode,
    "depends_on": _depends_on,
    "healthcheck": _healthcheck,
    "restart": _restart,
    "scale": _replicas,
    "user": _plain("user"),
    "working_dir": _plain("workingDir"),
    "hostname": _plain("hostname"),
    "labels": _labels,
    "stop_signal": _plain("stopSignal"),
    "stop_grace_period": _duration("stopGracePeriod"),
    "group_add": _group_add,
    "configs": file_mounts("", "configs"),
    "secrets": file_mounts("/run/secrets", "secrets"),
    **RESOURCE_HANDLERS,
}
# keys applied last so that they win over the legacy spelling of the same field (mem_limit, ...)
_LATE = ("env_file", "deploy")


def convert_service(ctx: Ctx, name: str, svc: MarkedMap, path: str) -> dict[str, Any]:
    """Our manifest's service dict for one Compose service (``_``-prefixed keys are for the caller)."""
    out: dict[str, Any] = {"_name": name}
    keys = sorted(svc, key=lambda k: (k in _LATE, _LATE.index(k) if k in _LATE else 0))
    for key in keys:
        sub = f"{path}.{key}"
        handler = HANDLERS.get(str(key))
        if key == "profiles":
            continue                        # read by interop.compose to select services
        if str(key).startswith("x-"):
            continue                        # extension fields are for the user, by Compose's rules
        if handler is None:
            ctx.unsupported(svc, str(key), sub, _WHY.get(str(key), ""))
            continue
        handler(ctx, svc, str(key), sub, out)
    _network(ctx, svc, path, out)
    # Compose's default is not to restart; ours is on-failure, so say "never" explicitly
    out.setdefault("restart", {"policy": "never"})
    if "image" not in out:
        ctx.error(svc, "image" if "image" in svc else "build", path,
                  f"service '{name}' has no 'image' (build the image and name it)")
    # the schema's order, so that converted files read like hand-written ones
    return dict(sorted(out.items(), key=lambda kv: _ORDER.get(kv[0], len(_ORDER))))


_ORDER = {k: i for i, k in enumerate((
    "_name", "image", "entrypoint", "command", "env", "workingDir", "user", "groups", "hostname",
    "replicas", "restart", "resources", "security", "ulimits", "oomScoreAdj", "healthcheck", "dependsOn",
    "ports", "volumes", "network", "namespaces", "update", "stopSignal", "stopGracePeriod", "labels",
    "configs", "secrets"))}
