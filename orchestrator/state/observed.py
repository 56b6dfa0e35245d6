"""Observed state: the inventory joined with what the runtime reports NOW.

Built fresh every pass (level-triggered: the last pass's results are never trusted): one read of the
inventory, one ``runtime.list()``. A container whose process was killed outside the orchestrator shows as
``EXITED``; one deleted outside as ``MISSING``; one left half-made by a crashed apply as ``PENDING`` or
``CREATED``. Runtime containers that are not in our inventory are ignored, never touched.

Old specs (for the "which field changed" part of plan reasons) are loaded lazily from the generation
snapshots, only for containers whose hash differs, so an up-to-date pass reads no snapshot at all.

Neighbours: ``store.inventory`` (records), ``runtime.base.Runtime`` (list), ``state.lifecycle``
(``derive_status``); consumed by the pure ``reconcile.diff``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.errors import OrchestratorError
from orchestrator.runtime.base import ContainerState, Runtime
from orchestrator.state.lifecycle import Status, derive_status
from orchestrator.store.inventory import ContainerRecord, Inventory, StackRecord, VolumeRecord

SnapshotLookup = Callable[[str, int], Mapping[str, Any] | None]


def _no_snapshots(stack: str, generation: int) -> Mapping[str, Any] | None:
    return None


@dataclass(frozen=True, slots=True)
class ObservedContainer:
    record: ContainerRecord
    state: ContainerState | None
    status: Status
    healthy: bool | None = None            # last probe result; None = no probe recorded
    failing: int = 0                       # consecutive failed probes (observed with streaks only)
    probe_output: str = ""
    probe_time: float = 0.0                # wall clock of the newest probe
    limits: tuple[int | None, int | None] | None = None   # (memory, pids) read from the kernel, if asked

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def slot(self) -> str:
        return self.record.slot


@dataclass(frozen=True, slots=True)
class ObservedState:
    containers: Mapping[str, tuple[ObservedContainer, ...]]    # slot -> incarnations, oldest first
    stacks: Mapping[str, StackRecord] = field(default_factory=dict)
    snapshot_hashes: Mapping[str, tuple[int, str]] = field(default_factory=dict)  # stack -> (gen, hash)
    volumes: Mapping[tuple[str, str], VolumeRecord] = field(default_factory=dict)
    snapshot: SnapshotLookup = _no_snapshots
    interrupted: tuple[tuple[str, int, str, str], ...] = ()   # open journal steps of a crashed apply
    now: float = 0.0                                             # wall clock of the observation

    def all(self) -> list[ObservedContainer]:
        return [c for cs in self.containers.values() for c in cs]


LimitsReader = Callable[[str], "tuple[int | None, int | None]"]


def with_limits(observed: ObservedState, read: LimitsReader) -> ObservedState:
    """The same observation plus the kernel's current limits of every running container (so limits
    changed behind our back are seen); containers that vanish meanwhile are left without."""
    out: dict[str, tuple[ObservedContainer, ...]] = {}
    for slot, incarnations in observed.containers.items():
        row = []
        for o in incarnations:
            if o.status is Status.RUNNING:
                with contextlib.suppress(OrchestratorError):    # gone meanwhile: seen next pass
                    o = replace(o, limits=read(o.id))
            row.append(o)
        out[slot] = tuple(row)
    return replace(observed, containers=out)


def build(records: list[ContainerRecord], states: Mapping[str, ContainerState],
          health: Mapping[str, bool] | None = None,
          streaks: Mapping[str, tuple[int, float, str]] | None = None, **kw: Any) -> ObservedState:
    """Pure join of inventory records and runtime states (also used directly by unit tests)."""
    health, streaks = health or {}, streaks or {}
    by_slot: dict[str, list[ObservedContainer]] = {}
    for rec in records:
        st = states.get(rec.id)
        failing, when, output = streaks.get(rec.id, (0, 0.0, ""))
        by_slot.setdefault(rec.slot, []).append(ObservedContainer(
            rec, st, derive_status(rec.phase, st), health.get(rec.id), failing, output, when))
    return ObservedState({k: tuple(v) for k, v in by_slot.items()}, **kw)


def observe(inventory: Inventory, runtime: Runtime, *, streaks: bool = False) -> ObservedState:
    """Read the store and the runtime once; ``streaks``: also the failed-probe streaks (the loop's
    health-based restarts)."""
    records = inventory.containers()
    states = {s.id: s for s in runtime.list()} if records else {}
    cache: dict[tuple[str, int], Mapping[str, Any] | None] = {}

    def snapshot(stack: str, generation: int) -> Mapping[str, Any] | None:
        key = (stack, generation)
        if key not in cache:
            gen = inventory.generation(stack, generation)
            cache[key] = json.loads(gen.snapshot) if gen else None
        return cache[key]

    return build(records, states, inventory.last_health() if records else {},
                 inventory.health_streaks() if streaks and records else None,
                 stacks={s.name: s for s in inventory.stacks()},
                 snapshot_hashes=inventory.current_hashes(),
                 volumes={(v.stack, v.name): v for v in inventory.volumes()},
                 snapshot=snapshot, interrupted=tuple(inventory.open_journal()), now=time.time())
