"""A compiled yes/no validity check for our schema: the fast path before jsonschema's full report.

jsonschema interprets the schema anew for every node, which costs about 0.7 ms per service here; that
alone would blow the budget of 300 ms for 500 services. Almost every manifest we load is valid (a GitOps
loop reloads the same files every pass), so ``manifest.schema.validate`` first asks this check, which
turns the schema into nested closures once, and only runs jsonschema's ``iter_errors`` (for the precise,
complete messages) when the answer is no.

It must agree with jsonschema exactly, so it is deliberately small and strict: it implements only the
keywords our schema uses, with jsonschema's semantics (``bool`` is not a number, ``1.0`` is an integer,
a keyword only constrains values of its type, patterns use ``re.search``), and refuses to compile a
schema with any other keyword. ``tests/unit/manifest/test_fastcheck.py`` checks agreement with
jsonschema on generated and mutated manifests.

Neighbours: used only by ``manifest.schema``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

# keywords that only annotate; they never change validity
_ANNOTATIONS = frozenset({"description", "title", "$schema", "$id", "$defs", "$comment", "default",
                          "examples"})


class UnsupportedSchema(ValueError):
    """The schema uses a keyword this checker does not implement (so it cannot vouch for it)."""


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
}


def equal(a: Any, b: Any) -> bool:
    """JSON equality as jsonschema has it: ``True`` is not ``1``, but ``1`` is ``1.0``."""
    if isinstance(a, str) or isinstance(b, str):
        return bool(a == b)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, list | dict) or isinstance(b, list | dict):
        return False
    return bool(a == b)


def _unique(items: list[Any]) -> bool:
    return all(not equal(items[i], items[j]) for i in range(len(items)) for j in range(i + 1, len(items)))


def _all_of(checks: list[Check]) -> Check:
    """The conjunction, unrolled for the common small cases (a generator per node is measurable)."""
    if not checks:
        return lambda v: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        a, b = checks
        return lambda v: a(v) and b(v)
    if len(checks) == 3:
        a, b, c = checks
        return lambda v: a(v) and b(v) and c(v)
    return lambda v: all(c(v) for c in checks)


class Compiler:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return lambda v: True
        if schema is False:
            return lambda v: False
        if not isinstance(schema, dict):
            raise UnsupportedSchema(f"schema must be an object or a boolean, got {schema!r}")
        checks: list[Check] = []
        for key, value in schema.items():
            if key in _ANNOTATIONS or key in ("additionalProperties", "patternProperties"):
                continue
            method = getattr(self, "k_" + key.lstrip("$"), None)
            if method is None:
                raise UnsupportedSchema(f"keyword {key!r} is not supported by the fast check")
            checks.append(method(value, schema))
        if "properties" not in schema and ("additionalProperties" in schema or "patternProperties" in schema):
            checks.append(self.k_properties({}, schema))
        return _all_of(checks)

    # -- keywords (each returns a check; applicability by type as in JSON Schema) --

    def k_ref(self, ref: str, _schema: dict[str, Any]) -> Check:
        if not ref.startswith("#/"):
            raise UnsupportedSchema(f"only local $ref is supported, got {ref!r}")
        if ref not in self.refs:
            self.refs[ref] = lambda v: True  # placeholder while compiling (recursion)
            node: Any = self.root
            for part in ref[2:].split("/"):
                node = node[part]
            self.refs[ref] = self.compile(node)
        refs = self.refs
        return lambda v: refs[ref](v)

    def k_type(self, types: str | list[str], _schema: dict[str, Any]) -> Check:
        if isinstance(types, str):
            return _TYPES[types]
        tests = [_TYPES[t] for t in types]
        return lambda v: any(t(v) for t in tests)

    def k_enum(self, values: list[Any], _schema: dict[str, Any]) -> Check:
        if all(isinstance(x, str) for x in values):
            allowed = frozenset(values)
            return lambda v: isinstance(v, str) and v in allowed
        return lambda v: any(equal(v, x) for x in values)

    def k_const(self, value: Any, _schema: dict[str, Any]) -> Check:
        return lambda v: equal(v, value)

    def k_pattern(self, pattern: str, _schema: dict[str, Any]) -> Check:
        search = re.compile(pattern).search
        return lambda v: not isinstance(v, str) or search(v) is not None

    def k_minLength(self, n: int, _schema: dict[str, Any]) -> Check:
        return lambda v: not isinstance(v, str) or len(v) >= n

    def k_minimum(self, n: float, _schema: dict[str, Any]) -> Check:
        return lambda v: not _is_number(v) or not v < n  # jsonschema: NaN passes

    def k_maximum(self, n: float, _schema: dict[str, Any]) -> Check:
        return lambda v: not _is_number(v) or not v > n

    def k_exclusiveMinimum(self, n: float, _schema: dict[str, Any]) -> Check:
        return lambda v: not _is_number(v) or not v <= n

    def k_minItems(self, n: int, _schema: dict[str, Any]) -> Check:
        return lambda v: not isinstance(v, list) or len(v) >= n

    def k_maxItems(self, n: int, _schema: dict[str, Any]) -> Check:
        return lambda v: not isinstance(v, list) or len(v) <= n

    def k_uniqueItems(self, flag: bool, _schema: dict[str, Any]) -> Check:
        if not flag:
            return lambda v: True
        return lambda v: not isinstance(v, list) or _unique(v)

    def k_items(self, sub: Any, _schema: dict[str, Any]) -> Check:
        check = self.compile(sub)
        return lambda v: not isinstance(v, list) or all(check(x) for x in v)

    def k_required(self, names: list[str], _schema: dict[str, Any]) -> Check:
        return lambda v: not isinstance(v, dict) or all(n in v for n in names)

    def k_propertyNames(self, sub: Any, _schema: dict[str, Any]) -> Check:
        check = self.compile(sub)
        return lambda v: not isinstance(v, dict) or all(check(k) for k in v)

    def k_oneOf(self, subs: list[Any], _schema: dict[str, Any]) -> Check:
        checks = [self.compile(s) for s in subs]
        return lambda v: sum(1 for c in checks if c(v)) == 1

    def k_properties(self, props: dict[str, Any], schema: dict[str, Any]) -> Check:
        """properties, patternProperties and additionalProperties together (they interact)."""
        named = {k: self.compile(s) for k, s in props.items()}
        patterns = [(re.compile(p).search, self.compile(s))
                    for p, s in schema.get("patternProperties", {}).items()]
        extra = self.compile(schema["additionalProperties"]) if "additionalProperties" in schema else None

        def check(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for key, value in v.items():
                known = key in named
                if known and not named[key](value):
                    return False
                matched = False
                for search, sub in patterns:
                    if search(key) is not None:
                        matched = True
                        if not sub(value):
                            return False
                if not known and not matched and extra is not None and not extra(value):
                    return False
            return True

        return check


def compile_schema(schema: dict[str, Any]) -> Check:
    """A function ``data -> bool`` that agrees with jsonschema's Draft 2020-12 validity for ``schema``."""
    return Compiler(schema).compile(schema)
