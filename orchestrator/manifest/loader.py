"""Read manifest files into ``Document`` values: plain data plus the line/column of every node.

Safe YAML only. The parser is PyYAML's safe loader (libyaml's C parser when available, for speed); we
compose the node graph and build the plain data ourselves, which lets us
  * refuse duplicate mapping keys (PyYAML silently keeps the last one) at the duplicate's line:col,
  * record a mark for every value and every mapping key, keyed by JSON path, for precise messages,
  * cap alias expansion (a "billion laughs" document expands aliases exponentially) and file size,
  * keep YAML timestamps as the strings the user wrote (a label ``date: 2024-01-01`` stays a string).
Every failure becomes an ``orchestrator.errors.Problem``; nothing here raises a yaml exception.

Neighbours: ``manifest.schema`` validates ``Document.data`` and uses ``Document.mark`` to locate errors;
``manifest.convert`` turns a valid document into the model. ``manifest.__init__.load`` drives all four.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import Problem

MAX_FILE_BYTES = 4 * 1024 * 1024        # a manifest is text written by people; 4 MiB is generous
MAX_NODES = 200_000                     # nodes built per file, aliases counted at every use
MAX_DEPTH = 64                          # nesting depth; deeper is an attack or a mistake

PathKey = tuple[str | int, ...]
Mark = tuple[int, int]                  # 1-based line, column

_BaseLoader: type[yaml.SafeLoader]
try:  # libyaml's parser is ~10x faster; the composer and our builder sit on top either way
    _BaseLoader = yaml.CSafeLoader  # type: ignore[assignment]  # same interface, C implementation
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_INT_TAG = "tag:yaml.org,2002:int"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_SCALAR_TAGS = {
    "tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float", _STR_TAG, _TIMESTAMP_TAG,
}


_RESOLVED: dict[str, str] = {}          # plain scalar text -> implicit tag (a pure function of the text)


class ManifestLoader(_BaseLoader):  # type: ignore[misc,valid-type]  # base chosen at import time
    """The one YAML loader we use: safe, and only used to compose nodes (we build data ourselves)."""

    def resolve(self, kind: type[yaml.Node], value: str, implicit: tuple[bool, bool]) -> str:
        # PyYAML runs a list of regexes per plain scalar; manifests repeat the same keys and values
        # over and over, so the answer is cached. Only plain scalars: their tag depends on the text alone
        # (we register no path resolvers).
        if kind is yaml.ScalarNode and implicit[0]:
            tag = _RESOLVED.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_RESOLVED) < 100_000 and len(value) < 200:
                    _RESOLVED[value] = tag
            return tag
        return str(super().resolve(kind, value, implicit))


@dataclass
class Document:
    """One YAML document of one file: the data, where it came from, and where each node was."""

    file: str                            # as shown to users (the path as given or found)
    base_dir: Path                       # relative paths in the manifest resolve against this
    index: int                           # position of the document in its file (0-based)
    data: Any
    marks: dict[PathKey, Mark] = field(default_factory=dict, repr=False)      # value node of each path
    key_marks: dict[PathKey, Mark] = field(default_factory=dict, repr=False)  # key node of each entry

    def mark(self, path: PathKey, *, key: bool = False) -> Mark:
        """Where ``path`` is; the nearest existing ancestor when the path itself is absent."""
        if key and path in self.key_marks:
            return self.key_marks[path]
        p = tuple(path)
        while p:
            if p in self.marks:
                return self.marks[p]
            p = p[:-1]
        return self.marks.get((), (1, 1))

    def problem(self, path: PathKey, message: str, *, key: bool = False) -> Problem:
        line, col = self.mark(path, key=key)
        return Problem(self.file, line, col, dotted(path), message)


def dotted(path: Sequence[str | int]) -> str:
    """``("spec", "services", "api", "ports", 0)`` -> ``spec.services.api.ports[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part and all(c.isalnum() or c in "_-" for c in part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


class _Refused(Exception):
    """Internal: stop building one document, with a located reason."""

    def __init__(self, mark: yaml.Mark | None, message: str) -> None:
        super().__init__(message)
        self.mark, self.message = mark, message


class _Builder:
    """Turns a composed node graph into plain data, refusing what we do not accept.

    Marks are collected by a separate walk (``_walk_marks``) over the graph once it is known to be
    acceptable, which keeps this hot loop free of path bookkeeping.
    """

    def __init__(self, loader: ManifestLoader) -> None:
        self.loader = loader
        self.nodes = 0

    def build(self, node: yaml.Node, depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _Refused(node.start_mark, f"document too large: more than {MAX_NODES} nodes "
                           "(aliases are counted each time they are used)")
        if depth > MAX_DEPTH:
            raise _Refused(node.start_mark, f"document nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:  # e.g. !!python/object or !!omap: refused, never constructed
                raise _Refused(node.start_mark, f"unsupported YAML tag {_short(node.tag)}")
            return self._mapping(node, depth)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                raise _Refused(node.start_mark, f"unsupported YAML tag {_short(node.tag)}")
            return [self.build(child, depth + 1) for child in node.value]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        tag = node.tag
        if tag in (_STR_TAG, _TIMESTAMP_TAG):  # most scalars; skip the constructor machinery
            return node.value
        if tag == _INT_TAG and node.value.isascii() and node.value.isdigit():
            return int(node.value) if node.value[0] != "0" or node.value == "0" else self._construct(node)
        if tag not in _SCALAR_TAGS:
            raise _Refused(node.start_mark, f"unsupported YAML tag {_short(node.tag)}")
        value = self._construct(node)
        if isinstance(value, float) and not math.isfinite(value):
            # .inf/.nan would slip through every range check (NaN compares false); no field wants them
            raise _Refused(node.start_mark, f"non-finite number {node.value!r} is not allowed")
        return value

    def _construct(self, node: yaml.Node) -> Any:
        try:
            return self.loader.construct_object(node)
        # PyYAML's scalar constructors fail on odd explicitly tagged values (``!!int ""``, ``!!float x``)
        # with assorted built-in errors (IndexError, ValueError, ...): all mean "bad value" here
        except Exception as exc:
            raise _Refused(node.start_mark, f"bad {node.tag.rsplit(':', 1)[-1]} value "
                           f"{node.value!r}") from exc

    def _mapping(self, node: yaml.MappingNode, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        # merges first, so that explicit keys then overwrite the merged values (``_walk_marks`` agrees)
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self._merge(out, value_node, depth)
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused(key_node.start_mark, "mapping keys must be plain scalars")
            if key_node.tag not in _SCALAR_TAGS:
                raise _Refused(key_node.start_mark, f"unsupported YAML tag {_short(key_node.tag)}")
            # keys are names: keep the text as written (YAML 1.1 would turn `on:` into True)
            key = str(key_node.value)
            if key in first_line:
                raise _Refused(key_node.start_mark,
                               f"duplicate key {key!r} (first defined at line {first_line[key]})")
            first_line[key] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, depth + 1)
        return out

    def _merge(self, out: dict[str, Any], value: yaml.Node, depth: int) -> None:
        """YAML merge keys (``<<: *defaults``): explicit keys win, earlier merges win over later."""
        sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
        for src in sources:
            if not isinstance(src, yaml.MappingNode):
                raise _Refused(src.start_mark, "a merge key (<<) needs a mapping or a list of mappings")
            merged = self._mapping(src, depth)
            for k, v in merged.items():
                if k not in out:
                    out[k] = v


def _walk_marks(root: yaml.Node) -> tuple[dict[PathKey, Mark], dict[PathKey, Mark]]:
    """Marks of every value and key of an already built (so valid) node graph, by JSON path.

    Mirrors ``_Builder``: merged entries first (earlier merges last, so they win), explicit keys after.
    """
    marks: dict[PathKey, Mark] = {}
    key_marks: dict[PathKey, Mark] = {}

    def entries(node: yaml.MappingNode, path: PathKey) -> None:
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in reversed(sources):
                    entries(src, path)
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                sub = (*path, str(key_node.value))
                key_marks[sub] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                walk(value_node, sub)

    def walk(node: yaml.Node, path: PathKey) -> None:
        marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            entries(node, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, child in enumerate(node.value):
                walk(child, (*path, i))

    walk(root, ())
    return marks, key_marks


def _located(file: str, mark: yaml.Mark | None, message: str) -> Problem:
    if mark is None:
        return Problem(file, 0, 0, "", message)
    return Problem(file, mark.line + 1, mark.column + 1, "", message)


def _yaml_message(exc: yaml.YAMLError) -> tuple[yaml.Mark | None, str]:
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        return exc.problem_mark or exc.context_mark, "invalid YAML: " + ", ".join(parts)
    return None, f"invalid YAML: {exc}"


def parse_text(text: str, file: str, base_dir: Path) -> tuple[list[Document], list[Problem]]:
    """Every document of one file's text, and every problem met (a bad document stops the file)."""
    docs: list[Document] = []
    if len(text) > MAX_FILE_BYTES:
        return docs, [Problem(file, 0, 0, "", f"file too large: {len(text)} bytes, the limit is "
                              f"{MAX_FILE_BYTES}")]
    if "\0" in text:
        return docs, [Problem(file, 0, 0, "", "file contains NUL characters; not a text manifest")]
    loader = ManifestLoader(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node guarantees a node
                break
            builder = _Builder(loader)
            try:
                data = builder.build(node)
            except _Refused as refused:
                return docs, [_located(file, refused.mark, refused.message)]
            except RecursionError:
                return docs, [_located(file, node.start_mark, "document nested too deeply")]
            # marks now, so the node graph can go: keeping every file's graph alive until the end of
            # load() makes the cyclic GC rescan hundreds of thousands of nodes (measured: 2x slower)
            marks, key_marks = _walk_marks(node)
            docs.append(Document(file, base_dir, index, data, marks, key_marks))
            index += 1
    except yaml.YAMLError as exc:
        mark, message = _yaml_message(exc)
        return docs, [_located(file, mark, message)]
    except RecursionError:
        return docs, [Problem(file, 0, 0, "", "invalid YAML: nested too deeply")]
    finally:
        loader.dispose()
    return docs, []


def read_file(path: Path, shown: str) -> tuple[list[Document], list[Problem]]:
    """Read and parse one file; I/O and encoding errors become problems naming the file."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return [], [Problem(shown, 0, 0, "", f"file too large: {size} bytes, the limit is "
                                f"{MAX_FILE_BYTES}")]
        raw = path.read_bytes()
    except OSError as exc:
        return [], [Problem(shown, 0, 0, "", f"cannot read: {exc.strerror or exc}")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [Problem(shown, 0, 0, "", f"not UTF-8 text (byte {exc.start})")]
    return parse_text(text, shown, path.parent.absolute())


def expand_paths(paths: Sequence[Path | str]) -> tuple[list[tuple[Path, str]], list[Problem]]:
    """Files to read, as (path, shown name): files as given, directories recursively (*.yaml, *.yml).

    Hidden files and directories (``.git``) are skipped when walking; a file named explicitly is read
    whatever its extension. Order: arguments in order, each directory's files sorted.
    """
    found: list[tuple[Path, str]] = []
    problems: list[Problem] = []
    seen: set[Path] = set()
    for given in paths:
        p = Path(given)
        if p.is_dir():
            for f in sorted(_walk(p)):
                if f.absolute() not in seen:
                    seen.add(f.absolute())
                    found.append((f, str(f)))
        elif p.exists():
            if p.absolute() not in seen:
                seen.add(p.absolute())
                found.append((p, str(p)))
        else:
            problems.append(Problem(str(p), 0, 0, "", "no such file or directory"))
    return found, problems


def _walk(root: Path) -> Iterator[Path]:
    for child in root.iterdir():
        if child.name.startswith("."):
            continue
        if child.is_dir():
            yield from _walk(child)
        elif child.suffix in (".yaml", ".yml") and child.is_file():
            yield child
