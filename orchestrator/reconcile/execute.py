"""Run a ``Plan`` through the Runtime protocol, journaling every step.

Crash safety rests on one ordering rule: the inventory record is written BEFORE ``runtime.create`` and
removed only AFTER ``runtime.delete`` returned, and each phase change is recorded after the runtime call
it follows. A ``kill -9`` between any two steps therefore leaves a record the next pass observes as
PENDING / CREATED / DELETING / a duplicate incarnation, and ``reconcile.diff`` turns that into a delete,
start or recreate: recovery is the ordinary level-triggered pass, not a special replay. The journal
(begin/done per action) says what was interrupted, for ``describe`` and the next run's events.

Each step calls ``on_step(n, what)``: the CLI's ``ORCHESTRATOR_FAULT_AFTER_STEP`` hook ``os._exit``s there.

Scheduling: setup and clean-up first, prune deletes by reversed dependency level, then one unit per
service; units run in a small thread pool (safe: the native runtime forks from its own fork server, never
from these threads), a unit first waits for the units it depends on and their condition
(started | healthy | completed). Replicas of a service are rolled one at a time, each gated on readiness.

Neighbours: ``reconcile.controller`` builds and calls it; ``reconcile.health`` probes;
``reconcile.bundle`` (the Builder) writes bundles; ``store.inventory`` records.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import groupby
from pathlib import Path
from typing import Any

from orchestrator.errors import ContainerNotFound, OrchestratorError, ReconcileError
from orchestrator.reconcile.actions import PHASE_PRUNE, PHASE_SERVICES, Action, Plan
from orchestrator.reconcile.contracts import Builder, Failure, NetworkHook, Options, Report
from orchestrator.reconcile.health import Prober, Readiness
from orchestrator.runtime.base import Runtime, Status
from orchestrator.runtime.files import FileSpec
from orchestrator.runtime.oci import restart_annotations
from orchestrator.state import canonical
from orchestrator.state.desired import DesiredContainer, DesiredState, container_id
from orchestrator.state.lifecycle import Phase, describe_exit
from orchestrator.state.observed import ObservedState
from orchestrator.store.inventory import ContainerRecord, Inventory

__all__ = ["Builder", "Executor", "Failure", "NetworkHook", "Options", "Report"]


class Executor:
    def __init__(self, runtime: Runtime, inventory: Inventory, builder: Builder, desired: DesiredState,
                 observed: ObservedState, options: Options | None = None, *, prober: Prober | None = None,
                 network: NetworkHook | None = None,
                 updater: Callable[[str, Mapping[str, Any]], None] | None = None,
                 files: Callable[[DesiredContainer], Sequence[FileSpec]] | None = None,
                 run_id: str = "") -> None:
        self.rt, self.inv, self.builder = runtime, inventory, builder
        self.desired, self.observed = desired, observed
        self.opts = options or Options()
        self.prober = prober or Prober(runtime)
        self.network = network
        self.updater = updater or getattr(runtime, "update", None)
        self.files = files
        self.run_id = run_id or secrets.token_hex(4)
        self.report = Report()
        self._step = 0
        self._seq = 0          # journal sequence: one per action (steps are finer)
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + self.opts.timeout_s
        self._failed_units: set[tuple[str, str]] = set()
        self._started: list[tuple[DesiredContainer, str, float]] = []
        # services some dependent waits on with condition "healthy": waited for even with --no-wait
        self._gating = {(ds.name, d.service) for ds in desired.stacks.values() for svc in ds.model.services
                        for d in svc.depends_on if d.condition == "healthy"}
        self._generations = {k: v[0] for k, v in observed.snapshot_hashes.items()}

    # -- bookkeeping --------------------------------------------------------------------------------

    def step(self, what: str) -> None:
        with self._lock:
            self._step += 1
            n = self._step
        if self.opts.on_step is not None:
            self.opts.on_step(n, what)

    def _say(self, text: str) -> None:
        if self.opts.progress is not None:
            self.opts.progress(text)

    # -- the plan -------------------------------------------------------------------------------------

    def run(self, plan: Plan) -> Report:
        by_phase = {p: [a for a in plan.actions if a.phase == p] for p in range(5)}
        for a in by_phase[0]:
            self._guard(a, self._setup)
        with ThreadPoolExecutor(max_workers=max(1, self.opts.workers), thread_name_prefix="apply") as pool:
            list(pool.map(lambda a: self._guard(a, self._delete_action), by_phase[1]))
            for _lvl, group in groupby(by_phase[PHASE_PRUNE], key=lambda a: a.level):
                list(pool.map(lambda a: self._guard(a, self._delete_action), list(group)))
            self._run_units(pool, by_phase[PHASE_SERVICES])
        if self.opts.wait:
            self._settle()
        failed_stacks = {f.stack for f in self.report.failures}
        for a in by_phase[4]:
            if a.stack not in failed_stacks:
                self._guard(a, self._forget)
        return self.report

    def _guard(self, a: Action, fn: Callable[[Action], None]) -> bool:
        with self._lock:
            self._seq += 1
            seq = self._seq
        self.inv.journal(self.run_id, seq, a.kind, a.target, "begin", a.reason)
        try:
            fn(a)
        except OrchestratorError as exc:
            self.report.failures.append(Failure(a.stack, a.service, a.target, str(exc)))
            self.inv.journal(self.run_id, seq, a.kind, a.target, "failed", str(exc))
            self.inv.event(a.stack, a.target, f"{a.kind}-failed", str(exc))
            self._say(f"x {a.target}  {a.kind} failed: {exc}")
            return False
        self.inv.journal(self.run_id, seq, a.kind, a.target, "done")
        if a.kind != "generation":
            self.inv.event(a.stack, a.target, a.kind, a.reason)
        self.report.done.append(a)
        self._say(a.line())
        return True

    def _run_units(self, pool: ThreadPoolExecutor, actions: list[Action]) -> None:
        futures: dict[tuple[str, str], Future[bool]] = {}
        units = [(k, list(g)) for k, g in groupby(actions, key=lambda a: (a.stack, a.service))]
        # submitted in level order, so a unit only ever waits on units submitted before it: no deadlock
        for key, unit in units:
            futures[key] = pool.submit(self._unit, key, unit, futures)
        for f in futures.values():
            f.result()

    def _unit(self, key: tuple[str, str], unit: list[Action], futures: Mapping[tuple[str, str], Future[bool]]
              ) -> bool:
        stack, service = key
        for dep, cond in unit[0].after:
            fut = futures.get((stack, dep))
            ok = fut.result() if fut is not None else True
            why = "" if ok else f"dependency {stack}/{dep} failed"
            if ok:
                why = self._condition(stack, dep, cond)
            if why:
                self._failed_units.add(key)
                self.report.failures.append(Failure(stack, service, f"{stack}/{service}", why))
                self._say(f"x {stack}/{service}  skipped: {why}")
                return False
        for a in unit:
            if not self._guard(a, self._service_action):
                self._failed_units.add(key)
                return False
        return True

    # -- actions --------------------------------------------------------------------------------------

    def _setup(self, a: Action) -> None:
        if a.kind == "generation":
            ds = self.desired.stacks[a.stack]
            self._generations[a.stack] = self.inv.record_generation(a.stack, ds.snapshot_hash, ds.snapshot,
                                                                    self.desired.source)
            self.report.generations[a.stack] = self._generations[a.stack]
        else:
            name = a.target.split("volume:", 1)[1]
            path = self.builder.volume_path(a.stack, name)
            from orchestrator.store.inventory import VolumeRecord
            self.inv.add_volume(VolumeRecord(a.stack, name, str(path)))   # recorded before it exists
            self.step(f"record volume {a.target}")
            self.builder.make_volume(path)
            self.step(f"make volume {a.target}")

    def _forget(self, a: Action) -> None:
        if a.kind == "volume-delete":
            name = a.target.split("volume:", 1)[1]
            rec = next((v for (s, n), v in self.observed.volumes.items() if (s, n) == (a.stack, name)), None)
            if rec is not None:
                self.builder.remove_volume(Path(rec.path))
                self.step(f"remove volume {a.target}")
            self.inv.remove_volume(a.stack, name)
        else:
            if self.network is not None:
                self.network.forget_stack(a.stack)
            self.inv.remove_stack(a.stack)
        self.step(f"{a.kind} {a.target}")

    def _service_action(self, a: Action) -> None:
        if a.kind == "delete":
            self._delete_action(a)
            return
        dc = self.desired.containers[a.target]
        if a.kind == "create":
            cid = self._create(dc)
            self._await_ready(dc, cid)
        elif a.kind == "start":
            self._start(dc, a.container_id)
            self._await_ready(dc, a.container_id)
        elif a.kind == "update":
            self._update(dc, a)
        elif a.kind == "recreate":
            if a.order == "start-first":
                cid = self._create(dc, a.restarts)
                self._await_ready(dc, cid)
                self._delete(a.container_id, dc.spec.stop_signal, dc.spec.stop_grace_period_s)
            else:
                self._delete(a.container_id, dc.spec.stop_signal, dc.spec.stop_grace_period_s)
                cid = self._create(dc, a.restarts)
                self._await_ready(dc, cid)

    def _delete_action(self, a: Action) -> None:
        dc = self.desired.containers.get(a.target)
        if dc is not None:
            self._delete(a.container_id, dc.spec.stop_signal, dc.spec.stop_grace_period_s)
            return
        # a removed service: stop it the way its last applied generation said
        sig, grace = "SIGTERM", 10.0
        rec = next((o.record for o in self.observed.containers.get(a.target, ()) if o.id == a.container_id),
                   None)
        snap = self.observed.snapshot(rec.stack, rec.generation) if rec else None
        old = canonical.service_plain(snap, rec.service) if snap and rec else None
        if old is not None:
            sig, grace = str(old.get("stop_signal") or sig), float(old.get("stop_grace_period_s", grace))
        self._delete(a.container_id, sig, grace)

    def _create(self, dc: DesiredContainer, restarts: int = 0) -> str:
        cid = container_id(dc.stack, dc.service, dc.replica, secrets.token_hex(3))
        gen = self._generations.get(dc.stack, 0)
        self.inv.add_container(ContainerRecord(cid, dc.slot, dc.stack, dc.service, dc.replica, dc.spec_hash,
                                               dc.resources_hash, dc.config_hash, dc.image, dc.image_id, gen,
                                               Phase.CREATING, restarts))
        self.step(f"record {cid}")
        try:
            netns = self.network.netns_for(dc) if self.network is not None else ""
            bundle, rootfs = self.builder.prepare(dc, cid, netns)
            specs = self.files(dc) if self.files is not None else ()
            if specs:
                # configs/secrets travel in memory to the container's init (not part of the protocol yet)
                st = self.rt.create(cid, bundle, rootfs, files=specs)  # type: ignore[call-arg]
            else:
                st = self.rt.create(cid, bundle, rootfs)
            self.step(f"create {cid}")
            if self.network is not None:
                # the namespace exists and the process waits to exec: plumb it before it runs
                self.network.attach(dc, cid, st.pid or self.rt.state(cid).pid)
                self.step(f"attach {cid}")
            self.inv.set_phase(cid, Phase.CREATED)
            self._start(dc, cid)
        except OrchestratorError as exc:
            # the undo of a failed create: nothing half-made stays behind (a crash instead of an error
            # leaves the record, and the next pass does the same from there)
            try:
                self._delete(cid, "SIGKILL", 0.0)
            except OrchestratorError as undo_exc:
                exc.add_note(f"cleaning up {cid} also failed: {undo_exc}")
            raise ReconcileError(f"{dc.slot}: {exc}") from exc
        return cid

    def _start(self, dc: DesiredContainer, cid: str) -> None:
        self.rt.start(cid)
        self.step(f"start {cid}")
        self.inv.set_phase(cid, Phase.RUNNING)
        with self._lock:
            self._started.append((dc, cid, time.monotonic()))

    def _update(self, dc: DesiredContainer, a: Action) -> None:
        if a.resources:
            if self.updater is None:
                raise ReconcileError(f"{a.target}: runtime {self.rt.name} cannot change limits in place")
            self.updater(a.container_id, self.builder.resources(dc))
            self.step(f"update {a.container_id}")
        # the restart policy, for runtimes whose supervisor restarts (the others are restarted by the
        # reconciler from dc.spec); a no-op when it did not change
        update_restart = getattr(self.rt, "update_restart", None)
        if update_restart is not None and update_restart(a.container_id, restart_annotations(dc.spec)):
            self.step(f"restart policy {a.container_id}")
        if (dc.spec.configs or dc.spec.secrets) and self.files is not None:
            self._rotate_files(dc, a.container_id)
        self.inv.update_hashes(a.container_id, resources_hash=dc.resources_hash, config_hash=dc.config_hash,
                               generation=self._generations.get(dc.stack, 0))

    def _rotate_files(self, dc: DesiredContainer, cid: str) -> None:
        """Rewrite changed config/secret files in place (``onChange: signal|none``), then signal."""
        assert self.files is not None
        rotate = getattr(self.rt, "update_files", None)
        if rotate is None:
            raise ReconcileError(f"{dc.slot}: runtime {self.rt.name} cannot rewrite configs/secrets in place")
        changed = rotate(cid, self.files(dc))
        self.step(f"rotate files {cid}")
        if not changed:
            return
        for fm in (*dc.spec.configs, *dc.spec.secrets):
            if fm.on_change == "signal" and fm.signal and fm.target in changed:
                self.rt.kill(cid, int(getattr(signal, fm.signal, signal.SIGHUP)))

    def _delete(self, cid: str, stop_signal: str, grace_s: float) -> None:
        """Stop gracefully, delete (idempotent), drop the bundle, then forget the record."""
        self.inv.set_phase(cid, Phase.DELETING)
        self.step(f"mark {cid} deleting")
        try:
            st = self.rt.state(cid)
        except ContainerNotFound:
            st = None
        if st is not None and st.status == Status.RUNNING:
            sig = getattr(signal, stop_signal, signal.SIGTERM)
            self.rt.kill(cid, int(sig))
            with contextlib.suppress(ContainerNotFound):   # it may be reaped and gone already
                self.rt.wait(cid, timeout=grace_s)
        self.rt.delete(cid, force=True)
        self.step(f"delete {cid}")
        if self.network is not None:
            self.network.detach(cid)
            self.step(f"detach {cid}")
        self.builder.cleanup(cid)
        self.inv.remove_container(cid)
        self.step(f"forget {cid}")

    # -- waiting --------------------------------------------------------------------------------------

    def _settle(self) -> None:
        """A process that dies right after exec looks "running" when start returns: give every container
        started in this pass ``settle_s`` of life before calling the pass converged."""
        if not self._started:
            return
        newest = max(t for _dc, _cid, t in self._started)
        time.sleep(max(0.0, newest + self.opts.settle_s - time.monotonic()))
        failed = {(f.stack, f.service) for f in self.report.failures}
        for dc, cid, _t in self._started:
            if (dc.stack, dc.service) in failed:
                continue
            try:
                st = self.rt.state(cid)
            except ContainerNotFound:
                continue                     # replaced meanwhile (rolling update)
            if st.status != Status.STOPPED:
                continue
            if st.exit_code == 0 and not st.exit_signal and dc.spec.restart.policy != "always":
                continue                     # a job that completed
            msg = f"{dc.slot}: {describe_exit(st)} right after starting{self._last_logs(cid)}"
            self.report.failures.append(Failure(dc.stack, dc.service, dc.slot, msg))
            self.inv.event(dc.stack, dc.slot, "start-failed", msg)
            self._say(f"x {dc.slot}  {msg}")

    def _await_ready(self, dc: DesiredContainer, cid: str) -> None:
        """Running (and healthy, when it has a probe); a job that exited 0 also counts."""
        needs_health = self.opts.wait or dc.spec.update.order == "start-first" or \
            (dc.stack, dc.service) in self._gating
        if not needs_health:
            return
        hc = dc.spec.healthcheck
        ready = Readiness(hc, time.monotonic()) if hc else None
        while True:
            st = self.rt.state(cid)
            if st.status == Status.STOPPED:
                if st.exit_code == 0 and not st.exit_signal and dc.spec.restart.policy != "always":
                    return
                raise ReconcileError(f"{dc.slot}: {describe_exit(st)}{self._last_logs(cid)}")
            if ready is None:
                return
            assert hc is not None
            ok, out = self.prober.probe(cid, st, hc)
            verdict = ready.observe(ok, out)
            if verdict != "starting":
                self.inv.record_health(cid, ok, out)
            if verdict == "healthy":
                return
            if verdict == "unhealthy":
                raise ReconcileError(f"{dc.slot}: unhealthy after {ready.failures} failed probes: {out}"
                                     f"{self._last_logs(cid)}")
            if time.monotonic() > self._deadline:
                raise ReconcileError(f"{dc.slot}: timed out waiting to become healthy; last probe: {out}"
                                     f"{self._last_logs(cid)}")
            time.sleep(ready.cadence_s())

    def _condition(self, stack: str, dep: str, cond: str) -> str:
        """'' when dependency ``dep`` meets ``cond`` (waiting for ``completed``), else why not."""
        if cond != "completed":
            return ""       # started/healthy: the dependency's own unit already waited for that
        cids = [o.id for cs in self.observed.containers.values() for o in cs
                if o.record.stack == stack and o.record.service == dep]
        cids += [r.id for r in self.inv.containers(stack) if r.service == dep and r.id not in cids]
        for cid in cids:
            while True:
                try:
                    st = self.rt.state(cid)
                except ContainerNotFound:
                    break
                if st.status == Status.STOPPED:
                    if st.exit_code != 0 or st.exit_signal:
                        return f"dependency {stack}/{dep} did not complete: {describe_exit(st)}"
                    break
                if time.monotonic() > self._deadline:
                    return f"timed out waiting for {stack}/{dep} to complete"
                time.sleep(0.05)
        return ""

    def _last_logs(self, cid: str, n: int = 5) -> str:
        try:
            lines = list(self.rt.logs(cid))[-n:]
        except OrchestratorError:
            return ""
        return "".join(f"\n    | {ln.text.rstrip()}" for ln in lines) if lines else ""
