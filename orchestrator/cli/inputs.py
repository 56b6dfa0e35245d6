"""``-f PATH`` for the stack verbs: our manifests, and Compose files detected by shape.

``apply -f compose.yaml`` works like ``convert`` followed by ``apply``: a file with a top-level
``services`` and no ``apiVersion``/``kind`` is converted by ``interop.compose`` (warnings for every key
we do not support go to stderr with file:line), everything else goes through ``manifest.load``. The
interop package is imported only when a candidate file is seen, so manifest-only runs stay fast.

Neighbours: ``cli.stack_cmds`` (apply, diff, plan, delete), ``manifest``, ``interop.compose``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestrator import manifest
from orchestrator.errors import ManifestError, Problem
from orchestrator.manifest.model import StackSet

_API_VERSION = re.compile(r"^apiVersion\s*:", re.MULTILINE)


def _maybe_compose(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        head = path.read_text(errors="replace")
    except OSError:
        return False
    return not _API_VERSION.search(head) and re.search(r"^services\s*:", head, re.MULTILINE) is not None


def load_inputs(paths: Sequence[str | Path]) -> StackSet:
    """Load every ``-f`` path into one StackSet; Compose files are converted on the way."""
    ours: list[str | Path] = []
    compose_sets: list[StackSet] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if str(raw) != "-" and _maybe_compose(path):
            from orchestrator.interop import compose

            if compose.is_compose_file(path):
                try:
                    stackset, warnings = compose.load_stackset(path, os.environ)
                except ManifestError as exc:
                    problems.extend(exc.problems)
                    continue
                for w in warnings:
                    print(f"warning: {w}", file=sys.stderr)
                compose_sets.append(stackset)
                continue
        ours.append(raw)
    base = StackSet()
    if ours:
        try:
            base = manifest.load(ours)
        except ManifestError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ManifestError(problems)
    stacks = list(base.stacks)
    files = list(base.files)
    seen = {s.name: str(s.source) for s in stacks}
    for cs in compose_sets:
        for st in cs.stacks:
            if st.name in seen:
                problems.append(Problem(st.source.file, 0, 0, "metadata.name",
                                        f"stack {st.name!r} is also defined in {seen[st.name]}"))
            seen[st.name] = str(st.source)
            stacks.append(st)
        files.extend(cs.files)
    if problems:
        raise ManifestError(problems)
    return StackSet(stacks=tuple(sorted(stacks, key=lambda s: s.name)), files=tuple(sorted(set(files))))
