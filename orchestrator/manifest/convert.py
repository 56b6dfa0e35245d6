"""Turn one schema-valid document into a frozen ``model.Stack``: with ``manifest.fields``, the only code that
reads raw manifest keys.

Units are parsed (``manifest.units``), defaults applied (the model's), relative paths resolved against the
manifest's directory, short forms expanded (``"8080:80"``, ``"data:/data:ro"``, ``restart: always``), and
lists whose order carries no meaning sorted (env, ports, dependencies, capabilities) so that equal stacks
compare and hash equal. Volumes keep their order: mounts nest.

Alongside the model we keep ``origins``: for items that checks may complain about (a dependency, a port,
a mount), the JSON path of the node that declared it, so ``manifest.checks`` can point at the right line
without reading raw data. A few value errors only visible while parsing (an unbalanced quote in a command
string, a port out of range) are reported here as Problems.

Neighbours: input from ``manifest.schema``-validated ``loader.Document``; output to ``manifest.checks``
and everything past the manifest package.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from orchestrator.errors import Problem
from orchestrator.manifest import fields, units
from orchestrator.manifest import model as m
from orchestrator.manifest.loader import Document, PathKey

OriginKey = tuple[str, ...]

_PORT_RE = re.compile(r"^(?:(\[[0-9a-fA-F:.]+\]|[0-9]{1,3}(?:\.[0-9]{1,3}){3}):)?(?:([0-9]+):)?([0-9]+)"
                      r"(?:/(tcp|udp))?$")


@dataclass
class Converted:
    """A stack model with the document it came from and where its items were declared."""

    stack: m.Stack
    doc: Document
    origins: dict[OriginKey, PathKey] = field(default_factory=dict)

    def problem(self, path: PathKey, message: str, *, key: bool = False) -> Problem:
        return self.doc.problem(path, message, key=key)

    def at(self, origin: OriginKey, fallback: PathKey) -> PathKey:
        return self.origins.get(origin, fallback)


class _Ctx:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []
        self.origins: dict[OriginKey, PathKey] = {}

    def ref(self, path: PathKey) -> m.SourceRef:
        line, col = self.doc.mark(path, key=True)
        return m.SourceRef(self.doc.file, line, col)

    def bad(self, path: PathKey, message: str) -> None:
        self.problems.append(self.doc.problem(path, message))

    def path(self, raw: str) -> str:
        """A host path from the manifest: absolute as is, relative to the manifest's directory."""
        p = Path(raw)
        return str(p if p.is_absolute() else (self.doc.base_dir / p).resolve())


def convert(doc: Document) -> tuple[Converted | None, list[Problem]]:
    """The model of one schema-valid document, or the problems only visible while converting."""
    try:
        return _convert(doc)
    except ValueError as exc:
        # units.* raise ValueError; the schema's patterns should make this unreachable, but a gap between
        # schema and parser must become a located problem, not a traceback
        return None, [doc.problem((), f"invalid value: {exc}")]


def _convert(doc: Document) -> tuple[Converted | None, list[Problem]]:
    ctx = _Ctx(doc)
    data: dict[str, Any] = doc.data
    spec: dict[str, Any] = data["spec"]
    sp: PathKey = ("spec", "services")
    services = tuple(_service(ctx, name, raw, (*sp, name))
                     for name, raw in sorted((spec.get("services") or {}).items()))
    networks = [m.Network(n, subnet=(o or {}).get("subnet"), internal=bool((o or {}).get("internal", False)),
                          source=ctx.ref(("spec", "networks", n)))
                for n, o in sorted((spec.get("networks") or {}).items())]
    for n in networks:
        if n.subnet is not None:
            try:
                ipaddress.IPv4Network(n.subnet)
            except ValueError as exc:
                ctx.bad(("spec", "networks", n.name, "subnet"), f'invalid subnet "{n.subnet}": {exc}')
    declared = {n.name for n in networks}
    if "default" not in declared and any(s.network.mode == "bridge" and "default" in s.network.networks
                                         for s in services):
        networks.append(m.Network("default"))
    stack = m.Stack(
        name=data["metadata"]["name"],
        services=services,
        volumes=tuple(m.Volume(n, labels=_labels((o or {}).get("labels")),
                               source=ctx.ref(("spec", "volumes", n)))
                      for n, o in sorted((spec.get("volumes") or {}).items())),
        networks=tuple(sorted(networks, key=lambda n: n.name)),
        configs=tuple(m.Config(n, file=ctx.path(o["file"]) if "file" in o else "", content=o.get("content"),
                               source=ctx.ref(("spec", "configs", n)))
                      for n, o in sorted((spec.get("configs") or {}).items())),
        secrets=tuple(m.Secret(n, file=ctx.path(o["file"]) if "file" in o else "", env=o.get("env", ""),
                               sops_file=ctx.path(o["sops"]) if "sops" in o else "",
                               source=ctx.ref(("spec", "secrets", n)))
                      for n, o in sorted((spec.get("secrets") or {}).items())),
        labels=_labels(data["metadata"].get("labels")),
        source=ctx.ref(("metadata", "name")),
    )
    if ctx.problems:
        return None, ctx.problems
    return Converted(stack, doc, ctx.origins), []


def _labels(raw: dict[str, Any] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, fields.text(v)) for k, v in (raw or {}).items()))


def _argv(ctx: _Ctx, raw: Any, path: PathKey, *, shell: bool = False) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if isinstance(raw, list):
        return tuple(str(a) for a in raw)
    if shell:  # healthcheck exec as one string: run by the container's shell, as Compose's CMD-SHELL
        return ("/bin/sh", "-c", raw)
    try:
        return tuple(shlex.split(raw))
    except ValueError as exc:
        ctx.bad(path, f'cannot split command "{raw}": {str(exc).lower()}')
        return ()


def _env(ctx: _Ctx, raw: Any, path: PathKey) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if isinstance(raw, dict):
        return tuple(sorted((k, fields.text(v)) for k, v in raw.items()))
    seen: dict[str, str] = {}
    for i, entry in enumerate(raw):
        name, _, value = entry.partition("=")
        if name in seen:
            ctx.bad((*path, i), f'duplicate environment variable "{name}"')
        seen[name] = value
    return tuple(sorted(seen.items()))


def _service(ctx: _Ctx, name: str, raw: dict[str, Any], path: PathKey) -> m.Service:
    ctx.origins[("service", name)] = path
    hc = raw.get("healthcheck")
    return m.Service(
        name=name,
        image=raw.get("image", ""),
        rootfs=ctx.path(raw["rootfs"]) if "rootfs" in raw else "",
        entrypoint=_argv(ctx, raw.get("entrypoint"), (*path, "entrypoint")),
        command=_argv(ctx, raw.get("command"), (*path, "command")),
        env=_env(ctx, raw.get("env"), (*path, "env")),
        working_dir=raw.get("workingDir", ""),
        user=fields.text(raw.get("user", "")),
        groups=tuple(sorted(int(g) for g in raw.get("groups", ()))),
        hostname=raw.get("hostname", ""),
        replicas=int(raw.get("replicas", 1)),
        restart=fields.restart(raw.get("restart")),
        resources=fields.resources(raw.get("resources") or {}),
        security=fields.security(raw.get("security") or {}),
        ulimits=tuple(fields.ulimit(k, v) for k, v in sorted((raw.get("ulimits") or {}).items())),
        oom_score_adj=int(raw["oomScoreAdj"]) if "oomScoreAdj" in raw else None,
        healthcheck=_healthcheck(ctx, hc, (*path, "healthcheck")) if hc is not None else None,
        depends_on=_depends(ctx, name, raw.get("dependsOn"), (*path, "dependsOn")),
        ports=_ports(ctx, name, raw.get("ports") or [], (*path, "ports")),
        volumes=tuple(_volume(ctx, name, i, v, (*path, "volumes", i))
                      for i, v in enumerate(raw.get("volumes") or [])),
        network=_network(ctx, name, raw.get("network"), (*path, "network")),
        namespaces=m.Namespaces(**(raw.get("namespaces") or {})),
        update=fields.update(raw.get("update") or {}),
        stop_signal=fields.signal(raw.get("stopSignal", "SIGTERM")),
        stop_grace_period_s=units.parse_duration(raw.get("stopGracePeriod", 10)),
        labels=_labels(raw.get("labels")),
        configs=tuple(_mount(ctx, name, "config", i, v, (*path, "configs", i))
                      for i, v in enumerate(raw.get("configs") or [])),
        secrets=tuple(_mount(ctx, name, "secret", i, v, (*path, "secrets", i))
                      for i, v in enumerate(raw.get("secrets") or [])),
        source=ctx.ref(path),
    )


def _healthcheck(ctx: _Ctx, raw: dict[str, Any], path: PathKey) -> m.Healthcheck:
    d = m.Healthcheck(kind="exec")
    common: dict[str, Any] = {
        "interval_s": units.parse_duration(raw.get("interval", d.interval_s)),
        "timeout_s": units.parse_duration(raw.get("timeout", d.timeout_s)),
        "retries": int(raw.get("retries", d.retries)),
        "start_period_s": units.parse_duration(raw.get("startPeriod", d.start_period_s)),
    }
    if "exec" in raw:
        return m.Healthcheck(kind="exec", exec=_argv(ctx, raw["exec"], (*path, "exec"), shell=True) or (),
                             **common)
    if "http" in raw:
        h = raw["http"]
        return m.Healthcheck(kind="http", http_path=h.get("path", "/"), port=int(h["port"]),
                             http_status=int(h.get("status", 200)), **common)
    return m.Healthcheck(kind="tcp", port=int(raw["tcp"]["port"]), **common)


def _depends(ctx: _Ctx, svc: str, raw: Any, path: PathKey) -> tuple[m.Dependency, ...]:
    deps: list[m.Dependency] = []
    if isinstance(raw, list):
        for i, dep in enumerate(raw):
            ctx.origins[("dep", svc, dep)] = (*path, i)
            deps.append(m.Dependency(dep))
    elif isinstance(raw, dict):
        for dep, cond in raw.items():
            ctx.origins[("dep", svc, dep)] = (*path, dep)
            condition = cond["condition"] if isinstance(cond, dict) else cond
            deps.append(m.Dependency(dep, condition))
    return tuple(sorted(deps, key=lambda d: d.service))


def _ports(ctx: _Ctx, svc: str, raw: list[Any], path: PathKey) -> tuple[m.Port, ...]:
    ports: list[m.Port] = []
    for i, entry in enumerate(raw):
        where = (*path, i)
        if isinstance(entry, str):
            match = _PORT_RE.match(entry)
            if match is None:  # pragma: no cover - the schema's pattern is stricter
                ctx.bad(where, f"invalid port mapping {entry!r}")
                continue
            ip, host, cont, proto = match.groups()
            host_ip = (ip or "").strip("[]")
            host_port, container_port = int(host or cont), int(cont)
            protocol = proto or "tcp"
        else:
            host_ip = entry.get("hostIp", "")
            host_port, container_port = int(entry["hostPort"]), int(entry["containerPort"])
            protocol = entry.get("protocol", "tcp")
        for p in (host_port, container_port):
            if not 1 <= p <= 65535:
                ctx.bad(where, f"port {p} out of range 1..65535")
        if host_ip:
            try:
                ipaddress.ip_address(host_ip)
            except ValueError:
                ctx.bad(where, f'invalid host address "{host_ip}"')
        port = m.Port(host_port, container_port, cast(Any, protocol), host_ip)
        ctx.origins[("port", svc, str(port))] = where
        ports.append(port)
    return tuple(sorted(ports, key=lambda p: (p.host_ip, p.host_port, p.protocol, p.container_port)))


def _is_path(source: str) -> bool:
    return source.startswith(("/", "./", "../")) or source in (".", "..")


def _volume(ctx: _Ctx, svc: str, index: int, raw: Any, path: PathKey) -> m.VolumeMount:
    ctx.origins[("volume", svc, str(index))] = path
    if isinstance(raw, str):
        parts = raw.split(":")
        source, target = parts[0], parts[1]
        ro = len(parts) > 2 and parts[2] == "ro"
        if _is_path(source):
            return m.VolumeMount("bind", target, ctx.path(source), ro)
        return m.VolumeMount("volume", target, source, ro)
    kind = raw["type"]
    source = raw.get("source", "")
    if kind == "bind" and source:
        if not _is_path(source):  # "data" could be meant as a volume name: make the user say which
            ctx.bad((*path, "source"), f'bind source "{source}" must be an absolute path or start with '
                    "./ or ../ (for a named volume use type: volume)")
        source = ctx.path(source)
    tmpfs = raw.get("tmpfs") or {}
    d = m.VolumeMount("tmpfs", "/")
    return m.VolumeMount(
        kind, raw["target"], source, bool(raw.get("readOnly", False)),
        tmpfs_size=units.parse_bytes(tmpfs["size"]) if "size" in tmpfs else None,
        tmpfs_mode=units.parse_mode(tmpfs["mode"]) if "mode" in tmpfs else d.tmpfs_mode,
    )


def _network(ctx: _Ctx, svc: str, raw: Any, path: PathKey) -> m.NetworkMode:
    if raw is None or raw == "bridge":
        return m.NetworkMode()
    if isinstance(raw, str):
        if raw.startswith("container:"):
            ctx.origins[("network", svc)] = path
            return m.NetworkMode("container", container=raw.partition(":")[2], networks=())
        return m.NetworkMode(cast(m.NetworkModeName, raw), networks=())
    for i, net in enumerate(raw["networks"]):
        ctx.origins[("network", svc, net)] = (*path, "networks", i)
    return m.NetworkMode("bridge", networks=tuple(sorted(raw["networks"])))


def _mount(ctx: _Ctx, svc: str, kind: str, index: int, raw: Any, path: PathKey) -> m.FileMount:
    if isinstance(raw, str):
        raw = {"source": raw}
    name = raw["source"]
    ctx.origins[(kind, svc, name)] = path
    if "env" in raw:
        ctx.origins[(f"{kind}-env", svc, name)] = (*path, "env")
    default_dir = "/run/secrets" if kind == "secret" else "/run/configs"
    change, _, sig = str(raw.get("onChange", "restart")).partition(":")
    return m.FileMount(
        name=name,
        target=raw.get("target", f"{default_dir}/{name}"),
        uid=int(raw.get("uid", 0)),
        gid=int(raw.get("gid", 0)),
        mode=units.parse_mode(raw["mode"]) if "mode" in raw else m.FileMount(name, "/").mode,
        on_change=cast(m.OnChange, change),
        signal=fields.signal(sig) if sig else "",
        env=raw.get("env", ""),
    )
