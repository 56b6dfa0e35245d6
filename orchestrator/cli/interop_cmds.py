"""The ``convert`` and ``export`` verbs: Compose in, Kubernetes out.

``orchestrator convert COMPOSE_FILE [--out FILE] [--profile P]...`` writes our Stack manifest (YAML, or
JSON with the global ``-o json``) to stdout or FILE, and every warning (``file:line:col: key: message``)
to stderr; it exits 0 with warnings and 1 on invalid input.

``orchestrator export kubernetes -f PATH... [--dir DIR]`` (our manifests, or Compose files converted on
the way) writes a multi-document stream to stdout, or
one file per document under DIR (``DIR/<stack>/NN-kind-name.yaml``), and the fidelity report to stderr
(as text, or JSON with ``-o json``; with ``--dir`` and ``-o json`` stdout carries the files and report).
Files written by an earlier export to the same DIR and not produced now are removed, going only by the
inventory that export recorded (``DIR/.orchestrator-export.json``), never by name patterns.

Neighbours: ``orchestrator.cli`` (dispatch), ``interop.compose``, ``interop.kubernetes``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from orchestrator import manifest
from orchestrator.cli.context import Context
from orchestrator.errors import InteropError
from orchestrator.fsutil import write_atomic
from orchestrator.interop import compose, kubernetes
from orchestrator.manifest.model import Stack, StackSet

INVENTORY = ".orchestrator-export.json"


def register(sub: Any) -> None:
    p = sub.add_parser("convert", help="convert a Compose file to a stack manifest",
                       description="Convert a Compose file; unsupported keys are warned about on stderr.")
    p.add_argument("compose_file", metavar="COMPOSE_FILE")
    p.add_argument("--out", metavar="FILE", help="write the manifest here instead of stdout")
    p.add_argument("--profile", action="append", default=[], metavar="P",
                   help="enable a Compose profile (repeatable; COMPOSE_PROFILES is read too)")
    p.set_defaults(func=convert_cmd)

    e = sub.add_parser("export", help="export stacks to another orchestrator's format")
    targets = e.add_subparsers(dest="target", metavar="TARGET", required=True)
    k = targets.add_parser("kubernetes", help="Kubernetes manifests and a fidelity report")
    k.add_argument("-f", "--filename", dest="paths", action="append", required=True, metavar="PATH",
                   help="a manifest file or directory (repeatable)")
    k.add_argument("--dir", metavar="DIR", help="write one file per document under DIR")
    k.set_defaults(func=export_kubernetes_cmd)


def convert_cmd(args: argparse.Namespace, ctx: Context) -> int:
    result = compose.convert(Path(args.compose_file), dict(os.environ), profiles=args.profile)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if ctx.output == "json":
        text = json.dumps(result.manifest, indent=2) + "\n"
    else:
        text = (f"# converted from {args.compose_file} by `orchestrator convert`\n"
                + yaml.safe_dump(result.manifest, sort_keys=False, default_flow_style=False, width=120))
    if args.out:
        _write(Path(args.out), text)
    else:
        sys.stdout.write(text)
    return 0


def _load(paths: list[str]) -> StackSet:
    """Our manifests, and Compose files (recognised by shape) converted on the way, warnings to stderr."""
    composed = [p for p in paths if Path(p).is_file() and compose.is_compose_file(Path(p))]
    stacks: list[Stack] = []
    files: list[str] = []
    for path in composed:
        loaded, warnings = compose.load_stackset(Path(path), dict(os.environ))
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        stacks.extend(loaded.stacks)
        files.extend(loaded.files)
    rest = [p for p in paths if p not in composed]
    if rest:
        loaded = manifest.load(rest)
        stacks.extend(loaded.stacks)
        files.extend(loaded.files)
    names = [s.name for s in stacks]
    if len(set(names)) != len(names):
        raise InteropError(f"stack names repeat across the inputs: {', '.join(sorted(names))}")
    return StackSet(stacks=tuple(sorted(stacks, key=lambda s: s.name)), files=tuple(sorted(files)))


def export_kubernetes_cmd(args: argparse.Namespace, ctx: Context) -> int:
    result = kubernetes.export(_load(args.paths))
    report = result.report
    if args.dir:
        written = _write_dir(Path(args.dir), result.documents)
        if ctx.output in ("json", "yaml"):
            ctx.emit({"files": written, "report": report.to_json()})
        else:
            sys.stderr.write(report.to_text())
            print(f"wrote {len(written)} files under {args.dir}")
        return 0
    sys.stdout.write(kubernetes.dump_stream(result.documents))
    if ctx.output in ("json", "yaml"):
        json.dump(report.to_json(), sys.stderr, indent=2, sort_keys=True)
        sys.stderr.write("\n")
    else:
        sys.stderr.write(report.to_text())
    return 0


def _write(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so a reader never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text.encode("utf-8"))
    except OSError as exc:
        raise InteropError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _write_dir(root: Path, documents: list[tuple[str, dict[str, Any]]]) -> list[str]:
    names = [name for name, _ in documents]
    inventory = root / INVENTORY
    try:
        previous = set(json.loads(inventory.read_text(encoding="utf-8")).get("files", []))
    except FileNotFoundError:
        previous = set()
    except (OSError, ValueError) as exc:
        raise InteropError(f"cannot read export inventory {inventory}: {exc}") from exc
    for name, doc in documents:
        _write(root / name, kubernetes.dump(doc))
    for stale in sorted(previous - set(names)):
        target = root / stale
        # only names we wrote, inside root: an edited inventory must not delete elsewhere
        if ".." not in Path(stale).parts and not Path(stale).is_absolute():
            try:
                target.unlink(missing_ok=True)
            except OSError as exc:
                raise InteropError(f"cannot remove stale export {target}: {exc.strerror}") from exc
    _write(inventory, json.dumps({"files": sorted(names)}, indent=2) + "\n")
    return names
