"""Verbs on running containers: exec (streamed, ``-i`` stdin, ``-t`` terminal) and stats.

``exec`` runs in a service's first running replica (or ``STACK/SERVICE-N``, or a container id) through
the runtime's ``exec`` with ``capture=False``: its output is copied to ours as it comes (the process
gets pipes or a pty, never our own stdio: ``runtime.linux.execrelay``), and its exit code is ours.
``-it`` puts our terminal in raw mode for the time of the command (``_raw_terminal``). ``stats`` reads
each container's cgroup twice for CPU %.

Neighbours: ``cli.stack_cmds`` (the session and target selection it shares), ``runtime`` (exec, stats).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from orchestrator.cli.context import Context
from orchestrator.cli.stack_cmds import _observed, _select, _session
from orchestrator.errors import ContainerNotFound, ReconcileError, UsageError


def register(sub: Any) -> None:
    p = sub.add_parser("exec", help="run a command in a service's first replica (or STACK/SERVICE-N)")
    p.add_argument("-i", "--interactive", action="store_true", help="give the command our stdin")
    p.add_argument("-t", "--tty", action="store_true", help="give the command a terminal (-it: a shell)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                   help="an environment variable (again for more)")
    p.add_argument("-w", "--workdir", default=None, help="working directory inside the container")
    p.add_argument("target")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD...")
    p.set_defaults(func=exec_cmd)
    p = sub.add_parser("stats", help="CPU, memory and pids of running containers (from their cgroups)")
    p.add_argument("target", nargs="?", default=None, help="SERVICE, STACK/SERVICE or a container")
    p.add_argument("--no-stream", action="store_true", help="print one reading and exit")
    p.set_defaults(func=stats_cmd)


def exec_cmd(args: argparse.Namespace, ctx: Context) -> int:
    """The command's output streams to ours as it is written (as ``docker exec`` and ``kubectl exec``
    do); its exit code is ours."""
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise UsageError("exec: no command given (orchestrator exec SERVICE -- CMD...)")
    bad = [e for e in args.env if "=" not in e or e.startswith("=")]
    if bad:
        raise UsageError(f"exec: --env {bad[0]!r}: expected KEY=VALUE")
    if args.tty and args.interactive and not sys.stdin.isatty():
        raise UsageError("exec: -it needs a terminal as stdin (use -i alone for piped input)")
    env = list(args.env)
    if args.tty and not any(e.startswith("TERM=") for e in env):
        env.append(f"TERM={os.environ.get('TERM') or 'xterm'}")      # as docker exec -t does
    with _session(ctx) as s:
        running = [o for o in _select(s, args.target) if o.status == "running"]
        if not running:
            raise ReconcileError(f"{args.target}: no running replica")
        sys.stdout.flush()
        sys.stderr.flush()
        with _raw_terminal(args.tty and args.interactive):
            res = s.runtime.exec(running[0].id, argv, env=env, cwd=args.workdir, capture=False,
                                 stdin=args.interactive, tty=args.tty)
    return res.exit_code


@contextlib.contextmanager
def _raw_terminal(raw: bool) -> Iterator[None]:
    """Our terminal in raw mode while an ``exec -it`` runs: keys (Ctrl-C included) go to the command's
    terminal, which echoes and interprets them; restored however the exec ends."""
    if not raw:
        yield
        return
    import signal
    import termios
    import tty

    def leave(sig: int, _frame: object) -> None:
        raise SystemExit(128 + sig)     # through the finally below: the terminal comes back

    saved = termios.tcgetattr(0)
    # in raw mode ^C and ^\ are keys for the command: a kill or a closed terminal is how we end, and
    # must not leave the user's terminal raw
    old = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        tty.setraw(0)
        yield
    finally:
        with contextlib.suppress(termios.error):     # a terminal that hung up has nothing to restore
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        for sig, handler in old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / (1 << 20):.1f}MiB"


def stats_cmd(args: argparse.Namespace, ctx: Context) -> int:
    """Two cgroup readings half a second apart give CPU %; streams every second unless --no-stream."""
    with _session(ctx) as s:
        found = _select(s, args.target) if args.target else _observed(s)
        running = [o for o in found if o.status == "running"]
        reader = getattr(s.runtime, "stats", None)
        if reader is None:
            raise UsageError(f"stats: the {s.runtime.name} runtime has no cgroup readings")

        def read() -> dict[str, tuple[float, Any]]:
            out = {}
            for o in running:
                try:
                    out[o.slot] = (time.monotonic(), reader(o.id))
                except ContainerNotFound:
                    continue     # it ended meanwhile
            return out

        prev = read()
        time.sleep(0.5)
        while True:
            cur = read()
            rows: list[dict[str, Any]] = []
            for slot, (t1, st) in cur.items():
                t0, old = prev.get(slot, (t1, st))
                cpu = 100.0 * (st.cpu_usage_ns - old.cpu_usage_ns) / ((t1 - t0) * 1e9) if t1 > t0 else 0.0
                rows.append({"container": slot, "cpu_percent": round(cpu, 1), "memory": st.memory_usage_bytes,
                             "memory_limit": st.memory_limit_bytes, "pids": st.pids_current,
                             "pids_limit": st.pids_limit, "oom_kills": st.oom_kill_count,
                             "block_read_bytes": st.blkio_read_bytes,
                             "block_write_bytes": st.blkio_write_bytes})
            headers = ("container", "cpu %", "mem", "mem limit", "pids", "block i/o", "oom kills")
            ctx.emit(rows, headers=headers,
                     rows=[[r["container"], f"{r['cpu_percent']:.1f}", _mib(r["memory"]),
                            _mib(r["memory_limit"]), f"{r['pids']}/{r['pids_limit'] or '-'}",
                            f"{_mib(r['block_read_bytes'])} / {_mib(r['block_write_bytes'])}", r["oom_kills"]]
                           for r in rows])
            if args.no_stream:
                return 0
            prev = cur
            time.sleep(1.0)
