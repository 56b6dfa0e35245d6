"""Desired state: a ``StackSet`` expanded to one ``DesiredContainer`` per replica, with its hashes.

Naming: a replica's stable name (its *slot*) is ``<stack>/<service>-<n>``, n from 1; the runtime id of
one incarnation is ``<stack>_<service>_<n>_<token>`` (manifest names are DNS labels, so ``_`` cannot be
ambiguous), fresh for every create so that an old and a new replica can coexist during a start-first
rolling update and a half-made container from a crashed apply never collides with its replacement.

Hashes: the spec hash covers every field that needs a recreate; the resources hash the cgroup limits
(updated in place); the config hash the orchestrator-only fields (restart, healthcheck, dependsOn,
update, labels). ``manifest.hashing`` supplies spec and resources hashes when present; otherwise the
fallbacks in ``state.canonical`` are used (same split). Image ids are resolved at the edge
(``image_ids``: ref -> id) so this module stays pure.

Neighbours: ``reconcile.diff`` compares this with ``state.observed``; ``reconcile.execute`` reads
``DesiredContainer.service`` to build the container.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.manifest.model import Service, Stack, StackSet
from orchestrator.secrets import digest as file_digest
from orchestrator.state import canonical

_SpecHash = Callable[[Stack, Service], str]
_ResHash = Callable[[Service], str]
try:  # the manifest helper's canonical hashes, when that module exists
    from orchestrator.manifest import hashing as _hashing

    _spec_hash: _SpecHash | None = _hashing.spec_hash
    _resources_hash: _ResHash | None = _hashing.resources_hash
except ImportError:  # pragma: no cover - depends on which modules exist yet
    _spec_hash = None
    _resources_hash = None


def slot_name(stack: str, service: str, replica: int) -> str:
    return f"{stack}/{service}-{replica}"


def container_id(stack: str, service: str, replica: int, token: str) -> str:
    return f"{stack}_{service}_{replica}_{token}"


@dataclass(frozen=True, slots=True)
class DesiredContainer:
    slot: str
    stack: str
    service: str
    replica: int
    spec_hash: str
    resources_hash: str
    config_hash: str
    image: str
    image_id: str
    spec: Service = field(compare=False, repr=False)
    stack_spec: Stack = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class DesiredStack:
    name: str
    snapshot: str                              # canonical JSON of the Stack
    snapshot_hash: str
    plain: Mapping[str, Any] = field(compare=False, repr=False)
    model: Stack = field(compare=False, repr=False)
    order: tuple[tuple[str, ...], ...] = ()    # services by dependency level: level 0 first

    def level_of(self) -> dict[str, int]:
        return {svc: i for i, level in enumerate(self.order) for svc in level}


@dataclass(frozen=True, slots=True)
class DesiredState:
    containers: Mapping[str, DesiredContainer]
    stacks: Mapping[str, DesiredStack]
    source: str = ""                           # prune scope: stacks last applied from this source


def dependency_levels(stack: Stack) -> tuple[tuple[str, ...], ...]:
    """Services grouped so each depends only on earlier groups (Kahn); cycles were refused by checks,
    but a cycle here still terminates: the rest goes in a last level."""
    deps = {s.name: {d.service for d in s.depends_on if d.service != s.name} for s in stack.services}
    names = set(deps)
    deps = {k: v & names for k, v in deps.items()}
    done: set[str] = set()
    levels: list[tuple[str, ...]] = []
    while len(done) < len(deps):
        ready = sorted(n for n, d in deps.items() if n not in done and d <= done)
        if not ready:
            ready = sorted(n for n in deps if n not in done)
        levels.append(tuple(ready))
        done.update(ready)
    return tuple(levels)


# Stack value (+ its image ids) -> expansion. Snapshots and hashes cost ~0.1 ms per service; a frozen
# Stack hashes and compares by value far cheaper, so a pass over an unchanged (even freshly reloaded)
# model pays only the lookup. Bounded: the oldest entries go first.
_Key = tuple[Stack, tuple[str, ...], tuple[tuple[str, str], ...]]
_CACHE: OrderedDict[_Key, tuple[DesiredStack, tuple[DesiredContainer, ...]]] = OrderedDict()
_CACHE_MAX = 512


def expand_stack(stack: Stack, image_ids: Mapping[str, str], file_digests: Mapping[str, str] | None = None
                 ) -> tuple[DesiredStack, list[DesiredContainer]]:
    """``file_digests``: ``KIND:NAME`` -> content digest of the configs/secrets the stack mounts."""
    digests = file_digests or {}
    key = (stack, tuple(image_ids.get(s.image, "") for s in stack.services), tuple(sorted(digests.items())))
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit[0], list(hit[1])
    ds, out = _expand(stack, image_ids, digests)
    _CACHE[key] = (ds, tuple(out))
    while len(_CACHE) > _CACHE_MAX:
        _CACHE.popitem(last=False)
    return ds, out


def _expand(stack: Stack, image_ids: Mapping[str, str], digests: Mapping[str, str]
            ) -> tuple[DesiredStack, list[DesiredContainer]]:
    plain, text, snap_hash = canonical.stack_snapshot(stack)
    ds = DesiredStack(stack.name, text, snap_hash, plain, stack, dependency_levels(stack))
    out: list[DesiredContainer] = []
    for svc, psvc in zip(stack.services, plain["services"], strict=True):
        if _spec_hash is not None and _resources_hash is not None:
            spec_h, res_h = _spec_hash(stack, svc), _resources_hash(svc)
            cfg_h = canonical.config_hash(psvc)
        else:
            spec_h, res_h, cfg_h = canonical.service_hashes(psvc)
        if svc.configs or svc.secrets:
            # content of restart-on-change mounts recreates; the rest is rewritten in place (update)
            spec_h = canonical.digest(spec_h + file_digest.restart_digest(svc, digests))
            mine = sorted(f"{k}={digests.get(file_digest.key(k, fm.name), '')}"
                          for k, fm in file_digest.mounts(svc))
            cfg_h = canonical.digest(cfg_h + ",".join(mine))
        ref = svc.image or f"rootfs:{svc.rootfs}"
        image_id = image_ids.get(svc.image, "") if svc.image else ""
        for n in range(1, svc.replicas + 1):
            out.append(DesiredContainer(slot_name(stack.name, svc.name, n), stack.name, svc.name, n,
                                        spec_h, res_h, cfg_h, ref, image_id, svc, stack))
    return ds, out


def desired_state(stackset: StackSet, image_ids: Mapping[str, str] | None = None,
                  source: str = "", file_digests: Mapping[str, Mapping[str, str]] | None = None
                  ) -> DesiredState:
    containers: dict[str, DesiredContainer] = {}
    stacks: dict[str, DesiredStack] = {}
    for stack in stackset.stacks:
        ds, dcs = expand_stack(stack, image_ids or {}, (file_digests or {}).get(stack.name))
        stacks[stack.name] = ds
        containers.update((dc.slot, dc) for dc in dcs)
    return DesiredState(containers, stacks, source)
