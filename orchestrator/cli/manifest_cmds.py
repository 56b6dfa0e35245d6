"""The ``validate`` verb: load manifests through ``orchestrator.manifest`` and report, changing nothing.

``orchestrator validate -f PATH...`` prints ``ok: N stacks, M services in K files`` and exits 0, or
raises ``ManifestError`` (the CLI's main prints one ``file:line:col: path: message`` line per problem and
exits 1). With ``-o json`` (or yaml) the problems are printed to stdout as a list of objects
``{file, line, col, path, message}`` (empty when valid) and the exit status is still 1 on invalid input.
``-f -`` reads one manifest from standard input.

Neighbours: ``orchestrator.cli`` (dispatch, exit codes), ``orchestrator.manifest`` (the work).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from orchestrator import manifest
from orchestrator.cli.context import Context
from orchestrator.errors import ManifestError
from orchestrator.manifest.model import StackSet


def register(sub: Any) -> None:
    p = sub.add_parser("validate", help="check manifests (schema and semantic checks); changes nothing",
                       description="Validate manifests: every problem is reported as file:line:col.")
    p.add_argument("-f", "--filename", dest="paths", action="append", required=True, metavar="PATH",
                   help="a manifest file or a directory (recursive, *.yaml/*.yml); repeatable; - for stdin")
    p.set_defaults(func=validate_cmd)


def _load(paths: list[str]) -> StackSet:
    if paths == ["-"]:
        return manifest.load_text(sys.stdin.read(), "<stdin>")
    return manifest.load(paths)


def validate_cmd(args: argparse.Namespace, ctx: Context) -> int:
    try:
        stacks = _load(args.paths)
    except ManifestError as exc:
        if ctx.output in ("json", "yaml"):
            ctx.emit([dataclasses.asdict(p) for p in exc.problems])
            return exc.exit_code
        raise
    if ctx.output in ("json", "yaml"):
        ctx.emit([])
        return 0
    n_services = sum(len(s.services) for s in stacks.stacks)
    n_stacks, n_files = len(stacks.stacks), len(stacks.files)
    ctx.emit(None, text=f"ok: {n_stacks} stack{'s' if n_stacks != 1 else ''}, {n_services} "
             f"service{'s' if n_services != 1 else ''} in {n_files} file{'s' if n_files != 1 else ''}")
    return 0
