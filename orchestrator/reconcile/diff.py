"""Pure diff: (desired, observed) -> unordered actions, each with its reason.

Rules, per replica slot:
- no incarnation: ``create`` (reason: new stack / new service / ``scale: replicas a -> b``).
- more than one incarnation (a crashed start-first update, a half-made container): the best one is kept
  (matching spec, then running), the others are deleted as ``leftover``.
- spec hash or image id differs: ``recreate``, reason naming the fields ``old -> new``.
- drift: half-made by an interrupted apply (``PENDING``) or gone (``MISSING``): ``recreate``; made but
  never started: ``start``; process ended: ``recreate`` when the restart policy wants it running
  (``always``, or ``on-failure`` with a non-zero exit or a signal), nothing for a completed job, and
  nothing while the runtime's own supervisor has a restart pending (it restarts in place, with backoff,
  also when no orchestrator runs); in the loop (``enforce_restart``) also nothing once it gave up.
- unhealthy (loop only): ``retries`` failed probes in a row: ``recreate``, within the restart limits.
- resources or config hash differs: ``update`` in place, never a recreate.
- slots no longer desired: ``delete`` (scale down always; removed services and stacks only with prune,
  and a whole stack only when it was last applied from the same source: Flux's per-source inventory).
Nothing here does I/O; the old spec for reasons comes through ``observed.snapshot`` (lazy).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.reconcile.actions import (
    PHASE_CLEANUP,
    PHASE_FORGET,
    PHASE_PRUNE,
    PHASE_SETUP,
    Action,
    Deferred,
)
from orchestrator.state import canonical
from orchestrator.state.desired import DesiredContainer, DesiredState
from orchestrator.state.lifecycle import Status, describe_exit
from orchestrator.state.observed import ObservedContainer, ObservedState

_ALIVE = (Status.RUNNING, Status.CREATED)
# annotations a supervising runtime reports in ContainerState (runtime.linux.restart): restarts done
# since create, and "true" while a restart is pending
SUPERVISOR_RESTARTS = "org.orchestrator.restarts"
# the runtime says a container was made without a restart policy and cannot be given one in place
NOT_RESTARTABLE = ("org.orchestrator.restartable", "false")
SUPERVISOR_RESTARTING = "org.orchestrator.restarting"
# generic reasons for a content change of a config/secret; the controller, which can read the digests
# a container was made from (secrets.ledger), replaces them with "config x changed (sha256 a1b2 -> c3d4)"
CONTENT_RESTART = "content of a restart-on-change config or secret changed"
CONTENT_IN_PLACE = "content of a config or secret changed (rewritten in place)"


def diff(desired: DesiredState, observed: ObservedState, *, prune: bool = True,
         remove: frozenset[str] = frozenset(), remove_volumes: bool = False, enforce_restart: bool = False,
         deferred: list[Deferred] | None = None) -> list[Action]:
    """``remove``: stacks to delete whatever their source (``down`` / ``delete -f``); their named
    volumes go too only with ``remove_volumes`` (``down --volumes``); prune never deletes volumes.
    ``enforce_restart`` (the watch/gitops loop): crashed containers are restarted only after their
    exponential backoff and within ``maxRetries``; the rest is appended to ``deferred``. An explicit
    ``apply`` restarts them at once."""
    rules = _Restart(observed.now, enforce_restart, deferred if deferred is not None else [])
    actions: list[Action] = []
    for name, ds in desired.stacks.items():
        current = observed.snapshot_hashes.get(name)
        if current is None or current[1] != ds.snapshot_hash:
            gen = f"generation {current[0]} -> {current[0] + 1}" if current else "generation 1"
            actions.append(Action("generation", name, name, f"record {gen}", phase=PHASE_SETUP))
        for vol in ds.model.volumes:
            if (name, vol.name) not in observed.volumes:
                actions.append(Action("volume-create", f"{name}/volume:{vol.name}", name, "new volume",
                                      phase=PHASE_SETUP))
    old_replicas = _observed_replicas(observed)
    for slot, dc in desired.containers.items():
        actions.extend(_diff_slot(dc, observed.containers.get(slot, ()), observed, old_replicas, rules))
    for slot, incarnations in observed.containers.items():
        if slot not in desired.containers:
            actions.extend(_undesired(incarnations, desired, observed, prune, remove))
    for name, rec in observed.stacks.items():
        if name not in desired.stacks and (name in remove or _prunable(rec.source, desired, prune)):
            if name in remove and remove_volumes:
                actions.extend(Action("volume-delete", f"{name}/volume:{vn}", name, "down --volumes",
                                      phase=PHASE_FORGET) for (sn, vn) in observed.volumes if sn == name)
            why = "stack deleted" if name in remove else "stack removed from manifests"
            actions.append(Action("stack-forget", name, name, why, phase=PHASE_FORGET))
    return actions


def _prunable(source: str, desired: DesiredState, prune: bool) -> bool:
    return prune and bool(desired.source) and source == desired.source


def _observed_replicas(observed: ObservedState) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for incarnations in observed.containers.values():
        r = incarnations[0].record
        out[(r.stack, r.service)] = max(out.get((r.stack, r.service), 0), r.replica)
    return out


def _keeper(dc: DesiredContainer, obs: tuple[ObservedContainer, ...]) -> ObservedContainer | None:
    """The incarnation to keep: matching spec first, then alive, then newest."""
    candidates = [o for o in obs if o.status is not Status.DELETING]
    if not candidates:
        return None
    return max(candidates, key=lambda o: (_matches(dc, o), o.status in _ALIVE,
                                          o.status is Status.RUNNING, o.record.created_at))


def _matches(dc: DesiredContainer, o: ObservedContainer) -> bool:
    return o.record.spec_hash == dc.spec_hash and o.record.image_id == dc.image_id


def _base(dc: DesiredContainer, kind: Any, reason: str, o: ObservedContainer | None = None,
          **kw: Any) -> Action:
    return Action(kind, dc.slot, dc.stack, reason, service=dc.service, replica=dc.replica,
                  container_id=o.id if o else "", **kw)


def _diff_slot(dc: DesiredContainer, obs: tuple[ObservedContainer, ...], observed: ObservedState,
               old_replicas: Mapping[tuple[str, str], int], rules: _Restart) -> list[Action]:
    out: list[Action] = []
    keep = _keeper(dc, obs)
    for o in obs:
        if o is not keep:
            why = "interrupted delete" if o.status is Status.DELETING else "leftover of an interrupted apply"
            out.append(_base(dc, "delete", f"{why} ({o.id}, {o.status})", o, phase=PHASE_CLEANUP))
    if keep is None:
        return [*out, _base(dc, "create", _create_reason(dc, observed, old_replicas))]
    order = dc.spec.update.order
    if not _matches(dc, keep):
        return [*out, _base(dc, "recreate", _spec_reason(dc, keep, observed), keep, order=order)]
    st = keep.status
    if st is Status.PENDING:
        return [*out, _base(dc, "recreate", "interrupted apply: its creation never finished", keep)]
    if st is Status.MISSING:
        return [*out, _base(dc, "recreate", "drift: container gone from the runtime", keep)]
    if st is Status.CREATED:
        out.append(_base(dc, "start", "drift: created but never started (interrupted apply)", keep))
    elif st is Status.EXITED and keep.state is not None:
        why = _exit_reason(dc, keep)
        if why and keep.state.annotations.get(SUPERVISOR_RESTARTING) == "true":
            # the runtime's supervisor restarts it after its backoff: not ours to race
            rules.deferred.append(Deferred(dc.slot, f"{why}; the runtime restarts it (backoff)"))
        elif why and SUPERVISOR_RESTARTS in keep.state.annotations and rules.enforce and \
                (keep.state.exit_code is not None or keep.state.exit_signal is not None):
            # supervised and stopped for good: the runtime's policy (maxRetries) gave up on it. An
            # unknown exit (the monitor itself was killed) was never judged by it: ours to heal below
            done = keep.state.annotations[SUPERVISOR_RESTARTS]
            rules.deferred.append(Deferred(dc.slot, f"{why}; the runtime gave up after {done} restarts"))
        elif why:
            restarts = rules.next_count(dc, keep)
            if rules.allowed(dc, keep, restarts, why):
                return [*out, _base(dc, "recreate", why, keep, restarts=restarts)]
            return out
    elif st is Status.RUNNING and rules.enforce and dc.spec.healthcheck is not None and \
            keep.failing >= max(dc.spec.healthcheck.retries, 1):
        why = f"unhealthy: {keep.failing} failed probes: {keep.probe_output}"
        restarts = keep.record.restarts + 1
        if rules.allowed(dc, keep, restarts, why):
            return [*out, _base(dc, "recreate", why, keep, restarts=restarts)]
    if keep.record.config_hash != dc.config_hash and dc.spec.restart.policy != "never" and \
            keep.state is not None and \
            keep.state.annotations.get(NOT_RESTARTABLE[0]) == NOT_RESTARTABLE[1]:
        # a policy changes in place, but a container its runtime made without one has no supervisor
        # set up to run it again (no saved request to replay): it takes a new container. Runtimes
        # whose containers the reconciler restarts never say so.
        why = f"restart.policy: {_old_restart_policy(keep, observed) or 'never'} -> " \
              f"{dc.spec.restart.policy} (the runtime sets restarts up at create)"
        return [*out, _base(dc, "recreate", why, keep, order=dc.spec.update.order)]
    if keep.record.resources_hash != dc.resources_hash or keep.record.config_hash != dc.config_hash:
        out.append(_base(dc, "update", _update_reason(dc, keep, observed), keep,
                         resources=keep.record.resources_hash != dc.resources_hash))
    elif keep.limits is not None:
        drift = _limits_drift(dc, keep.limits)
        if drift:
            out.append(_base(dc, "update", f"drift: {drift} (changed outside)", keep, resources=True))
    return out


def _limits_drift(dc: DesiredContainer, have: tuple[int | None, int | None]) -> str:
    res = dc.spec.resources
    parts = [f"{name} limit {canonical.human_bytes(got) if name == 'memory' else got} -> "
             f"{canonical.human_bytes(want) if name == 'memory' else want}"
             for name, got, want in (("memory", have[0], res.memory), ("pids", have[1], res.pids))
             if got != want]
    return "; ".join(parts)


@dataclass
class _Restart:
    """Restart policy limits: exponential backoff with a cap, reset after a stable run, maxRetries."""

    now: float
    enforce: bool
    deferred: list[Deferred]

    def next_count(self, dc: DesiredContainer, o: ObservedContainer) -> int:
        st = o.state
        assert st is not None
        stable = st.started_at and st.finished_at - st.started_at >= dc.spec.restart.reset_after_s
        return 1 if stable else o.record.restarts + 1

    def allowed(self, dc: DesiredContainer, o: ObservedContainer, restarts: int, why: str) -> bool:
        if not self.enforce:
            return True
        policy, st = dc.spec.restart, o.state
        assert st is not None
        if policy.max_retries is not None and restarts > policy.max_retries:
            self.deferred.append(Deferred(dc.slot, f"{why}; gave up after {policy.max_retries} restarts"))
            return False
        delay = min(policy.backoff_initial_s * 2 ** (restarts - 1), policy.backoff_max_s)
        # an unhealthy container is still running: its backoff counts from its start
        wait = (st.finished_at or st.started_at) + delay - self.now
        if wait > 0:
            self.deferred.append(Deferred(dc.slot, f"{why}; restart {restarts} in {wait:.1f}s (backoff)",
                                          wait))
            return False
        return True


def _exit_reason(dc: DesiredContainer, o: ObservedContainer) -> str:
    state = o.state
    assert state is not None
    policy = dc.spec.restart.policy
    # an unknown exit (None: the monitor died with it) counts as a failure, so on-failure heals it
    failed = bool(state.oom_killed or state.exit_signal or state.exit_code != 0)
    if policy == "never" or (policy == "on-failure" and not failed):
        return ""   # a completed job or a run-once container: leave it as it ended
    if state.exit_signal and not state.oom_killed:
        return f"drift: {describe_exit(state)}"
    return f"crash: {describe_exit(state)} (restart: {policy})"


def _create_reason(dc: DesiredContainer, observed: ObservedState,
                   old_replicas: Mapping[tuple[str, str], int]) -> str:
    old = old_replicas.get((dc.stack, dc.service), 0)
    if old:
        return f"scale: replicas {old} -> {dc.spec.replicas}"
    if dc.stack not in observed.stacks:
        return "new stack"
    return "new service" if dc.replica == 1 else f"new service (replica {dc.replica})"


def _old_service(o: ObservedContainer, observed: ObservedState) -> Mapping[str, Any] | None:
    snap = observed.snapshot(o.record.stack, o.record.generation)
    return canonical.service_plain(snap, o.record.service) if snap else None


def _old_restart_policy(o: ObservedContainer, observed: ObservedState) -> str | None:
    old = _old_service(o, observed)
    restart = old.get("restart") if old is not None else None
    return restart.get("policy") if isinstance(restart, Mapping) else None


def _spec_reason(dc: DesiredContainer, o: ObservedContainer, observed: ObservedState) -> str:
    parts: list[str] = []
    old = _old_service(o, observed)
    if old is not None:
        new = canonical.to_plain(dc.spec)
        parts = canonical.changed_fields({k: v for k, v in old.items() if k not in canonical.IN_PLACE_FIELDS},
                                         {k: v for k, v in new.items() if k not in canonical.IN_PLACE_FIELDS})
    if o.record.image_id != dc.image_id and not any(p.startswith("image:") for p in parts):
        parts.append(f"image id: {_short_id(o.record.image_id)} -> {_short_id(dc.image_id)}")
    if not parts and (dc.spec.configs or dc.spec.secrets):
        return CONTENT_RESTART
    return "; ".join(parts) or f"spec hash: {o.record.spec_hash} -> {dc.spec_hash}"


def _short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12] or "none"


def _update_reason(dc: DesiredContainer, o: ObservedContainer, observed: ObservedState) -> str:
    old = _old_service(o, observed)
    if old is not None:
        new = canonical.to_plain(dc.spec)
        keys = ("resources", *canonical.CONFIG_FIELDS)
        parts = canonical.changed_fields({k: old.get(k) for k in keys}, {k: new.get(k) for k in keys})
        if parts:
            return "; ".join(parts)
    if o.record.resources_hash != dc.resources_hash:
        return "resources changed"
    if dc.spec.configs or dc.spec.secrets:
        return CONTENT_IN_PLACE
    return "config changed"


def _undesired(incarnations: tuple[ObservedContainer, ...], desired: DesiredState, observed: ObservedState,
               prune: bool, remove: frozenset[str]) -> list[Action]:
    out: list[Action] = []
    for o in incarnations:
        r = o.record
        ds = desired.stacks.get(r.stack)
        phase, reason = PHASE_PRUNE, ""
        if o.status is Status.DELETING:
            phase, reason = PHASE_CLEANUP, "interrupted delete"
        elif ds is not None and any(s.name == r.service for s in ds.model.services):
            reason = f"scale: replicas {_count(observed, r.stack, r.service)} -> " \
                     f"{ds.model.service(r.service).replicas}"
            phase = -1      # scale-down belongs to the service's own unit (set in plan)
        elif r.stack in remove:
            reason = "stack deleted"
        elif not prune:
            continue
        elif ds is not None:
            reason = "removed from manifests"
        else:
            rec = observed.stacks.get(r.stack)
            if rec is not None and not _prunable(rec.source, desired, prune):
                continue              # another source's stack: never ours to prune here
            reason = "stack removed from manifests" if rec else "orphaned record (stack unknown)"
        out.append(Action("delete", r.slot, r.stack, reason, service=r.service, replica=r.replica,
                          container_id=r.id, phase=phase if phase >= 0 else 3))
    return out


def _count(observed: ObservedState, stack: str, service: str) -> int:
    return len({cs[0].record.replica for cs in observed.containers.values()
                if cs[0].record.stack == stack and cs[0].record.service == service})
