"""Canonical plain-data form of the frozen model, and back: snapshots, hashes and field diffs.

``to_plain`` turns a model value (dataclasses, tuples, scalars) into JSON-ready data with stable key
order; ``dumps`` is the one canonical JSON encoding (sorted keys, no spaces) used for generation snapshots
and hashes; ``from_plain`` rebuilds a model value from a snapshot (rollback to a previous generation).
``changed_fields`` lists ``path: old -> new`` between two plain services, for plan reasons.

The recreate/in-place split follows ``manifest.model``'s docstring: ``IN_PLACE_FIELDS`` never enter the
spec hash. ``state.desired`` uses ``manifest.hashing`` when that module exists, these fallbacks otherwise.
Pure; no I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar

from orchestrator.manifest.hashing import compared_fields
from orchestrator.manifest.model import Service, Stack

# fields of Service applied without a recreate (cgroup writes or our own bookkeeping)
IN_PLACE_FIELDS = frozenset({"resources", "replicas", "restart", "healthcheck", "depends_on", "update",
                             "labels", "source"})
# the in-place fields that only the orchestrator reads (no kernel write needed)
CONFIG_FIELDS = ("restart", "healthcheck", "depends_on", "update", "labels")

T = TypeVar("T")


_SCALARS = (str, int, float, bool, type(None))


def to_plain(value: Any) -> Any:
    """Model value -> JSON-ready data (dicts in field order, tuples as lists)."""
    cls = type(value)
    if cls in _SCALARS:
        return value
    if cls is tuple or cls is list:
        return [to_plain(v) for v in value]
    names = compared_fields(cls)
    if names is not None:
        return {n: to_plain(getattr(value, n)) for n in names}
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    return value


def dumps(plain: Any) -> str:
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_hash(plain_service: Mapping[str, Any]) -> str:
    """Hash of the orchestrator-only fields (``CONFIG_FIELDS``) of a plain service."""
    return digest(dumps({k: plain_service.get(k) for k in CONFIG_FIELDS}))


def service_hashes(plain_service: Mapping[str, Any]) -> tuple[str, str, str]:
    """(spec hash, resources hash, config hash) of a plain service (fallback for manifest.hashing)."""
    spec = {k: v for k, v in plain_service.items() if k not in IN_PLACE_FIELDS}
    return digest(dumps(spec)), digest(dumps(plain_service.get("resources"))), config_hash(plain_service)


def from_plain(cls: type[T], data: Any) -> T:
    """Rebuild a model dataclass from ``to_plain`` output, guided by its type hints."""
    return typing.cast(T, _build(cls, data))


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(tp: Any, data: Any) -> Any:
    if data is None:
        return None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = _hints(tp)
        return tp(**{n: _build(hints[n], data[n]) for n in compared_fields(tp) or () if n in data})
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(options[0], data) if len(options) == 1 else data
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v) for v in data)
        return tuple(_build(a, v) for a, v in zip(args, data, strict=True))
    return data


def stack_snapshot(stack: Stack) -> tuple[dict[str, Any], str, str]:
    """(plain stack, canonical JSON, snapshot hash)."""
    plain = to_plain(stack)
    text = dumps(plain)
    return plain, text, digest(text)


def stack_from_snapshot(text: str) -> Stack:
    return from_plain(Stack, json.loads(text))


def changed_fields(old: Any, new: Any, prefix: str = "", *, limit: int = 4) -> list[str]:
    """``path: old -> new`` for each leaf that differs (at most ``limit``, then ``...``)."""
    out: list[str] = []
    _walk(old, new, prefix, out)
    return out if len(out) <= limit else [*out[:limit], f"... ({len(out) - limit} more)"]


def _walk(old: Any, new: Any, path: str, out: list[str]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for k in [*new, *(k for k in old if k not in new)]:
            _walk(old.get(k), new.get(k), f"{path}.{k}" if path else str(k), out)
        return
    leaf = path.rsplit(".", 1)[-1]
    if leaf in _BYTE_FIELDS:
        out.append(f"{_camel(path)}: {_bytes(old)} -> {_bytes(new)}")
    else:
        out.append(f"{_camel(path)}: {_short(old)} -> {_short(new)}")


_BYTE_FIELDS = frozenset({"memory", "memory_swap", "memory_reservation", "tmpfs_size"})


def human_bytes(value: Any) -> str:
    """64Mi, 1Gi, ... for whole binary units; "none" for None (unlimited)."""
    return _bytes(value)


def _bytes(value: Any) -> str:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return _short(value)
    for unit, size in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def _camel(path: str) -> str:
    """Report paths in the manifest's spelling (memory_swap -> memorySwap, cpu_shares -> cpuShares)."""
    return ".".join(p.split("_")[0] + "".join(w.title() for w in p.split("_")[1:]) for p in path.split("."))


def _short(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        text = " ".join(str(v) if not isinstance(v, list | dict) else dumps(v) for v in value)
        text = f"[{text}]"
    elif isinstance(value, dict):
        text = dumps(value)
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def service_plain(stack_plain: Mapping[str, Any], service: str) -> Mapping[str, Any] | None:
    for s in stack_plain.get("services", ()):
        if s.get("name") == service:
            return typing.cast(Mapping[str, Any], s)
    return None


__all__ = ["IN_PLACE_FIELDS", "Service", "changed_fields", "dumps", "from_plain", "service_hashes",
           "stack_from_snapshot", "stack_snapshot", "to_plain"]
