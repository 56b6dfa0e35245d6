"""Stack verbs: apply, diff/plan, get/ps, describe, logs, delete/down (exec and stats: ``container_cmds``).

Exit codes: 0 converged / no changes; 2 from ``diff``/``plan``/``apply --dry-run`` when there are
changes; 1 on error (a failed apply names what failed and why). Mutating verbs take the apply lock
(``--wait-lock`` waits for it). Progress goes to stderr when it is a terminal. The test-only fault hook
``ORCHESTRATOR_FAULT_AFTER_STEP=N`` makes apply ``os._exit(137)`` after step N (crash-safety tests).

Neighbours: ``reconcile.session`` (wiring), ``reconcile.controller`` (the pass), ``orchestrator.manifest``
(loading), ``cli.context`` (output).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.cli.context import Context
from orchestrator.errors import ContainerNotFound, UsageError
from orchestrator.secrets.redact import scrub

if TYPE_CHECKING:  # the heavy modules load inside the handlers: other verbs never pay for them
    from orchestrator.manifest.model import StackSet
    from orchestrator.reconcile.controller import Result
    from orchestrator.reconcile.execute import Options
    from orchestrator.reconcile.session import Session
    from orchestrator.settings import Settings
    from orchestrator.sources.watch import PassOutcome
    from orchestrator.state.observed import ObservedContainer

FAULT_ENV = "ORCHESTRATOR_FAULT_AFTER_STEP"


def _duration(text: str) -> float:
    """Durations as manifests write them (``500ms``, ``90s``, ``1m30s``, or bare seconds)."""
    from orchestrator.manifest.units import parse_duration
    try:
        return parse_duration(float(text) if text.replace(".", "", 1).isdigit() else text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 90s, 5m, 1m30s)") from exc


def register(sub: Any) -> None:
    def files(p: argparse.ArgumentParser) -> None:
        p.add_argument("-f", "--filename", dest="paths", action="append", required=True, metavar="PATH",
                       help="manifest file or directory (recursive); repeatable")

    for verb, helptext in (("apply", "make the host match the manifests"),
                           ("diff", "show what apply would change (exit 2 if anything)"),
                           ("plan", "same as diff")):
        p = sub.add_parser(verb, help=helptext)
        files(p)
        p.add_argument("--prune", action=argparse.BooleanOptionalAction, default=True,
                       help="remove services/stacks no longer in these manifests (default on)")
        if verb == "apply":
            p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
            p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                           help="wait until running and healthy (default on)")
            p.add_argument("--timeout", type=_duration, default=300.0, help="how long to wait (5m)")
            p.add_argument("--wait-lock", action="store_true", help="wait for another apply to finish")
        p.set_defaults(func=apply_cmd, dry_run=verb != "apply")
    for verb in ("get", "ps"):
        p = sub.add_parser(verb, help="list containers: stack, service, replica, state, health, ...")
        p.add_argument("stack", nargs="?", default=None)
        p.set_defaults(func=ps_cmd)
    p = sub.add_parser("describe", help="spec, replicas, events, last exit, probe history of a service")
    p.add_argument("service", help="SERVICE or STACK/SERVICE")
    p.set_defaults(func=describe_cmd)
    p = sub.add_parser("logs", help="logs of a service's replicas or one container")
    p.add_argument("target", help="SERVICE, STACK/SERVICE, STACK/SERVICE-N or a container id")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--since", type=_duration, default=None, help="only lines newer than this (10m)")
    p.set_defaults(func=logs_cmd)
    p = sub.add_parser("delete", help="delete the stacks defined in the manifests")
    files(p)
    p.add_argument("--volumes", action="store_true", help="also delete their named volumes")
    p.add_argument("--wait-lock", action="store_true")
    p.set_defaults(func=down_cmd, stacks=None)
    p = sub.add_parser("down", help="delete stacks (named volumes kept unless --volumes)")
    p.add_argument("stacks", nargs="+", metavar="STACK")
    p.add_argument("--volumes", action="store_true")
    p.add_argument("--wait-lock", action="store_true")
    p.set_defaults(func=down_cmd, paths=None)


def _source(paths: list[str]) -> str:
    return "files:" + ",".join(sorted(str(Path(p).absolute()) for p in paths))


def _options(args: argparse.Namespace | None) -> Options:
    from orchestrator.reconcile.execute import Options
    progress = (lambda line: print(scrub(line), file=sys.stderr, flush=True)) if sys.stderr.isatty() \
        else None
    fault = os.environ.get(FAULT_ENV, "")
    on_step = None
    if fault.isdigit():
        after = int(fault)

        def on_step(n: int, what: str) -> None:
            if n == after:
                print(f"fault injected after step {n}: {what}", file=sys.stderr, flush=True)
                os._exit(137)
    return Options(wait=getattr(args, "wait", True), timeout_s=getattr(args, "timeout", 300.0),
                   on_step=on_step, progress=progress)


def _report(ctx: Context, result: Result, dry_run: bool) -> int:
    data = {**result.plan.to_dict(), "failures": [f.__dict__ for f in result.failures],
            "rolled_back": list(result.rolled_back)}
    if ctx.output != "table":
        ctx.emit(data)
    elif dry_run or not sys.stderr.isatty():
        ctx.emit(None, text=str(result.plan))
    if result.failures:
        for f in result.failures:
            print(scrub(f"error: {f.target}: {f.message}"), file=sys.stderr)
        for stack in result.rolled_back:
            print(f"{stack}: rolled back to the previous generation", file=sys.stderr)
        return 1
    if dry_run:
        return 2 if result.plan else 0
    if ctx.output == "table" and result.plan:
        print(f"applied: {result.plan.summary()}", file=sys.stderr)
    return 0


def _session(ctx: Context) -> Session:
    from orchestrator.reconcile.session import Session
    return Session(ctx.settings)


def _lock(ctx: Context, wait: bool) -> Any:
    from orchestrator.store.lock import ApplyLock
    return ApplyLock(ctx.settings.root, wait=wait)


def apply_cmd(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator.cli.inputs import load_inputs
    stackset = load_inputs(args.paths)
    with _session(ctx) as s:
        if args.dry_run:
            result = s.controller.reconcile_once(stackset, source=_source(args.paths), prune=args.prune,
                                                 dry_run=True)
            return _report(ctx, result, True)
        with _lock(ctx, args.wait_lock):
            result = s.controller.reconcile_once(stackset, source=_source(args.paths), prune=args.prune,
                                                 options=_options(args))
        return _report(ctx, result, False)


_SESSIONS: dict[Settings, Session] = {}


def apply_stackset(ctx: Context, stackset: StackSet, *, prune: bool = True, prune_stacks: Sequence[str] = (),
                   only_stacks: set[str] | None = None, source: str | None = None) -> PassOutcome:
    """One reconcile pass for the long-running sources (watch, gitops), under the apply lock (waiting
    for a concurrent CLI apply). The session, and so the runtime's fork server, lives as long as the
    process. ``prune_stacks``: stacks to delete; ``only_stacks``: reconcile just these (the others are
    left as they are); ``source``: the prune scope for whole stacks (``source_for(paths)``); without
    it, stacks are only ever deleted through ``prune_stacks``."""
    import atexit

    from orchestrator.sources.watch import PassOutcome
    s = _SESSIONS.get(ctx.settings)
    if s is None:
        s = _SESSIONS[ctx.settings] = _session(ctx)
        atexit.register(s.close)
    if only_stacks is not None:
        stackset = replace(stackset, stacks=tuple(st for st in stackset.stacks if st.name in only_stacks))
        source = None           # a partial set must never prune the stacks it leaves out
    with _lock(ctx, True):
        result = s.controller.reconcile_once(stackset, source=source or "", prune=prune,
                                             remove=frozenset(prune_stacks), options=_options(None),
                                             enforce_restart=True)
    msg = "; ".join(f"{f.target}: {f.message}" for f in result.failures) or result.plan.summary()
    return PassOutcome(ok=result.ok, changed=len(result.plan), message=msg)


def source_for(paths: Sequence[str | Path]) -> str:
    """The prune scope of a set of ``-f`` paths (stacks last applied from the same paths are ours)."""
    return _source([str(p) for p in paths])


def down_cmd(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator.manifest.model import StackSet
    names = set(args.stacks or ())
    if args.paths:
        from orchestrator.cli.inputs import load_inputs
        names |= {st.name for st in load_inputs(args.paths).stacks}
    with _session(ctx) as s, _lock(ctx, args.wait_lock):
        known = {st.name for st in s.inventory.stacks()} | {r.stack for r in s.inventory.containers()}
        unknown = sorted(names - known)
        if unknown:
            raise UsageError(f"no such stack: {', '.join(unknown)}")
        result = s.controller.reconcile_once(StackSet(), prune=False, remove=frozenset(names),
                                             remove_volumes=args.volumes, options=_options(args))
        return _report(ctx, result, False)


def _age(t: float) -> str:
    s = max(0, int(time.time() - t))
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h" if s < 172800 else \
        f"{s // 86400}d"


def _observed(s: Session, stack: str | None = None) -> list[ObservedContainer]:
    from orchestrator.state.observed import observe
    obs = observe(s.inventory, s.runtime)
    return [o for o in obs.all() if stack is None or o.record.stack == stack]


def _ports(s: Session) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for st in s.inventory.stacks():
        gen = s.inventory.generation(st.name, st.generation)
        for svc in json.loads(gen.snapshot)["services"] if gen else ():
            ports = [f"{p['host_ip'] + ':' if p['host_ip'] else ''}{p['host_port']}:{p['container_port']}/"
                     f"{p['protocol']}" for p in svc.get("ports") or ()]
            out[(st.name, svc["name"])] = ",".join(ports)
    return out


def ps_cmd(args: argparse.Namespace, ctx: Context) -> int:
    with _session(ctx) as s:
        ports = _ports(s)
        rows = []
        for o in _observed(s, args.stack):
            r = o.record
            health = "-" if o.healthy is None else "healthy" if o.healthy else "unhealthy"
            # recreates by the reconciler + in-place restarts by the runtime's supervisor
            in_place = (o.state.annotations if o.state else {}).get("org.orchestrator.restarts", "0")
            restarts = r.restarts + (int(in_place) if in_place.isdigit() else 0)
            rows.append({"stack": r.stack, "service": r.service, "replica": r.replica, "id": r.id,
                         "state": str(o.status), "health": health, "restarts": restarts,
                         "age": _age(r.created_at), "image": r.image,
                         "ports": ports.get((r.stack, r.service), "")})
    keys = ("stack", "service", "replica", "state", "health", "restarts", "age", "image", "ports")
    ctx.emit(rows, headers=keys, rows=[[row[k] for k in keys] for row in rows])
    return 0


def _select(s: Session, target: str) -> list[ObservedContainer]:
    """SERVICE, STACK/SERVICE, STACK/SERVICE-N (a slot) or a container id -> its containers."""
    found = []
    for o in _observed(s):
        r = o.record
        if target in (r.id, r.slot, f"{r.stack}/{r.service}", r.service):
            found.append(o)
    stacks = {o.record.stack for o in found}
    if not found:
        raise UsageError(f"no container or service {target!r} (see 'orchestrator ps')")
    if len(stacks) > 1:
        raise UsageError(f"{target!r} is in several stacks ({', '.join(sorted(stacks))}); use STACK/SERVICE")
    return sorted(found, key=lambda o: (o.record.replica, o.record.created_at))


def describe_cmd(args: argparse.Namespace, ctx: Context) -> int:
    with _session(ctx) as s:
        found = _select(s, args.service)
        r0 = found[0].record
        gen = s.inventory.generation(r0.stack, r0.generation)
        spec: dict[str, Any] = {}
        if gen is not None:
            spec = next((x for x in json.loads(gen.snapshot)["services"] if x["name"] == r0.service), {})
        replicas: list[dict[str, Any]] = []
        for o in found:
            st = o.state
            replicas.append({
                "slot": o.slot, "id": o.id, "state": str(o.status), "phase": o.record.phase,
                "pid": st.pid if st else 0, "exit_code": st.exit_code if st else None,
                "exit_signal": st.exit_signal if st else None, "oom_killed": st.oom_killed if st else False,
                "why": _why(o), "probes": [{"time": h.time, "ok": h.ok, "output": h.output}
                                           for h in s.inventory.health(o.id, 5)]})
        events: list[dict[str, Any]] = [
            {"time": e.time, "object": e.object, "reason": e.reason, "message": e.message}
            for e in s.inventory.events(objects=[o.slot for o in found] + [r0.stack], limit=20)]
    data = {"stack": r0.stack, "service": r0.service, "generation": r0.generation, "spec": spec,
            "replicas": replicas, "events": events}
    lines = [f"service {r0.stack}/{r0.service} (generation {r0.generation})"]
    for rep in replicas:
        lines.append(f"  {rep['slot']}  {rep['id']}  {rep['state']}: {rep['why']}")
        lines += [f"    probe {'ok  ' if p['ok'] else 'FAIL'} {_stamp(p['time'])} {p['output']}"
                  for p in rep["probes"]]
    lines.append("events:")
    lines += [f"  {_stamp(e['time'])}  {e['object']}  {e['reason']}: {e['message']}" for e in events]
    lines.append("spec:")
    lines += [f"  {k}: {json.dumps(v)}" for k, v in spec.items() if v not in (None, [], {}, "")]
    ctx.emit(data, text="\n".join(lines))
    return 0


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _why(o: ObservedContainer) -> str:
    st = o.state
    if o.status == "running":
        return f"running since {_stamp(st.started_at)}" if st and st.started_at else "running"
    if o.status == "exited" and st is not None:
        from orchestrator.state.lifecycle import describe_exit
        return f"{describe_exit(st)} at {_stamp(st.finished_at)}" if st.finished_at else describe_exit(st)
    return {"missing": "recorded but gone from the runtime (deleted or lost outside the orchestrator)",
            "pending": "recorded but never created (an apply was interrupted)",
            "created": "created but never started (an apply was interrupted)",
            "deleting": "a delete was interrupted; the next apply finishes it"}.get(str(o.status),
                                                                                  str(o.status))


def logs_cmd(args: argparse.Namespace, ctx: Context) -> int:
    with _session(ctx) as s:
        found = _select(s, args.target)
        since = time.time() - args.since if args.since else 0.0
        prefix = len(found) > 1
        for o in found:
            try:
                for line in s.runtime.logs(o.id, since=since, follow=args.follow and len(found) == 1):
                    out = sys.stdout if line.stream == "stdout" else sys.stderr
                    out.write(f"{o.slot} | {line.text}" if prefix else line.text)
                    if not line.text.endswith("\n"):
                        out.write("\n")
                    out.flush()
            except ContainerNotFound:
                continue
    return 0
