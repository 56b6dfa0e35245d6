"""Pure ordering: the diff's actions -> a ``Plan`` (the value ``apply --dry-run`` prints).

Order: setup (generation records, volumes) -> clean-up of leftovers -> prune deletes in REVERSE
dependency order (dependents go before what they depend on, using the dependency graph of the stack's
last applied generation) -> services by dependency level (dependencies first, each service carrying the
``(service, condition)`` pairs it must wait for) -> forgetting removed stacks. Within one service:
scale-down deletes (highest replica first), in-place updates, starts, creates, then recreates one
replica at a time (the rolling update; ``order`` start-first|stop-first rides on each recreate).

Neighbours: input from ``reconcile.diff``; output run by ``reconcile.execute``. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from orchestrator.reconcile.actions import PHASE_PRUNE, PHASE_SERVICES, Action, Deferred, Plan
from orchestrator.reconcile.diff import diff
from orchestrator.state.desired import DesiredState
from orchestrator.state.observed import ObservedState

_KIND_RANK = {"generation": 0, "volume-create": 1, "delete": 2, "update": 3, "start": 4, "create": 5,
              "recreate": 6, "volume-delete": 7, "stack-forget": 8}


def _levels_from_plain(stack_plain: Mapping[str, Any] | None) -> dict[str, int]:
    """service -> dependency level, from a snapshot (old generation) of a stack."""
    if not stack_plain:
        return {}
    deps = {s["name"]: {d["service"] for d in s.get("depends_on") or ()} for s in stack_plain["services"]}
    level: dict[str, int] = {}

    def visit(name: str, seen: frozenset[str]) -> int:
        if name in level:
            return level[name]
        if name in seen:          # a cycle (refused by the checks; be safe anyway)
            return 0
        lv = 1 + max((visit(d, seen | {name}) for d in deps.get(name, ()) if d in deps), default=-1)
        level[name] = lv
        return lv

    for n in deps:
        visit(n, frozenset())
    return level


def order(actions: Sequence[Action], desired: DesiredState, observed: ObservedState,
          deferred: Sequence[Deferred] = ()) -> Plan:
    out: list[Action] = []
    old_levels: dict[str, dict[str, int]] = {}
    for a in actions:
        if a.phase == PHASE_PRUNE and a.service:
            if a.stack not in old_levels:
                cur = observed.snapshot_hashes.get(a.stack)
                old_levels[a.stack] = _levels_from_plain(observed.snapshot(a.stack, cur[0]) if cur else None)
            lv = old_levels[a.stack]
            a = replace(a, level=max(lv.values(), default=0) - lv.get(a.service, 0))
        elif a.phase == PHASE_SERVICES and a.stack in desired.stacks:
            ds = desired.stacks[a.stack]
            lvl = ds.level_of().get(a.service, 0)
            after: tuple[tuple[str, str], ...] = ()
            if a.service in {s.name for s in ds.model.services}:
                after = tuple((d.service, d.condition) for d in ds.model.service(a.service).depends_on)
            a = replace(a, level=lvl, after=after)
        out.append(a)

    def key(a: Action) -> tuple[Any, ...]:
        replica = -a.replica if a.kind == "delete" else a.replica
        return (a.phase, a.level, a.stack, a.service, _KIND_RANK[a.kind], replica, a.target)

    return Plan(tuple(sorted(out, key=key)), tuple(deferred))


def make_plan(desired: DesiredState, observed: ObservedState, *, prune: bool = True,
              remove: frozenset[str] = frozenset(), remove_volumes: bool = False,
              enforce_restart: bool = False) -> Plan:
    """diff + order: the whole pure core in one call."""
    later: list[Deferred] = []
    actions = diff(desired, observed, prune=prune, remove=remove, remove_volumes=remove_volumes,
                   enforce_restart=enforce_restart, deferred=later)
    return order(actions, desired, observed, later)
