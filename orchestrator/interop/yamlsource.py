"""Read one YAML file for interop, keeping where every key and list item was written.

Compose files are not our manifests, so they do not go through ``manifest.loader``; but the promise is the
same: safe YAML only, duplicate keys refused (PyYAML silently keeps the last one), and every later message
can say ``file:line:col``. Mappings come back as :class:`MarkedMap` (a ``dict`` that also remembers the
position of each key) and sequences as :class:`MarkedList` (a ``list`` with the position of each item).
Merge keys (``<<: *anchor``, common in Compose ``x-`` extension blocks) are honoured; an explicit key wins
over a merged one, as YAML says.

Neighbours: ``interop.interpolate`` walks these trees; ``interop.compose`` reads them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import InteropError, ManifestError, Problem

Pos = tuple[int, int]          # 1-based (line, col); (0, 0) unknown

_MERGE_TAG = "tag:yaml.org,2002:merge"


class MarkedMap(dict[Any, Any]):
    """A mapping that knows where it and each of its keys were written."""

    pos: Pos = (0, 0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_pos: dict[Any, Pos] = {}

    def where(self, key: Any) -> Pos:
        return self.key_pos.get(key, self.pos)


class MarkedList(list[Any]):
    """A sequence that knows where it and each of its items were written."""

    pos: Pos = (0, 0)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.item_pos: list[Pos] = []

    def where(self, index: int) -> Pos:
        return self.item_pos[index] if 0 <= index < len(self.item_pos) else self.pos


def _pos(mark: yaml.Mark) -> Pos:
    return (mark.line + 1, mark.column + 1)


_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml's parser: ~5x


class _Loader(_Base):  # type: ignore[valid-type,misc]  # base chosen at import time
    """SafeLoader whose maps and lists carry positions; duplicate keys are collected as problems.

    Scalars resolve as in YAML 1.2 (what Compose's Go parser does), not PyYAML's YAML 1.1: only
    true/false are booleans (``DEBUG: yes`` stays the string "yes"), and ``22:22`` is a string, not
    the base-60 integer 1342 that silently breaks a port mapping.
    """

    # a fresh table (not the inherited one), filled below; a class attribute, as PyYAML keeps it
    # (no timestamp resolver: a value written as 2024-01-01 stays the string the user wrote)
    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012

    def __init__(self, stream: str, filename: str) -> None:
        super().__init__(stream)
        self.filename = filename
        self.problems: list[Problem] = []


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> MarkedMap:
    seen: dict[Any, Pos] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:           # an unhashable key (a list or map used as a key)
            line, col = _pos(key_node.start_mark)
            loader.problems.append(Problem(loader.filename, line, col, "", "a mapping key must be a scalar"))
            continue
        if first is not None:
            line, col = _pos(key_node.start_mark)
            loader.problems.append(Problem(loader.filename, line, col, str(key),
                                           f"duplicate key (first at line {first[0]})"))
        else:
            seen[key] = _pos(key_node.start_mark)
    loader.flatten_mapping(node)
    result = MarkedMap()
    result.pos = _pos(node.start_mark)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            continue
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_pos[key] = _pos(key_node.start_mark)
    return result


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> MarkedList:
    result = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    result.pos = _pos(node.start_mark)
    result.item_pos = [_pos(child.start_mark) for child in node.value]
    return result


for _tag, _regexp, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     "-+0123456789."),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", r"^(?:<<)$", "<"),
):
    _Loader.add_implicit_resolver(_tag, re.compile(_regexp), list(_first))

def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    """YAML 1.2 ints, plus a leading-0 octal (``mode: 0440``) as Go's parser reads it."""
    text = str(loader.construct_scalar(node))
    sign, digits = (-1, text[1:]) if text[:1] == "-" else (1, text.lstrip("+"))
    if digits.startswith("0o"):
        return sign * int(digits[2:], 8)
    if digits.startswith("0x"):
        return sign * int(digits[2:], 16)
    if len(digits) > 1 and digits[0] == "0" and set(digits) <= set("01234567"):
        return sign * int(digits, 8)
    return sign * int(digits)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


MAX_FILE_BYTES = 4 * 1024 * 1024     # the manifest loader's limit: Compose files are text written by people


def load_text(text: str, filename: str) -> Any:
    """Parse one YAML document; raise ManifestError with every duplicate key or the syntax error."""
    if len(text) > MAX_FILE_BYTES:
        raise ManifestError([Problem(filename, 0, 0, "", f"file too large: {len(text)} bytes, the limit "
                                                         f"is {MAX_FILE_BYTES}")])
    if "\0" in text:
        raise ManifestError([Problem(filename, 0, 0, "", "file contains NUL characters; not YAML text")])
    loader = _Loader(text, filename)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _pos(mark) if mark else (0, 0)
        message = f"invalid YAML: {exc.problem or exc}"
        raise ManifestError([Problem(filename, line, col, "", message)]) from exc
    except yaml.YAMLError as exc:
        raise ManifestError([Problem(filename, 0, 0, "", f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    if loader.problems:
        raise ManifestError(loader.problems)
    return data


def load_file(path: Path) -> Any:
    """Read and parse ``path``; an unreadable file is an InteropError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InteropError(f"cannot read {path}: {exc}") from exc
    return load_text(text, str(path))
