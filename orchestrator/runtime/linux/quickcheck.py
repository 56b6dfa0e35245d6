"""A fast "certainly valid" check of a runtime spec against the (inlined) OCI draft-4 schema.

``specschema`` validates every spec on the container start path, and jsonschema spends ~0.6 ms of a
~13 ms start on it (a validator object per schema node visited). This module compiles the schema once
into plain closures for the few draft-4 keywords the OCI schemas use (type, properties, required,
items, enum, pattern, minimum, maximum, minItems, allOf, anyOf, patternProperties,
additionalProperties) and answers only "valid": True when the spec certainly is, False when it is not
or when it meets anything it does not model (an unknown keyword, a list form of ``items``). False
sends the caller to jsonschema, which gives the messages; so this can make a check slower, never let
an invalid spec through. ``tests/unit/runtime/test_quickcheck.py`` compares both on mutated specs.

Neighbours: ``specschema`` (the only caller).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]
DRAFT4 = "http://json-schema.org/draft-04/schema#"

_KNOWN = frozenset({"type", "properties", "required", "items", "enum", "pattern", "minimum", "maximum",
                    "minItems", "allOf", "anyOf", "patternProperties", "additionalProperties",
                    "description", "$schema", "id", "title"})


def _never(_value: Any) -> bool:
    return False


def _type_check(names: list[str]) -> Check:
    # draft 4, as jsonschema: booleans are neither integers nor numbers, 1.0 is not an integer
    def one(name: str) -> Check | None:
        return {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "boolean": lambda v: isinstance(v, bool),
            "null": lambda v: v is None,
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        }.get(name)
    checks = [one(n) for n in names]
    if any(c is None for c in checks):
        return _never
    known = [c for c in checks if c is not None]
    return lambda v: any(c(v) for c in known)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON type (1 is not true; nested values compared alike)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def compile_schema(schema: Any) -> Check:
    """A check for an inlined (``$ref``-free) draft-4 schema; see the module docstring."""
    if schema is True or schema == {}:
        return lambda _v: True
    if not isinstance(schema, dict) or not set(schema) <= _KNOWN:
        return _never
    if schema.get("$schema", DRAFT4) != DRAFT4:
        return _never                        # another dialect (jsonschema switches per subschema)
    checks: list[Check] = []
    if "type" in schema:
        t = schema["type"]
        checks.append(_type_check([t] if isinstance(t, str) else list(t)))
    if "enum" in schema:
        options = list(schema["enum"])
        checks.append(lambda v: any(_same(v, o) for o in options))
    if "pattern" in schema:
        rx = re.compile(schema["pattern"])
        checks.append(lambda v: not isinstance(v, str) or rx.search(v) is not None)
    if "minimum" in schema:
        low = schema["minimum"]
        checks.append(lambda v: not _is_number(v) or v >= low)
    if "maximum" in schema:
        high = schema["maximum"]
        checks.append(lambda v: not _is_number(v) or v <= high)
    if "minItems" in schema:
        least = schema["minItems"]
        if not isinstance(least, int) or isinstance(least, bool):
            return _never
        checks.append(lambda v: not isinstance(v, list) or len(v) >= least)
    if "items" in schema:
        if not isinstance(schema["items"], dict):
            return _never                    # the tuple form: not modelled
        item = compile_schema(schema["items"])
        checks.append(lambda v: not isinstance(v, list) or all(item(x) for x in v))
    if "required" in schema:
        if not isinstance(schema["required"], list):
            return _never                    # draft 3's boolean form
        names = list(schema["required"])
        checks.append(lambda v: not isinstance(v, dict) or all(n in v for n in names))
    props = {k: compile_schema(s) for k, s in schema.get("properties", {}).items()}
    patterns = [(re.compile(p), compile_schema(s)) for p, s in schema.get("patternProperties", {}).items()]
    extra = schema.get("additionalProperties", True)
    extra_check: Check | None
    if extra is True:
        extra_check = None
    elif extra is False:
        extra_check = _never
    else:
        extra_check = compile_schema(extra)
    if props or patterns or extra_check is not None:
        def objects(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for key, value in v.items():
                matched = False
                check = props.get(key)
                if check is not None:
                    matched = True
                    if not check(value):
                        return False
                for rx, pcheck in patterns:
                    if rx.search(key):
                        matched = True
                        if not pcheck(value):
                            return False
                if not matched and extra_check is not None and not extra_check(value):
                    return False
            return True
        checks.append(objects)
    if "allOf" in schema:
        parts = [compile_schema(s) for s in schema["allOf"]]
        checks.append(lambda v: all(p(v) for p in parts))
    if "anyOf" in schema:
        options_ = [compile_schema(s) for s in schema["anyOf"]]
        # a False option may only mean "not modelled": anyOf is valid when a modelled one passes
        checks.append(lambda v: any(o(v) for o in options_))
    return lambda v: all(c(v) for c in checks)
