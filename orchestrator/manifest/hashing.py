"""Stable content hashes of the model: which changes need a container recreate, and which do not.

``spec_hash(stack, service)`` covers exactly the fields that shape a container's process, filesystem,
namespaces or security; when it changes, the reconciler recreates the service's containers.
``resources_hash(service)`` covers the cgroup limits, which are applied in place. Everything else
(replicas, restart, healthcheck, dependsOn, update, labels, stop signal and grace period) is read by the
reconciler directly and never causes a recreate. Configs and secrets enter through their mount
definitions only; the reconciler adds a digest of their content separately.

Stable across runs, machines and Python versions: a canonical JSON (sorted keys, no whitespace, floats
printed with a fixed format) of plain values, hashed with sha256. Never ``hash()`` or ``repr``. The
leading ``version`` field lets us change what is hashed on purpose, once, with a visible reason.

Neighbours: input from ``manifest.model``; used by ``reconcile.diff`` and recorded in the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from orchestrator.manifest.model import Network, Service, Stack

HASH_VERSION = 1

# Service fields that are changed in place or only steer the reconciler: kept out of spec_hash.
IN_PLACE_FIELDS = frozenset({"resources", "replicas", "restart", "healthcheck", "depends_on", "update",
                             "labels", "stop_signal", "stop_grace_period_s", "source", "name"})


# type -> its compared field names (None: not a dataclass), looked up by exact type: dataclasses.fields
# and is_dataclass on every value were most of the cost of hashing and snapshotting 500 services
_NAMES: dict[type, tuple[str, ...] | None] = {}


def compared_fields(cls: type) -> tuple[str, ...] | None:
    """The field names of a model dataclass type that make up its value (``compare=True``: source
    locations are left out), None for any other type. Cached; shared with ``state.canonical``."""
    try:
        return _NAMES[cls]
    except KeyError:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.compare) \
            if dataclasses.is_dataclass(cls) else None
        _NAMES[cls] = names
        return names


def canonical(value: Any) -> Any:
    """Plain JSON-able data for a model value; dataclass fields with ``compare=False`` are left out."""
    cls = type(value)
    if cls is str or cls is int or cls is bool or value is None:
        return value
    if cls is tuple or cls is list:
        return [canonical(v) for v in value]
    names = compared_fields(cls)
    if names is not None:
        return {n: canonical(getattr(value, n)) for n in names}
    if isinstance(value, tuple | list):
        return [canonical(v) for v in value]
    if isinstance(value, float):
        # a fixed format, not repr: the same text on every platform and version for the values we hold
        return f"{value:.9g}"
    if isinstance(value, str | int | bool):
        return value
    raise TypeError(f"cannot hash a {type(value).__name__}")  # a model field of a new type: extend here


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _networks(stack: Stack, service: Service) -> list[Any]:
    joined = set(service.network.networks) if service.network.mode == "bridge" else set()
    nets: list[Network] = [n for n in stack.networks if n.name in joined]
    return [canonical(n) for n in nets]


def spec_hash(stack: Stack, service: Service) -> str:
    """sha256 hex of the recreate-relevant definition of ``service`` (as a member of ``stack``)."""
    fields = {n: canonical(getattr(service, n)) for n in compared_fields(Service) or ()
              if n not in IN_PLACE_FIELDS}
    return _digest({"version": HASH_VERSION, "stack": stack.name, "service": fields,
                    "networks": _networks(stack, service)})


def resources_hash(service: Service) -> str:
    """sha256 hex of the cgroup limits (applied in place when only this changes)."""
    return _digest({"version": HASH_VERSION, "resources": canonical(service.resources)})
