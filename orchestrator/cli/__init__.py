"""Command-line entry point: global flags, verb dispatch, and the one place errors become exit codes.

Each verb group lives in its own module under ``orchestrator.cli`` and exposes ``register(sub)``, which
adds its sub-commands with ``set_defaults(func=handler)``; a handler takes ``(args, ctx)`` and returns an
exit code. Verbs that are not built yet are registered by ``_unbuilt`` and say so (exit 3).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from orchestrator import errors, logs
from orchestrator.cli.context import Context
from orchestrator.settings import Settings

# verb groups, in help order; a module that fails to import is a bug, not a missing feature
_GROUPS = (
    "orchestrator.cli.manifest_cmds",
    "orchestrator.cli.stack_cmds",
    "orchestrator.cli.image_cmds",
    "orchestrator.cli.source_cmds",
    "orchestrator.cli.interop_cmds",
)

# every verb the product has; those no group registered yet are answered honestly
ALL_VERBS = ("validate", "apply", "diff", "plan", "get", "ps", "describe", "logs", "exec", "stats",
             "delete", "down", "watch", "gitops", "image", "convert", "export")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="orchestrator",
                                     description="Declarative container orchestrator for one Linux host.")
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table",
                        help="output format (default: table, concise for humans)")
    parser.add_argument("--log-format", choices=("console", "json"), default="console")
    parser.add_argument("--log-level", default="warning",
                        choices=("debug", "info", "warning", "error"))
    parser.add_argument("--root", default=None,
                        help="state directory (default $ORCHESTRATOR_ROOT or /var/lib/orchestrator)")
    parser.add_argument("--runtime", choices=("native", "runc"), default=None,
                        help="container runtime backend (default: native)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for modname in _GROUPS:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            continue
        mod.register(sub)
    for verb in ALL_VERBS:
        if verb not in sub.choices:
            p = sub.add_parser(verb, help=f"{verb} (not built yet)")
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=_unbuilt)
    return parser


def _unbuilt(args: argparse.Namespace, ctx: Context) -> int:
    raise errors.NotImplementedVerb(f"'{args.verb}' is not built yet")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "func", None) is not _unbuilt:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    logs.configure(args.log_format, args.log_level)
    ctx = Context(settings=Settings.from_env(args.root, args.runtime), output=args.output)
    try:
        return int(args.func(args, ctx))
    except errors.ManifestError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        n = len(exc.problems)
        print(f"{n} problem{'s' if n != 1 else ''} found; nothing was changed", file=sys.stderr)
        return exc.exit_code
    except errors.OrchestratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
