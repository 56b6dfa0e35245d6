"""``watch`` and ``gitops``: the two long-running ways to keep a host reconciled.

Both build a pass function over the manifest loader and the reconciler, and hand it to the sources'
loop (``sources.watch.run_loop``): events only wake the loop; each pass reloads and re-observes
everything. SIGINT/SIGTERM stop the loop gracefully; containers keep running.

Neighbours: ``sources.watch``, ``sources.gitops``; ``cli.stack_cmds`` provides ``apply_stackset``,
the same code path ``orchestrator apply`` uses.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from orchestrator import logs
from orchestrator.cli.context import Context
from orchestrator.errors import ManifestError, OrchestratorError, UsageError
from orchestrator.manifest import load
from orchestrator.manifest.model import StackSet
from orchestrator.manifest.units import parse_duration
from orchestrator.sources.gitops import GitOpsSource, GitSourceSpec, StatusStore, Verification
from orchestrator.sources.watch import PassOutcome, Waker, run_loop, start_observer

log = logs.get("cli.sources")


def register(sub: Any) -> None:
    w = sub.add_parser("watch", help="apply manifests now and again on every change (and every resync)")
    w.add_argument("-f", "--file", dest="files", action="append", required=True, help="file or directory")
    w.add_argument("--resync", default="30s", help="periodic full pass even without events (default 30s)")
    w.add_argument("--debounce", default="100ms", help="quiet time before a pass after events")
    w.add_argument("--poll", action="store_true", help="poll instead of inotify")
    w.add_argument("--prune", action=argparse.BooleanOptionalAction, default=True)
    w.set_defaults(func=cmd_watch)

    g = sub.add_parser("gitops", help="apply stacks from git repositories, keeping the last good revision")
    g.add_argument("--repo", help="repository URL (file://, ssh, https)")
    g.add_argument("--ref", default="main")
    g.add_argument("--path", default="", help="directory of manifests inside the repository")
    g.add_argument("--name", default="", help="source name (default: derived from the repo)")
    g.add_argument("--interval", default="1m")
    g.add_argument("--resync", default="5m", help="re-apply the whole revision this often (heals drift)")
    g.add_argument("--config", help="YAML file listing several sources (see docs/gitops.md)")
    g.add_argument("--once", action="store_true", help="one pass over every source, then exit")
    g.add_argument("--status", action="store_true", help="show each source's revision and result")
    g.add_argument("--rollback", action="store_true", help="re-apply the last good revision on failure")
    g.add_argument("--allowed-signers", default="", help="only apply commits signed by these ssh keys")
    g.add_argument("--gnupg-home", default="", help="only apply commits signed by keys in this keyring")
    g.add_argument("--webhook", default="", help="ADDR:PORT to listen on; a POST triggers a fetch")
    g.set_defaults(func=cmd_gitops)


def _stop_on_signals(waker: Waker) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        waker.stop()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _applier(ctx: Context, prune: bool, source: str | None = None) -> Any:
    """The reconcile pass both loops share: the same code path as ``orchestrator apply``.
    ``source`` scopes whole-stack prune (watch: stacks last applied from the same paths)."""
    from orchestrator.cli.stack_cmds import apply_stackset

    def apply(stackset: StackSet, *, prune_stacks: Sequence[str] = (),
              only_stacks: set[str] | None = None) -> PassOutcome:
        return apply_stackset(ctx, stackset, prune=prune, prune_stacks=prune_stacks,
                              only_stacks=only_stacks, source=source)
    return apply


def cmd_watch(args: argparse.Namespace, ctx: Context) -> int:
    paths = [Path(p) for p in args.files]
    for p in paths:
        if not p.exists():
            raise UsageError(f"{p}: no such file or directory")
    from orchestrator.cli.stack_cmds import source_for
    from orchestrator.store import open_store
    apply = _applier(ctx, args.prune, source_for(paths))
    inventory = open_store(ctx.settings.db_path)   # read-only here: the events of each pass's changes
    shown_problems: list[str] = []                   # the invalid edit last reported (not every resync)
    shown_failure = [""]                             # the failed pass last reported

    def one_pass(trigger: str) -> PassOutcome:
        try:
            stackset = load(paths)
        except ManifestError as exc:
            # an invalid edit never tears anything down: report and keep the last good state
            problems = [str(p) for p in exc.problems]
            if problems != shown_problems:
                for problem in problems:
                    print(f"error: {problem}", file=sys.stderr)
                print("invalid manifests: nothing changed; waiting for the next save", file=sys.stderr)
                shown_problems[:] = problems
            return PassOutcome(ok=False, message=f"{len(exc.problems)} problems")
        shown_problems.clear()
        started = time.time()
        try:
            out: PassOutcome = apply(stackset)
        except OrchestratorError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return PassOutcome(ok=False, message=str(exc))
        if out.changed:
            print(f"{trigger}: {out.message or f'{out.changed} changes applied'}", file=sys.stderr)
            # what differed, per object (on a resync these are the drifts healed): the executor's events
            for ev in inventory.events(limit=100):
                if ev.time >= started:
                    print(f"{trigger}: {ev.object} {ev.reason}: {ev.message}", file=sys.stderr)
        elif not out.ok and out.message != shown_failure[0]:
            print(f"{trigger}: {out.message}", file=sys.stderr)   # once, not on every resync retry
        shown_failure[0] = "" if out.ok else out.message
        return out

    waker = Waker()
    _stop_on_signals(waker)
    observer = start_observer(paths, waker, polling=args.poll)
    try:
        run_loop(one_pass, waker, resync_s=parse_duration(args.resync),
                 debounce_s=parse_duration(args.debounce))
    finally:
        observer.stop()
        observer.join(timeout=5)
    return 0


_ENTRY_KEYS = {"name", "url", "ref", "path", "interval", "resync", "rollback", "verify"}
_VERIFY_KEYS = {"gnupgHome", "allowedSigners", "allowedFingerprints"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def _duration(where: str, value: object) -> float:
    try:
        return parse_duration(value if isinstance(value, int | float) else str(value))
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from exc


def _source_name(where: str, name: str) -> str:
    # the name is a file name under <root>/gitops/: never a path
    if not _NAME.fullmatch(name):
        raise UsageError(f"{where}: source name {name!r} must match {_NAME.pattern}")
    return name


def _entry(where: str, e: object) -> GitSourceSpec:
    """One ``sources[i]`` of a config file (docs/gitops.md); unknown keys are refused (typos)."""
    if not isinstance(e, dict) or not e.get("url") or not e.get("name"):
        raise UsageError(f"{where}: needs 'name' and 'url'")
    unknown = sorted(set(e) - _ENTRY_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown keys {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(_ENTRY_KEYS))})")
    v = e.get("verify") or {}
    if not isinstance(v, dict) or set(v) - _VERIFY_KEYS:
        raise UsageError(f"{where}.verify: expected a mapping of {', '.join(sorted(_VERIFY_KEYS))}")
    fprs = v.get("allowedFingerprints", ())
    if not isinstance(fprs, list | tuple):
        raise UsageError(f"{where}.verify.allowedFingerprints: expected a list")
    return GitSourceSpec(
        name=_source_name(where, str(e["name"])), url=str(e["url"]), ref=str(e.get("ref", "main")),
        path=str(e.get("path", "")), interval_s=_duration(f"{where}.interval", e.get("interval", "1m")),
        resync_s=_duration(f"{where}.resync", e.get("resync", "5m")), rollback=bool(e.get("rollback")),
        verify=Verification(gnupg_home=str(v.get("gnupgHome", "")),
                            allowed_signers=str(v.get("allowedSigners", "")),
                            allowed_fingerprints=tuple(str(f) for f in fprs)) if v else None)


def _specs(args: argparse.Namespace) -> list[GitSourceSpec]:
    if args.config:
        try:
            data = yaml.safe_load(Path(args.config).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"{args.config}: {exc}") from exc
        entries = data.get("sources") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            raise UsageError(f"{args.config}: expected a mapping with a non-empty 'sources' list")
        specs = [_entry(f"{args.config}: sources[{i}]", e) for i, e in enumerate(entries)]
        names = [s.name for s in specs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UsageError(f"{args.config}: source names must be unique: {', '.join(dup)}")
        return specs
    if not args.repo:
        raise UsageError("gitops needs --repo URL or --config FILE")
    # derived: the last path part of the URL (also of scp-like git@host:org/repo.git), made file-safe
    derived = re.sub(r"[^A-Za-z0-9_.-]", "-", re.split(r"[/:]", args.repo.rstrip("/"))[-1])
    name = args.name or derived.removesuffix(".git").lstrip("-.") or "repo"
    verify = (Verification(gnupg_home=args.gnupg_home, allowed_signers=args.allowed_signers)
              if args.gnupg_home or args.allowed_signers else None)
    return [GitSourceSpec(name=_source_name("--name", name), url=args.repo, ref=args.ref, path=args.path,
                          interval_s=_duration("--interval", args.interval),
                          resync_s=_duration("--resync", args.resync), verify=verify, rollback=args.rollback)]


def _webhook(addr: str, waker: Waker) -> ThreadingHTTPServer:
    host, _, port = addr.rpartition(":")

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            # the body (a forge's push payload) carries nothing we use: drain it, bounded, then wake
            raw = self.headers.get("Content-Length") or "0"
            length = min(int(raw), 1 << 20) if raw.isdigit() else 0
            if length > 0:
                self.rfile.read(length)
            waker.poke()
            self.send_response(202)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("webhook", client=self.client_address[0])

    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def cmd_gitops(args: argparse.Namespace, ctx: Context) -> int:
    statuses = StatusStore(ctx.settings.root)
    if args.status:
        rows = [asdict(s) for s in statuses.all()]
        ctx.emit(rows, headers=("source", "revision", "result", "stacks", "message"),
                 rows=[(r["name"], r["applied_commit"][:12], r["result"], ",".join(r["stacks"]),
                        r["message"].splitlines()[0] if r["message"] else "") for r in rows])
        return 0
    specs = _specs(args)
    apply = _applier(ctx, True)
    sources = [GitOpsSource(s, ctx.settings.root / "gitops-cache", statuses, load, apply) for s in specs]
    last_full: dict[str, float] = {}
    shown: dict[str, tuple[str, str, str]] = {}      # per source: the outcome last printed

    def one_pass(trigger: str) -> PassOutcome:
        ok, changed, messages = True, 0, []
        for src in sources:
            now = time.monotonic()
            last = last_full.get(src.spec.name)
            full = last is None or now - last >= src.spec.resync_s
            st = src.sync(full=full)
            if full:
                last_full[src.spec.name] = now      # a refused or failed commit is retried per resync
            ok = ok and st.result in ("applied", "unchanged")
            changed += st.result == "applied"
            seen = (st.result, st.fetched_commit, st.message)
            if st.result != "unchanged" and shown.get(src.spec.name) != seen:
                messages.append(f"{src.spec.name}: {st.result} {st.fetched_commit[:12]} {st.message}")
            shown[src.spec.name] = seen
        for m in messages:
            print(m, file=sys.stderr)
        return PassOutcome(ok=ok, changed=changed, message="; ".join(messages))

    if args.once:
        out = one_pass("once")
        if ctx.output != "table":
            ctx.emit([asdict(statuses.load(s.spec.name)) for s in sources])
        return 0 if out.ok else 1
    waker = Waker()
    _stop_on_signals(waker)
    server = _webhook(args.webhook, waker) if args.webhook else None
    try:
        run_loop(one_pass, waker, resync_s=min(s.interval_s for s in specs), debounce_s=0.0)
    finally:
        if server:
            server.shutdown()
            server.server_close()
    return 0
