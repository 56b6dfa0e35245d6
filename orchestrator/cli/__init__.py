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
    "orchestrator.cli.container_cmds",
    "orchestrator.cli.image_cmds",
    "orchestrator.cli.source_cmds",
    "orchestrator.cli.interop_cmds",
)
# which group registers each verb: a run imports only the group of its verb (start-up time is part of
# every command's latency; the full set is imported for --help and unknown verbs)
_VERB_GROUP = {
    "validate": "manifest_cmds",
    **dict.fromkeys(("apply", "diff", "plan", "get", "ps", "describe", "logs", "delete", "down"),
                    "stack_cmds"),
    "exec": "container_cmds", "stats": "container_cmds",
    "image": "image_cmds", "watch": "source_cmds", "gitops": "source_cmds",
    "convert": "interop_cmds", "export": "interop_cmds",
}
_GLOBAL_WITH_VALUE = {"-o", "--output", "--log-format", "--log-level", "--root", "--runtime"}

# every verb the product has; those no group registered yet are answered honestly
ALL_VERBS = ("validate", "apply", "diff", "plan", "get", "ps", "describe", "logs", "exec", "stats",
             "delete", "down", "watch", "gitops", "image", "convert", "export")


def _verb_of(argv: Sequence[str]) -> str | None:
    """The verb an argument list invokes, found without building the full parser."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _GLOBAL_WITH_VALUE:
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return arg if arg in _VERB_GROUP else None
    return None


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
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
    groups = (f"orchestrator.cli.{_VERB_GROUP[verb]}",) if verb in _VERB_GROUP else _GROUPS
    for modname in groups:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            continue
        mod.register(sub)
    for name in ALL_VERBS if verb not in _VERB_GROUP else ():
        if name not in sub.choices:
            p = sub.add_parser(name, help=f"{name} (not built yet)")
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=_unbuilt)
    return parser


def _unbuilt(args: argparse.Namespace, ctx: Context) -> int:
    raise errors.NotImplementedVerb(f"'{args.verb}' is not built yet")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_verb_of(argv))
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
            print(_scrub(f"error: {problem}"), file=sys.stderr)
        n = len(exc.problems)
        print(f"{n} problem{'s' if n != 1 else ''} found; nothing was changed", file=sys.stderr)
        return exc.exit_code
    except errors.OrchestratorError as exc:
        # an error may quote a container's output or a library's message: no secret value gets out
        print(_scrub(f"error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _scrub(text: str) -> str:
    from orchestrator.secrets.redact import scrub
    return scrub(text)
