"""Compose in: a ``compose.yaml`` -> our Stack manifest (a dict ready to dump as YAML) plus warnings.

Steps, in Compose's own order: read the YAML keeping positions (``interop.yamlsource``), load ``.env``
next to the file and interpolate every string value with the process environment first
(``interop.interpolate``), select services by profile, then convert each service
(``interop.compose_service``) and the top-level volumes, networks, configs and secrets. Every key we do not
support becomes a warning naming it and its ``file:line:col``; malformed input raises one
``ManifestError`` holding all problems.

Neighbours: ``cli.interop_cmds`` (``convert``) and the manifest loader (``apply -f compose.yaml``, via
:func:`is_compose`) call this; the result is validated by ``orchestrator.manifest`` like any manifest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator import manifest
from orchestrator.errors import InteropError, ManifestError, Problem
from orchestrator.interop import yamlsource
from orchestrator.interop.compose_context import (
    Ctx,
    as_bool,
    as_list,
    as_map,
    key_values,
    normalize_name,
)
from orchestrator.interop.compose_service import convert_service
from orchestrator.interop.interpolate import interpolate_tree, parse_dotenv
from orchestrator.interop.yamlsource import MarkedList, MarkedMap
from orchestrator.manifest.model import StackSet

API_VERSION = "orchestrator/v1"


@dataclass
class ConvertResult:
    manifest: dict[str, Any]
    warnings: list[Problem] = field(default_factory=list)


def is_compose(doc: object) -> bool:
    """A Compose file by shape: a top-level ``services`` and none of our ``apiVersion``/``kind``."""
    return isinstance(doc, dict) and "services" in doc and "apiVersion" not in doc and "kind" not in doc


def is_compose_file(path: Path) -> bool:
    """Whether ``path`` holds a Compose file (for ``apply -f``); unreadable or invalid YAML is not one."""
    try:
        return is_compose(yamlsource.load_file(Path(path)))
    except (InteropError, ManifestError):
        return False


def load_stackset(path: Path, env: Mapping[str, str] | None = None,
                  profiles: Sequence[str] = ()) -> tuple[StackSet, list[Problem]]:
    """Convert a Compose file and load the result like any manifest: (stacks, conversion warnings).

    Problems the manifest checks find in the converted stack are reported against the Compose file,
    with the path in the converted manifest (there is no line to point at in a file nobody wrote).
    """
    result = convert(path, env, profiles)
    text = yaml.safe_dump(result.manifest, sort_keys=False)
    try:
        stacks = manifest.load_text(text, str(path))
    except ManifestError as exc:
        raise ManifestError([Problem(str(path), 0, 0, p.path, f"{p.message} (in the converted stack)")
                             for p in exc.problems]) from exc
    return stacks, result.warnings


def convert(path: Path, env: Mapping[str, str] | None = None,
            profiles: Sequence[str] = ()) -> ConvertResult:
    """Convert the Compose file at ``path``; ``env`` defaults to the process environment.

    Active profiles are ``profiles`` plus ``COMPOSE_PROFILES`` (comma-separated) from the environment.
    """
    path = Path(path)
    data = yamlsource.load_file(path)
    return convert_data(data, str(path), path.parent.resolve(), dict(os.environ) if env is None else env,
                        profiles)


def convert_text(text: str, filename: str, base_dir: Path, env: Mapping[str, str],
                 profiles: Sequence[str] = ()) -> ConvertResult:
    """Like :func:`convert` for text already read (``.env`` is still looked up in ``base_dir``)."""
    return convert_data(yamlsource.load_text(text, filename), filename, base_dir, env, profiles)


def convert_data(data: Any, filename: str, base_dir: Path, env: Mapping[str, str],
                 profiles: Sequence[str] = ()) -> ConvertResult:
    if not isinstance(data, MarkedMap) or not is_compose(data):
        raise ManifestError([Problem(filename, 1, 1, "", "not a Compose file (no top-level 'services')")])
    problems: list[Problem] = []
    scope = {**_dotenv(base_dir, env, problems), **env}
    ctx = Ctx(filename, base_dir, scope)
    ctx.problems.extend(problems)
    doc = interpolate_tree(data, scope, filename, ctx.problems, ctx.warnings)
    if ctx.problems:            # converting a half-interpolated document would only add noise
        raise ManifestError(ctx.problems)
    active = set(profiles) | {p.strip() for p in scope.get("COMPOSE_PROFILES", "").split(",") if p.strip()}
    manifest = _convert_doc(ctx, doc, active)
    if ctx.problems:
        raise ManifestError(ctx.problems)
    return ConvertResult(manifest, sorted(ctx.warnings, key=lambda p: (p.line, p.col, p.path, p.message)))


def _dotenv(base_dir: Path, env: Mapping[str, str], problems: list[Problem]) -> dict[str, str]:
    dotenv = base_dir / ".env"
    try:
        text = dotenv.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(str(dotenv), 0, 0, "", f"cannot read: {exc}"))
        return {}
    return parse_dotenv(text, str(dotenv), env, problems)


def _stack_name(ctx: Ctx, doc: MarkedMap) -> str:
    if "name" in doc:
        return ctx.name(doc["name"], doc, "name", "name", "project")
    raw = ctx.env.get("COMPOSE_PROJECT_NAME") or ctx.base_dir.name
    return ctx.name(raw, doc, "services", "name", "project")


def _convert_doc(ctx: Ctx, doc: MarkedMap, active: set[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    services = as_map(ctx, doc, "services", "services")
    chosen: dict[str, dict[str, Any]] = {}
    for raw_name, svc in services.items():
        path = f"services.{raw_name}"
        if not isinstance(svc, MarkedMap):
            ctx.error(services, raw_name, path, "expected a mapping")
            continue
        wanted = ([str(p) for p in as_list(ctx, svc, "profiles", f"{path}.profiles")]
                  if "profiles" in svc else [])
        if wanted and not active.intersection(wanted):
            continue
        name = ctx.name(raw_name, services, raw_name, path, "service")
        chosen[name] = convert_service(ctx, name, svc, path)
    _drop_inactive_dependencies(ctx, services, chosen)
    used_volumes = {v["source"] for s in chosen.values() for v in s.get("volumes", [])
                    if v["type"] == "volume"}
    anonymous = {v for s in chosen.values() for v in s.pop("_anonymous", [])}
    for s in chosen.values():
        s.pop("_name", None)
    spec["services"] = dict(sorted(chosen.items()))
    for key in doc:
        if key in ("services", "name"):
            continue
        if key == "volumes":
            spec["volumes"] = _volumes(ctx, as_map(ctx, doc, key, key))
        elif key == "networks":
            spec["networks"] = _networks(ctx, as_map(ctx, doc, key, key))
        elif key in ("configs", "secrets"):
            spec[key] = _files(ctx, as_map(ctx, doc, key, key), key)
        elif key == "version":
            ctx.warn(doc, key, key, "'version' is obsolete and ignored")
        elif not str(key).startswith("x-"):
            ctx.unsupported(doc, str(key), str(key))
    volumes = spec.setdefault("volumes", {})
    for name in sorted(used_volumes - set(volumes)):
        if name not in anonymous:
            ctx.error(doc, "services", "volumes", f"service uses undeclared volume '{name}'")
        volumes[name] = {}
    for key in ("volumes", "networks", "configs", "secrets"):
        if key in spec and not spec[key]:
            del spec[key]
    return {"apiVersion": API_VERSION, "kind": "Stack",
            "metadata": {"name": _stack_name(ctx, doc)}, "spec": spec}


def _drop_inactive_dependencies(ctx: Ctx, services: MarkedMap, chosen: dict[str, dict[str, Any]]) -> None:
    for name, svc in chosen.items():
        deps = svc.get("dependsOn", {})
        for dep in [d for d in deps if d not in chosen]:
            known = {normalize_name(str(s)) for s in services}
            what = "inactive (profile)" if dep in known else "unknown"
            ctx.warn(services, name, f"services.{name}.depends_on",
                     f"dependency on {what} service '{dep}' dropped")
            del deps[dep]
        if "dependsOn" in svc and not deps:
            del svc["dependsOn"]


def _volumes(ctx: Ctx, volumes: MarkedMap) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw in volumes:
        name = ctx.name(raw, volumes, raw, f"volumes.{raw}", "volume")
        entry: dict[str, Any] = {}
        cfg = as_map(ctx, volumes, raw, f"volumes.{raw}")
        for k in cfg:
            sub = f"volumes.{raw}.{k}"
            if k == "labels":
                entry["labels"] = {a: b or "" for a, b in sorted(key_values(ctx, cfg, k, sub).items())}
            elif k == "driver" and cfg[k] == "local":
                continue
            else:
                ctx.unsupported(cfg, str(k), sub, "volumes are local directories")
        out[name] = entry
    return out


def _networks(ctx: Ctx, networks: MarkedMap) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw in networks:
        name = ctx.name(raw, networks, raw, f"networks.{raw}", "network")
        entry: dict[str, Any] = {}
        cfg = as_map(ctx, networks, raw, f"networks.{raw}")
        for k in cfg:
            sub = f"networks.{raw}.{k}"
            if k == "driver" and cfg[k] == "bridge":
                continue
            if k == "internal":
                internal = as_bool(ctx, cfg, k, sub)
                if internal is not None:
                    entry["internal"] = internal
            elif k == "ipam" and isinstance(cfg[k], MarkedMap):
                configs = cfg[k].get("config")
                configs = configs if isinstance(configs, MarkedList) else []
                subnets = [c["subnet"] for c in configs if isinstance(c, MarkedMap) and "subnet" in c]
                if subnets:
                    entry["subnet"] = str(subnets[0])
                if len(subnets) > 1 or any(set(c) - {"subnet"} for c in configs if isinstance(c, MarkedMap)):
                    ctx.warn(cfg, k, sub, "only the first ipam subnet is used")
            else:
                ctx.unsupported(cfg, str(k), sub, "networks are local bridges")
        out[name] = entry
    return out


def _files(ctx: Ctx, items: MarkedMap, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw in items:
        path = f"{kind}.{raw}"
        name = ctx.name(raw, items, raw, path, kind[:-1])
        entry: dict[str, Any] = {}
        cfg = as_map(ctx, items, raw, path)
        for k in cfg:
            sub = f"{path}.{k}"
            if k == "file":
                entry["file"] = ctx.path_of(str(cfg[k]))
            elif k == "content" and kind == "configs":
                entry["content"] = str(cfg[k])
            elif k == "environment" and kind == "secrets":
                entry["env"] = str(cfg[k])
            elif k == "environment":
                value = ctx.env.get(str(cfg[k]))
                if value is None:
                    ctx.error(cfg, k, sub, f"variable {cfg[k]} is not set")
                entry["content"] = value or ""
            else:
                ctx.unsupported(cfg, str(k), sub)
        if not entry and cfg:       # only unsupported keys (external: true, ...): reported above
            ctx.warn(items, raw, path, f"{kind[:-1]} '{raw}' dropped: it has no file or "
                                       + ("content" if kind == "configs" else "environment"))
            continue
        if not entry:
            ctx.error(items, raw, path, f"{kind[:-1]} '{raw}' needs 'file'"
                                        + (" or 'content'" if kind == "configs" else " or 'environment'"))
        out[name] = entry
    return out

