"""One reconcile pass: observe, diff, plan, execute, roll back on failure; returns ``Result``.

``Controller.reconcile_once(stackset)`` is what ``apply`` and the watch/gitops sources call (the caller
holds the apply lock). Level-triggered: every pass re-reads the store and the runtime; nothing from the
previous pass is trusted. An up-to-date pass writes nothing: no generation, no event, no journal line.

Rollback: when a service whose ``update.failureAction`` is ``rollback`` fails in a stack whose spec
changed in this pass, the stack's previous generation snapshot is re-applied (recorded as a new
generation with a note), and the result still reports the failure so ``apply`` exits non-zero.

Restart policies and health (``enforce_restart``, the long-running sources' passes): each pass probes
running containers whose probe is due, and recreates crashed or unhealthy ones only as their restart
policy's exponential backoff and maxRetries allow (the rest is ``Plan.deferred``). An explicit ``apply``
restarts crashed containers at once and never probes.

``requeue_after``: seconds until the caller should pass again (controller-runtime's RequeueAfter):
short after a failure (transient errors get retried with backoff by the caller), longer when converged.

Neighbours: ``state.desired``/``state.observed`` in, ``reconcile.plan`` (pure), ``reconcile.execute``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

from orchestrator.errors import ReconcileError
from orchestrator.manifest.model import StackSet
from orchestrator.reconcile.actions import Action, Plan
from orchestrator.reconcile.diff import CONTENT_IN_PLACE, CONTENT_RESTART
from orchestrator.reconcile.execute import Builder, Executor, Failure, NetworkHook, Options
from orchestrator.reconcile.health import Prober
from orchestrator.reconcile.plan import make_plan
from orchestrator.runtime.base import Runtime
from orchestrator.runtime.files import FileSpec, file_specs
from orchestrator.secrets import redact
from orchestrator.secrets.digest import Resolved, config_items, resolve_stack, secret_items
from orchestrator.secrets.ledger import DigestLedger, content_reason, mounted
from orchestrator.secrets.redact import Scrubbing
from orchestrator.state import canonical
from orchestrator.state.desired import DesiredContainer, DesiredState, desired_state
from orchestrator.state.observed import ObservedState, observe, with_limits
from orchestrator.store.inventory import Inventory

# per-pass housekeeping after the plan ran or was empty (``reconcile.network.NetworkWiring.upkeep``:
# hosts files kept current, networks dropped from a stack removed); it writes only what changed
Upkeep = Callable[[DesiredState], None]

REQUEUE_CONVERGED_S = 30.0
REQUEUE_FAILED_S = 5.0
_SCRUBBED = ("event", "journal", "set_stack_status", "record_health")


@dataclass(frozen=True)
class Result:
    changed: bool
    plan: Plan
    requeue_after: float
    failures: tuple[Failure, ...] = ()
    rolled_back: tuple[str, ...] = ()
    rollback_plan: Plan = field(default_factory=Plan)

    @property
    def ok(self) -> bool:
        return not self.failures


class Controller:
    def __init__(self, runtime: Runtime, inventory: Inventory, builder: Builder, *,
                 resolve_image: Callable[[str], str] | None = None, prober: Prober | None = None,
                 network: NetworkHook | None = None,
                 updater: Callable[[str, Mapping[str, Any]], None] | None = None,
                 env: Mapping[str, str] | None = None,
                 limits: Callable[[str], tuple[int | None, int | None]] | None = None,
                 upkeep: Upkeep | None = None) -> None:
        self.upkeep = upkeep
        # events, journal details, status messages and probe output may quote an error or a container's
        # output: scrubbed of every secret value this process resolved before they reach the store
        self.runtime, self.builder = runtime, builder
        self.inventory = cast(Inventory, Scrubbing(inventory, _SCRUBBED))
        self._ledger = DigestLedger(inventory.store)   # digests a container was made from (reasons)
        self.resolve_image = resolve_image
        self.prober = prober
        self.network = network
        self.updater = updater
        self.env = env or {}                     # where ``env:`` secrets come from (the CLI's environment)
        self._resolved: dict[str, Resolved] = {}
        self.limits = limits                     # loop only: re-read the kernel's limits (tamper check)

    def desired(self, stackset: StackSet, source: str = "") -> DesiredState:
        """Resolve what lives outside the model at the edge: image ids, config/secret contents."""
        ids: dict[str, str] = {}
        if self.resolve_image is not None:
            for stack in stackset.stacks:
                for svc in stack.services:
                    if svc.image and svc.image not in ids:
                        ids[svc.image] = self.resolve_image(svc.image)
        self._resolved = {}
        for stack in stackset.stacks:
            if any(svc.configs or svc.secrets for svc in stack.services):
                self._resolved[stack.name] = resolve_stack(stack, self.env)
                redact.register(self._resolved[stack.name].secrets.values())
        digests = {name: r.digests() for name, r in self._resolved.items()}
        return desired_state(stackset, ids, source, digests)

    def files_for(self, dc: DesiredContainer) -> list[FileSpec]:
        """The configs and secrets of one container, contents in memory (for ``runtime.create``); a
        secret mount with ``env`` is a FileSpec with ``env`` set (the runtime's init exports it)."""
        resolved = self._resolved.get(dc.stack)
        if resolved is None or not (dc.spec.configs or dc.spec.secrets):
            return []
        return file_specs(config_items(dc.spec, resolved), secret_items(dc.spec, resolved))

    def plan(self, stackset: StackSet, *, source: str = "", prune: bool = True,
             remove: frozenset[str] = frozenset(), remove_volumes: bool = False,
             enforce_restart: bool = False) -> tuple[Plan, DesiredState, ObservedState]:
        desired = self.desired(stackset, source)
        observed = observe(self.inventory, self.runtime, streaks=enforce_restart)
        if enforce_restart and self._probe_due(desired, observed):
            observed = observe(self.inventory, self.runtime, streaks=True)
        if enforce_restart and self.limits is not None:
            observed = with_limits(observed, self.limits)
        plan = make_plan(desired, observed, prune=prune, remove=remove, remove_volumes=remove_volumes,
                         enforce_restart=enforce_restart)
        return self._content_reasons(plan, desired, observed), desired, observed

    def _digests_of(self, dc: DesiredContainer) -> dict[str, str]:
        resolved = self._resolved.get(dc.stack)
        return mounted(dc.spec, resolved.digests()) if resolved is not None else {}

    def _content_reasons(self, plan: Plan, desired: DesiredState, observed: ObservedState) -> Plan:
        """Replace diff's generic content-change reasons by ``config x changed (sha256 a1b2 -> c3d4)``,
        from the digests the existing container was made from (recorded when it was made)."""
        generic = {"recreate": CONTENT_RESTART, "update": CONTENT_IN_PLACE}
        out: list[Action] = []
        for a in plan.actions:
            dc = desired.containers.get(a.target)
            if a.kind in generic and a.container_id and dc is not None and \
                    (dc.spec.configs or dc.spec.secrets):
                rec = next((o.record for o in observed.containers.get(a.target, ())
                            if o.id == a.container_id), None)
                old = self._ledger.lookup(rec.config_hash) if rec is not None else None
                why = content_reason(old, self._digests_of(dc), dc.spec, restart_only=a.kind == "recreate") \
                    if old is not None else ""
                if why:
                    a = replace(a, reason=why if a.reason == generic[a.kind] else f"{a.reason}; {why}")
            out.append(a)
        return replace(plan, actions=tuple(out))

    def _port_conflicts(self, plan: Plan, desired: DesiredState) -> list[str]:
        """Host ports the plan's creates would publish that something else holds (plan time, so a
        conflict stops the apply before anything is touched). Only plans that create look."""
        check = getattr(self.network, "port_conflicts", None)
        wanted = [(a.target, desired.containers[a.target].spec.ports) for a in plan.actions
                  if a.kind in ("create", "recreate") and a.target in desired.containers
                  and desired.containers[a.target].spec.ports]
        if check is None or not wanted:
            return []
        freed = {a.container_id for a in plan.actions if a.kind in ("delete", "recreate") and a.container_id}
        return list(check(wanted, freed))

    def reconcile_once(self, stackset: StackSet, *, source: str = "", prune: bool = True,
                       dry_run: bool = False, options: Options | None = None,
                       remove: frozenset[str] = frozenset(), remove_volumes: bool = False,
                       enforce_restart: bool = False) -> Result:
        """``enforce_restart``: restart crashed containers only as their restart policy's backoff and
        maxRetries allow (the long-running sources); ``apply`` from the CLI restarts them at once."""
        plan, desired, observed = self.plan(stackset, source=source, prune=prune, remove=remove,
                                            remove_volumes=remove_volumes, enforce_restart=enforce_restart)
        conflicts = self._port_conflicts(plan, desired)
        if conflicts:
            raise ReconcileError("host ports are not free; nothing was changed:\n  " + "\n  ".join(conflicts))
        waits = [d.wait_s for d in plan.deferred if d.wait_s is not None]
        requeue = min([REQUEUE_CONVERGED_S, *waits])
        if dry_run or not plan:
            if not dry_run and observed.interrupted:
                # the crashed apply's last steps had already converged: acknowledge it once
                self.inventory.close_journal()
            if not dry_run and self.upkeep is not None:
                self.upkeep(desired)
            return Result(bool(plan), plan, requeue)
        # digests only (safe to store): what the next plan's reasons compare against
        self._ledger.record({dc.config_hash: self._digests_of(dc) for dc in desired.containers.values()
                             if dc.spec.configs or dc.spec.secrets})
        opts = options or Options()
        ex = Executor(self.runtime, self.inventory, self.builder, desired, observed, opts, prober=self.prober,
                      network=self.network, updater=self.updater,
                      files=self.files_for)
        report = ex.run(plan)
        failures = tuple(report.failures)
        failed_stacks = sorted({f.stack for f in failures})
        for stack in sorted({a.stack for a in plan.actions} - set(failed_stacks)):
            if stack in desired.stacks:
                self.inventory.set_stack_status(stack, "applied")
        if observed.interrupted and not failures:
            self.inventory.close_journal()
        self.inventory.trim()
        rolled: list[str] = []
        rollback_plan = Plan()
        for stack in failed_stacks:
            msg = "; ".join(f.message for f in failures if f.stack == stack)
            prev = self._rollback_target(stack, desired, observed, report.generations, failures)
            if prev is None:
                self.inventory.set_stack_status(stack, "failed", msg)
                continue
            rb = self._rollback(stackset, stack, prev, source, opts)
            rollback_plan = Plan(rollback_plan.actions + rb.actions)
            rolled.append(stack)
            self.inventory.set_stack_status(stack, "rolled-back", f"{msg} (rolled back to generation {prev})")
            self.inventory.event(stack, stack, "rollback", f"restored generation {prev}: {msg}")
        if self.upkeep is not None:
            self.upkeep(desired)
        return Result(True, plan, min(REQUEUE_FAILED_S, requeue) if failures else requeue, failures,
                      tuple(rolled), rollback_plan)

    def _probe_due(self, desired: DesiredState, observed: ObservedState) -> int:
        """The loop's health monitoring: probe each running container whose last probe is older than
        its interval (failures inside startPeriod are not recorded); returns how many were probed."""
        prober = self.prober or Prober(self.runtime)
        n = 0
        for o in observed.all():
            dc = desired.containers.get(o.slot)
            hc = dc.spec.healthcheck if dc is not None else None
            if hc is None or o.state is None or o.status != "running" or \
                    observed.now - o.probe_time < hc.interval_s:
                continue
            ok, out = prober.probe(o.id, o.state, hc)
            n += 1
            if ok or observed.now - o.state.started_at >= hc.start_period_s:
                self.inventory.record_health(o.id, ok, out)
        return n

    def _rollback_target(self, stack: str, desired: DesiredState, observed: ObservedState,
                         generations: dict[str, int], failures: tuple[Failure, ...]) -> int | None:
        """The generation that was current before this pass, when this pass recorded a new one (the
        spec changed), the stack existed before, and every failed service asks for rollback."""
        ds = desired.stacks.get(stack)
        before = observed.snapshot_hashes.get(stack)
        if ds is None or stack not in generations or stack not in observed.stacks or before is None:
            return None
        names = {s.name for s in ds.model.services}
        wants = [ds.model.service(f.service).update.failure_action == "rollback"
                 for f in failures if f.stack == stack and f.service in names]
        if not wants or not all(wants):
            return None
        return before[0]

    def _rollback(self, stackset: StackSet, stack: str, generation: int, source: str,
                  opts: Options) -> Plan:
        gen = self.inventory.generation(stack, generation)
        if gen is None:
            return Plan()
        old = canonical.stack_from_snapshot(gen.snapshot)
        restored = replace(stackset, stacks=tuple(old if s.name == stack else s for s in stackset.stacks))
        plan, desired, observed = self.plan(restored, source=source, prune=True)
        plan = Plan(tuple(a for a in plan.actions if a.stack == stack))
        Executor(self.runtime, self.inventory, self.builder, desired, observed,
                 opts, prober=self.prober, network=self.network,
                 updater=self.updater, files=self.files_for).run(plan)
        return plan
