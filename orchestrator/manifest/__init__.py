"""The manifest package: files -> validated, frozen ``model.StackSet``. Pure: no kernel, no store.

``load(paths)`` reads files and directories (recursively, ``*.yaml``/``*.yml``, sorted), every document
of every file; ``load_text(text, filename)`` does the same for one in-memory text (tests, the git source,
stdin). Both run the whole pipeline and raise ``ManifestError`` carrying EVERY problem found:

    loader (YAML -> Document with marks) -> schema (shape) -> convert (model) -> checks (semantics)

A file that is not valid YAML, or a document that fails the schema, is left out of the later stages but
does not stop the other files; checks run over all documents that converted.

Neighbours: ``orchestrator.cli.manifest_cmds`` (validate), ``sources`` (file, watch, git), ``reconcile``.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from orchestrator.errors import ManifestError, Problem
from orchestrator.manifest.checks import Host, run_checks
from orchestrator.manifest.convert import Converted, convert
from orchestrator.manifest.loader import Document, expand_paths, parse_text, read_file
from orchestrator.manifest.model import StackSet
from orchestrator.manifest.schema import validate

__all__ = ["ManifestError", "load", "load_documents", "load_text"]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while loading.

    Loading allocates some 10^5 small containers per 500 services (data, marks, models) that all live
    until the end; the collector would rescan them over and over as they pile up (measured: about a
    quarter of load() time). Nothing here builds reference cycles, so nothing is lost by collecting
    after; the collector is re-enabled (if it was enabled) even when loading raises.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load(paths: Sequence[Path | str], *, host: Host | None = None) -> StackSet:
    """Load, validate and convert every manifest under ``paths``; raise ManifestError with all problems."""
    with _gc_paused():
        return _load(paths, host)


def _load(paths: Sequence[Path | str], host: Host | None) -> StackSet:
    files, problems = expand_paths(paths)
    if not files and not problems:
        where = ", ".join(str(p) for p in paths)
        problems.append(Problem(where, 0, 0, "", "no manifest files (*.yaml, *.yml) found"))
    docs: list[Document] = []
    for path, shown in files:
        found, bad = read_file(path, shown)
        docs.extend(found)
        problems.extend(bad)
    return _finish(docs, problems, [shown for _, shown in files], host)


def load_text(text: str, filename: str = "<input>", *, host: Host | None = None) -> StackSet:
    """Like ``load`` for one file's text; relative paths resolve against ``filename``'s directory."""
    with _gc_paused():
        docs, problems = parse_text(text, filename, Path(filename).parent.absolute())
        return _finish(docs, problems, [filename], host)


def load_documents(docs: Sequence[Document], *, host: Host | None = None) -> list[Converted]:
    """Schema, convert and checks over parsed documents; for callers that need the origins too."""
    converted, problems = _convert_all(docs, host)
    if problems:
        raise ManifestError(problems)
    return converted


def _convert_all(docs: Sequence[Document], host: Host | None) -> tuple[list[Converted], list[Problem]]:
    problems: list[Problem] = []
    converted: list[Converted] = []
    for doc in docs:
        if doc.data is None:  # an empty document (a lone "---" or comments only) is allowed
            continue
        bad = validate(doc)
        if bad:
            problems.extend(bad)
            continue
        conv, bad = convert(doc)
        problems.extend(bad)
        if conv is not None:
            converted.append(conv)
    problems.extend(run_checks(converted, host))
    return converted, problems


def _finish(docs: Sequence[Document], problems: list[Problem], files: list[str],
            host: Host | None) -> StackSet:
    converted, more = _convert_all(docs, host)
    problems = problems + more
    if problems:
        raise ManifestError(problems)
    stacks = tuple(sorted((c.stack for c in converted), key=lambda s: s.name))
    return StackSet(stacks=stacks, files=tuple(sorted(files)))
