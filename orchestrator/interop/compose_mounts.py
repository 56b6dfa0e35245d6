"""Compose ``ports``, ``volumes``, ``tmpfs``, ``configs`` and ``secrets`` of a service -> ours.

Short and long syntaxes both; bind sources become absolute paths against the Compose file's directory;
an anonymous volume becomes a named one (``<service>-anon-<n>``) so that it survives re-creation, with a
warning; ports without a host port are published on the same number, with a warning (no ephemeral ports).

Neighbours: ``interop.compose_service`` dispatches here; ``interop.compose_units`` parses the strings.
"""

from __future__ import annotations

from typing import Any

from orchestrator.interop import compose_units as units
from orchestrator.interop.compose_context import Ctx, as_bool, as_int, as_list, as_map
from orchestrator.interop.compose_resources import Handler
from orchestrator.interop.yamlsource import MarkedList, MarkedMap


def ports(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    published = out.setdefault("ports", [])
    items = as_list(ctx, svc, key, path)
    for i, item in enumerate(items):
        sub = f"{path}[{i}]"
        try:
            specs = _long_port(ctx, item, sub) if isinstance(item, MarkedMap) else units.parse_port(item)
        except ValueError as exc:
            ctx.error(items, i, sub, str(exc))
            continue
        for spec in specs:
            if spec.host_port is None:
                ctx.warn(items, i, sub, f"no host port for {spec.container_port}: published on the "
                                        "same port number (no ephemeral ports)")
            published.append(spec.manifest())


def _long_port(ctx: Ctx, item: MarkedMap, path: str) -> list[units.PortSpec]:
    for k in item:
        if k not in ("target", "published", "host_ip", "protocol", "mode", "name", "app_protocol"):
            ctx.unsupported(item, str(k), f"{path}.{k}")
        elif k in ("mode", "name", "app_protocol") and not (k == "mode" and item[k] == "host"):
            ctx.warn(item, k, f"{path}.{k}", f"port {k} {item[k]!r} ignored")
    if "target" not in item:
        raise ValueError("a long-syntax port needs 'target'")
    published = item.get("published")
    text = f"{item['target']}/{item.get('protocol', 'tcp')}"
    if published is not None:
        text = f"{published}:{text}"
    if item.get("host_ip"):
        host_ip = str(item["host_ip"])
        text = f"[{host_ip}]:{text}" if ":" in host_ip else f"{host_ip}:{text}"
    return units.parse_port(text)


def volumes(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    items = as_list(ctx, svc, key, path)
    for i, item in enumerate(items):
        sub = f"{path}[{i}]"
        if isinstance(item, MarkedMap):
            volume = _long_volume(ctx, item, sub)
        else:
            try:
                spec = units.parse_volume(item)
            except ValueError as exc:
                ctx.error(items, i, sub, str(exc))
                continue
            if spec.options:
                ctx.warn(items, i, sub, f"volume options {','.join(spec.options)} ignored")
            volume = {"type": spec.type, "source": spec.source, "target": spec.target}
            if not spec.source:
                del volume["source"]
            if spec.read_only:
                volume["readOnly"] = True
        if volume is None:
            continue
        if volume["type"] == "bind":
            volume["source"] = ctx.path_of(str(volume["source"]))
        elif volume["type"] == "volume" and not volume.get("source"):
            # an anonymous volume: give it a stable name so it survives re-creation, and say so
            volume["source"] = ctx.name(f"{out['_name']}-anon-{i}", items, i, sub, "volume")
            ctx.warn(items, i, sub, f"anonymous volume becomes named volume '{volume['source']}'")
            out.setdefault("_anonymous", []).append(volume["source"])
        elif volume["type"] == "volume":
            volume["source"] = ctx.name(volume["source"], items, i, sub, "volume")
        out.setdefault("volumes", []).append(volume)


def _long_volume(ctx: Ctx, item: MarkedMap, path: str) -> dict[str, Any] | None:
    kind = str(item.get("type", "volume"))
    if kind not in ("bind", "volume", "tmpfs"):
        ctx.error(item, "type", f"{path}.type", f"volume type {kind!r} is not supported")
        return None
    if "target" not in item:
        ctx.error(item, "type", path, "a long-syntax volume needs 'target'")
        return None
    volume: dict[str, Any] = {"type": kind, "source": str(item.get("source") or ""),
                              "target": str(item["target"])}
    for k in item:
        sub = f"{path}.{k}"
        if k in ("type", "source", "target"):
            continue
        if k == "read_only":
            if as_bool(ctx, item, k, sub):
                volume["readOnly"] = True
        elif k == "tmpfs" and kind == "tmpfs":
            opts = as_map(ctx, item, k, sub)
            for o in opts:
                try:
                    if o == "size":
                        volume.setdefault("tmpfs", {})["size"] = units.format_bytes(
                            units.parse_bytes(opts[o]))
                    elif o == "mode":
                        # people write `mode: 1777` meaning octal, which YAML reads as decimal
                        # 1777: read the digits as octal (a YAML octal literal 0o1777 is misread)
                        volume.setdefault("tmpfs", {})["mode"] = f"0{int(str(opts[o]), 8):o}"
                except ValueError as exc:
                    ctx.error(opts, o, f"{sub}.{o}", str(exc))
                    continue
                if o in ("size", "mode"):
                    continue
                ctx.unsupported(opts, str(o), f"{sub}.{o}")
        else:
            ctx.unsupported(item, str(k), sub)
    if not volume["source"]:
        del volume["source"]
    return volume


def tmpfs(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
    raw = svc[key]
    for entry in (raw if isinstance(raw, MarkedList) else [raw]):
        target, _, opts = str(entry).partition(":")
        volume: dict[str, Any] = {"type": "tmpfs", "target": target}
        for opt in filter(None, opts.split(",")):
            name, _, value = opt.partition("=")
            try:
                if name == "size":
                    volume.setdefault("tmpfs", {})["size"] = units.format_bytes(units.parse_bytes(value))
                elif name == "mode":
                    volume.setdefault("tmpfs", {})["mode"] = f"0{int(value, 8):o}"
                else:
                    ctx.warn(svc, key, path, f"tmpfs option '{opt}' on {target} ignored")
            except ValueError as exc:
                ctx.error(svc, key, path, f"tmpfs option '{opt}': {exc}")
        out.setdefault("volumes", []).append(volume)


def file_mounts(default_dir: str, field: str) -> Handler:
    def handle(ctx: Ctx, svc: MarkedMap, key: str, path: str, out: dict[str, Any]) -> None:
        items = as_list(ctx, svc, key, path)
        mounts = []
        for i, item in enumerate(items):
            sub = f"{path}[{i}]"
            if isinstance(item, MarkedMap):
                if not item.get("source"):
                    ctx.error(items, i, sub, f"a long-syntax {key[:-1]} needs 'source'")
                    continue
                source = ctx.name(item["source"], item, "source", f"{sub}.source", key[:-1])
                mount: dict[str, Any] = {"source": source,
                                         "target": str(item.get("target") or f"{default_dir}/{source}")}
                for k in ("uid", "gid"):
                    if k in item:
                        mount[k] = as_int(ctx, item, k, f"{sub}.{k}")
                if "mode" in item:
                    mode = item["mode"]
                    try:            # a string is octal ("0440"); an int is what YAML read (0440 -> 288)
                        value = int(mode, 8) if isinstance(mode, str) else int(mode)
                        mount["mode"] = f"0{value:o}" if 0 <= value <= 0o7777 else value
                    except ValueError:
                        ctx.error(item, "mode", f"{sub}.mode", f"expected an octal mode, got {mode!r}")
            else:
                source = ctx.name(item, items, i, sub, key[:-1])
                mount = {"source": source, "target": f"{default_dir}/{source}"}
            if not mount["target"].startswith("/"):
                mount["target"] = f"{default_dir}/{mount['target']}"
            mounts.append(mount)
        out[field] = mounts
    return handle
