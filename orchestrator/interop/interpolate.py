"""Compose variable interpolation and ``.env`` files.

Compose substitutes variables in every string value of the file before reading it:
``$VAR`` and ``${VAR}`` (empty when unset, with a warning), ``${VAR:-default}`` (default when unset or
empty), ``${VAR-default}`` (default when unset), ``${VAR:?message}`` / ``${VAR?message}`` (an error when
unset or empty / unset), ``${VAR:+alternative}`` / ``${VAR+alternative}``, and ``$$`` for a literal ``$``.
Defaults may nest (``${A:-${B:-x}}``). Keys are never interpolated, only values.

Values come from the process environment first, then from the ``.env`` file next to the Compose file
(Compose's precedence: the shell wins). :func:`parse_dotenv` also reads service ``env_file`` files.

Neighbours: ``interop.yamlsource`` builds the trees walked here; ``interop.compose`` calls both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from orchestrator.errors import Problem
from orchestrator.interop.yamlsource import MarkedList, MarkedMap, Pos

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = (":-", ":?", ":+", "-", "?", "+")


class InterpolationError(Exception):
    """A ``${VAR?message}`` whose variable is missing, or a malformed expression."""


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``${`` whose body starts at ``start``, honouring nesting."""
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise InterpolationError(f"unterminated '${{' in {text!r}")


def substitute(text: str, env: Mapping[str, str], unset: set[str]) -> str:
    """Expand ``text``; names used but unset (with no default) are added to ``unset``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end = _closing_brace(text, i + 2)
            out.append(_expand(text[i + 2:end], env, unset))
            i = end + 1
        elif (m := _NAME.match(text, i + 1)) is not None:
            name = m.group(0)
            if name not in env:
                unset.add(name)
            out.append(env.get(name, ""))
            i = m.end()
        else:                       # a lone '$' (e.g. at the end) stays, as in Compose
            out.append("$")
            i += 1
    return "".join(out)


def _expand(body: str, env: Mapping[str, str], unset: set[str]) -> str:
    m = _NAME.match(body)
    if m is None:
        raise InterpolationError(f"invalid interpolation format '${{{body}}}'")
    name, rest = m.group(0), body[m.end():]
    value = env.get(name)
    if not rest:
        if value is None:
            unset.add(name)
        return value or ""
    op = next((o for o in _OPS if rest.startswith(o)), None)
    if op is None:
        raise InterpolationError(f"invalid interpolation format '${{{body}}}'")
    arg = rest[len(op):]
    missing = value is None or (op.startswith(":") and value == "")
    if op in (":-", "-"):
        return substitute(arg, env, unset) if missing else str(value)
    if op in (":+", "+"):
        return "" if missing else substitute(arg, env, unset)
    if missing:                     # ":?" and "?"
        message = substitute(arg, env, unset) or "is required"
        raise InterpolationError(f"required variable {name} is missing a value: {message}")
    return str(value)


MAX_NODES = 200_000     # values visited; YAML aliases can make a small file expand exponentially


class _Walk:
    def __init__(self, env: Mapping[str, str], filename: str, problems: list[Problem],
                 warnings: list[Problem]) -> None:
        self.env, self.filename, self.problems, self.warnings = env, filename, problems, warnings
        self.budget = MAX_NODES

    def visit(self, data: Any, pos: Pos, path: str) -> Any:
        self.budget -= 1
        if self.budget == 0:
            self.problems.append(Problem(self.filename, pos[0], pos[1], path,
                                         f"document expands to more than {MAX_NODES} values (aliases)"))
        if self.budget <= 0:
            return data
        if isinstance(data, MarkedMap):
            out = MarkedMap()
            out.pos, out.key_pos = data.pos, dict(data.key_pos)
            for key, value in data.items():
                out[key] = self.visit(value, data.where(key), f"{path}.{key}" if path else str(key))
            return out
        if isinstance(data, MarkedList):
            seq = MarkedList()
            seq.pos, seq.item_pos = data.pos, list(data.item_pos)
            for index, value in enumerate(data):
                seq.append(self.visit(value, data.where(index), f"{path}[{index}]"))
            return seq
        if isinstance(data, str) and "$" in data:
            return self.string(data, pos, path)
        return data

    def string(self, data: str, pos: Pos, path: str) -> str:
        unset: set[str] = set()
        try:
            result = substitute(data, self.env, unset)
        except InterpolationError as exc:
            self.problems.append(Problem(self.filename, pos[0], pos[1], path, str(exc)))
            return data
        for name in sorted(unset):
            self.warnings.append(Problem(self.filename, pos[0], pos[1], path,
                                         f"variable {name} is not set; defaulting to an empty string"))
        return result


def interpolate_tree(data: Any, env: Mapping[str, str], filename: str,
                     problems: list[Problem], warnings: list[Problem]) -> Any:
    """A copy of ``data`` with every string value expanded; errors and unset names become problems.

    A copy, not an in-place edit, because YAML aliases share one object between several places.
    """
    return _Walk(env, filename, problems, warnings).visit(data, (0, 0), "")


def parse_dotenv(text: str, filename: str, env: Mapping[str, str],
                 problems: list[Problem]) -> dict[str, str]:
    """Parse a ``.env`` / ``env_file``: ``KEY=VALUE`` lines, ``#`` comments, optional ``export``, quotes.

    Unquoted and double-quoted values are interpolated against ``env`` plus the keys read so far;
    single-quoted values are literal, as in Compose.
    """
    result: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _NAME.fullmatch(key):
            problems.append(Problem(filename, lineno, 1, "", f"expected KEY=VALUE, got {raw.strip()!r}"))
            continue
        value = value.strip()
        scope = {**env, **result}
        if value[:1] == "'" and value.count("'") >= 2:
            result[key] = value[1:value.index("'", 1)]
            continue
        if value[:1] == '"' and value.count('"') >= 2:
            body = value[1:value.rindex('"')]
            body = body.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        else:
            body = re.split(r"\s+#", value, maxsplit=1)[0].rstrip()
        try:
            result[key] = substitute(body, scope, set())
        except InterpolationError as exc:
            problems.append(Problem(filename, lineno, 1, key, str(exc)))
    return result
