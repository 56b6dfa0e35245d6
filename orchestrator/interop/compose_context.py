"""Shared state of one Compose conversion: the file, the environment, and the warnings and errors so far.

Every reader of a Compose key reports through :class:`Ctx`, which turns a (map, key) pair into a
``file:line:col`` problem using the positions kept by ``interop.yamlsource``. Warnings describe input we
ignored or approximated; errors make the conversion fail (raised together as one ``ManifestError``).

Neighbours: ``interop.compose`` creates it; ``interop.compose_service`` and ``interop.compose_resources``
use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import Problem
from orchestrator.interop.yamlsource import MarkedList, MarkedMap, Pos

_INVALID_NAME_CHARS = re.compile(r"[^a-z0-9-]+")
_RESOURCE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
_INVALID_RESOURCE_CHARS = re.compile(r"[^a-zA-Z0-9_.-]+")


@dataclass
class Ctx:
    filename: str
    base_dir: Path
    env: Mapping[str, str]
    warnings: list[Problem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def _problem(self, node: Any, key: Any, path: str, message: str) -> Problem:
        pos: Pos = (0, 0)
        if isinstance(node, MarkedMap) or (isinstance(node, MarkedList) and isinstance(key, int)):
            pos = node.where(key)
        return Problem(self.filename, pos[0], pos[1], path, message)

    def warn(self, node: Any, key: Any, path: str, message: str) -> None:
        self.warnings.append(self._problem(node, key, path, message))

    def error(self, node: Any, key: Any, path: str, message: str) -> None:
        self.problems.append(self._problem(node, key, path, message))

    def unsupported(self, node: MarkedMap, key: str, path: str, why: str = "") -> None:
        self.warn(node, key, path, f"unsupported key '{key}' ignored" + (f": {why}" if why else ""))

    def name(self, raw: object, node: Any, key: Any, path: str, what: str) -> str:
        """A Compose name made into ours, warning when it changes.

        Stacks and services are DNS labels (lowercase letters, digits, '-'); volumes, networks, configs
        and secrets also allow '_' and '.' as Compose does.
        """
        text = str(raw)
        fixed = normalize_name(text) if what in ("service", "project") else resource_name(text)
        if fixed != text:
            self.warn(node, key, path, f"{what} name '{text}' renamed to '{fixed}'")
        return fixed

    def path_of(self, raw: str) -> str:
        """A host path from the file, made absolute against the Compose file's directory."""
        expanded = str(Path(raw).expanduser()) if raw.startswith("~") else raw
        return str((self.base_dir / expanded).resolve()) if not expanded.startswith("/") else expanded


def normalize_name(text: str) -> str:
    """Lowercase letters, digits and '-' (our object names); Compose also allows '_' and '.'."""
    return _INVALID_NAME_CHARS.sub("-", text.lower()).strip("-")[:63].strip("-") or "unnamed"


def resource_name(text: str) -> str:
    if _RESOURCE_NAME.fullmatch(text):
        return text
    return _INVALID_RESOURCE_CHARS.sub("-", text).strip("-_.")[:63] or "unnamed"


def as_map(ctx: Ctx, node: Any, key: Any, path: str) -> MarkedMap:
    """The value at ``node[key]`` as a map; anything else is an error and an empty map."""
    value = node[key]
    if isinstance(value, MarkedMap):
        return value
    if value is not None:
        ctx.error(node, key, path, f"expected a mapping, got {type(value).__name__}")
    empty = MarkedMap()
    empty.pos = node.where(key) if isinstance(node, MarkedMap) else (0, 0)
    return empty


def as_list(ctx: Ctx, node: Any, key: Any, path: str) -> MarkedList:
    value = node[key]
    if isinstance(value, MarkedList):
        return value
    if value is not None:
        ctx.error(node, key, path, f"expected a list, got {type(value).__name__}")
    return MarkedList()


def as_int(ctx: Ctx, node: Any, key: Any, path: str) -> int | None:
    """An integer; strings of digits (the result of interpolation) are accepted, as Compose does."""
    value = node[key]
    if isinstance(value, bool):
        ctx.error(node, key, path, f"expected an integer, got {value!r}")
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        ctx.error(node, key, path, f"expected an integer, got {value!r}")
        return None


def as_bool(ctx: Ctx, node: Any, key: Any, path: str) -> bool | None:
    value = node[key]
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    ctx.error(node, key, path, f"expected true or false, got {value!r}")
    return None


def key_values(ctx: Ctx, node: Any, key: Any, path: str) -> dict[str, str | None]:
    """Compose's two spellings of a string map: ``{K: V}`` or ``["K=V", "K"]`` (``None`` = no value)."""
    value = node[key]
    out: dict[str, str | None] = {}
    if isinstance(value, MarkedMap):
        for k, v in value.items():
            out[str(k)] = None if v is None else _scalar_text(v)
    elif isinstance(value, MarkedList):
        for item in value:
            k, sep, v = str(item).partition("=")
            out[k.strip()] = v if sep else None
    elif value is not None:
        ctx.error(node, key, path, f"expected a mapping or a list of KEY=VALUE, got {type(value).__name__}")
    return out


def _scalar_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
