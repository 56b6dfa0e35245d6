"""Validate documents against ``schemas/stack.schema.json`` and explain every error in plain words.

The schema is the single source of truth for the shape of a manifest. We run jsonschema's
``Draft202012Validator.iter_errors`` so that EVERY error is reported, and translate each one into an
``orchestrator.errors.Problem`` located at the offending node (``Document.mark``): the value for type /
range / pattern errors, the key for unknown fields, the mapping for missing fields. jsonschema's own
messages (``'two' is not of type 'integer'``) are replaced for the common validators by messages that
say what was expected and what was found, and suggest the closest valid name for a misspelt field.

Neighbours: ``manifest.loader`` provides ``Document``; ``manifest.convert`` runs only on documents this
module passed. ``scripts/gen_reference.py`` renders the same schema into docs/manifest-reference.md.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # imported when an error must be explained: valid manifests never pay jsonschema's import (~40 ms)
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

from orchestrator.errors import Problem
from orchestrator.manifest.fastcheck import compile_schema
from orchestrator.manifest.loader import Document, PathKey
from orchestrator.manifest.units import BYTES_PATTERN, CPUS_PATTERN, DURATION_PATTERN

SCHEMA_FILE = "stack.schema.json"

# What a pattern means, in words (patterns themselves are unreadable in a message).
_PATTERN_HINTS: dict[str, str] = {
    BYTES_PATTERN: "a size like 64Mi, 1G or 512k",
    CPUS_PATTERN: "a number of CPUs like 0.5 or 500m",
    DURATION_PATTERN: "a duration like 500ms, 5s or 1m30s",
    "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$":
        "a lowercase name of letters, digits and '-' (at most 63, not starting or ending with '-')",
    "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$": "a name of letters, digits, '_', '.' and '-' (at most 63)",
    "^[A-Za-z_][A-Za-z0-9_]*$": "an environment variable name like DB_PASSWORD",
    "^/": "an absolute path",
    "^/dev/": "a device path under /dev",
    "^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$": 'a cpu list like "0-3,5"',
    "^(SIG)?[A-Z][A-Z0-9]*([+-][0-9]+)?$": "a signal name like SIGTERM",
    "^(restart|none|signal:(SIG)?[A-Z][A-Z0-9]*)$": "restart, none or signal:SIGNAME",
    "^[^:]+:/[^:]*(:(ro|rw))?$": 'a mount like "data:/data", "./site:/www:ro"',
    "^0?[0-7]{3,4}$": 'an octal mode like "0644"',
    "^[^=\\u0000]+=.*$": 'an entry like "NAME=value"',
    "^[^=\\u0000]+$": "a variable name without '='",
    "^[^\\s]+$": "an image reference like busybox:latest",
    "^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$": "an IPv4 subnet like 10.88.0.0/24",
    "^[rwm]{1,3}$": "device permissions from r, w, m",
    "^(bridge|none|host|container:[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)$":
        "bridge, none, host or container:SERVICE",
    "^(([0-9]{1,3}(\\.[0-9]{1,3}){3}|\\[[0-9a-fA-F:.]+\\]):)?([0-9]{1,5}:)?[0-9]{1,5}(/(tcp|udp))?$":
        'a port mapping like "8080:80/tcp" or "127.0.0.1:8080:80"',
    "^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$": 'a user like "1000:1000" or "nobody"',
    "^[0-9a-fA-F:.]+$": "an IP address",
    "^/dev/[^:]+(:[rwm]{1,3})?$": 'a device like "/dev/fuse" or "/dev/fuse:rw"',
    "^[a-z0-9_]+(\\.[a-zA-Z0-9_-]+)+$": "a sysctl name like net.ipv4.ip_forward",
}

# Docker Compose names people carry over, at the service level -> where the field lives here.
_COMPOSE_NAMES = {
    "cap_add": "security.capabilities.add", "cap_drop": "security.capabilities.drop",
    "read_only": "security.readOnlyRootfs", "security_opt": "security", "mem_limit": "resources.memory",
    "memswap_limit": "resources.memorySwap", "mem_reservation": "resources.memoryReservation",
    "pids_limit": "resources.pids", "cpu_quota": "resources.cpus", "blkio_config": "resources.blkio",
    "environment": "env", "networks": "network", "network_mode": "network", "deploy": "replicas",
    "tmpfs": "volumes", "sysctls": "security.sysctls", "userns_mode": "security.userns",
    "devices": "resources.devices", "pid": "namespaces.pid", "ipc": "namespaces.ipc",
    "stop_grace_period": "stopGracePeriod", "oom_score_adj": "oomScoreAdj", "expose": "ports",
}

_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "nothing (null)"}


def schema_path() -> Path:
    """The schema file: packaged data when installed, else the repository's ``schemas/``."""
    packaged = resources.files("orchestrator") / "data" / SCHEMA_FILE
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "schemas" / SCHEMA_FILE


@cache
def load_schema() -> dict[str, Any]:
    with schema_path().open(encoding="utf-8") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


@cache
def validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema())


@cache
def fast_check() -> Callable[[Any], bool]:
    return compile_schema(load_schema())


def validate(doc: Document) -> list[Problem]:
    """Every schema error of one document as a located Problem (empty when valid)."""
    if fast_check()(doc.data):  # the common case; jsonschema only runs to explain what is wrong
        return []
    problems: list[Problem] = []
    for error in validator().iter_errors(doc.data):
        problems.extend(_explain(doc, error))
    return problems


# ---- explaining errors -----------------------------------------------------------------------------

def show(value: Any) -> str:
    """A value as the user wrote it (JSON-ish: strings quoted, true/false/null), shortened."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + '..."'


def describe(schema: Any) -> str:
    """What a (sub)schema accepts, in words: ``an integer >= 0``, ``a size like 64Mi``."""
    if not isinstance(schema, dict):
        return "a valid value"
    if "$ref" in schema:
        return describe(_resolve(schema["$ref"]))
    if "const" in schema:
        return show(schema["const"])
    if "enum" in schema:
        values = schema["enum"]
        return ("one of " + ", ".join(show(v) for v in values) if len(values) <= 8
                else f"a known {schema.get('title', 'name')}")
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " or ".join(dict.fromkeys(describe(b) for b in schema[key]))
    if "pattern" in schema:
        return _PATTERN_HINTS.get(schema["pattern"], f"a string matching {schema['pattern']}")
    types = schema.get("type")
    if isinstance(types, list):
        return " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in types)
    if types is None:
        return "a valid value"
    words = _TYPE_WORDS.get(str(types), str(types))
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if types in ("integer", "number"):
        if lo is not None and hi is not None:
            return f"{words} between {lo} and {hi}"
        if lo is not None:
            return f"{words} >= {lo}"
        if "exclusiveMinimum" in schema:
            return f"{words} > {schema['exclusiveMinimum']}"
        if hi is not None:
            return f"{words} <= {hi}"
    return words


def _resolve(ref: str) -> Any:
    node: Any = load_schema()
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _explain(doc: Document, error: ValidationError) -> list[Problem]:
    path: PathKey = tuple(error.absolute_path)
    kind = error.validator
    if "propertyNames" in error.relative_schema_path:
        return _bad_names(doc, error.instance, error.schema, path)
    if kind == "additionalProperties":
        return _unknown_fields(doc, error, path)
    if kind in ("oneOf", "anyOf"):
        return _one_of(doc, error, path)
    if kind == "required":
        missing = error.message.split("'")[1] if error.message.count("'") >= 2 else "?"
        return [doc.problem(path, f'missing required field "{missing}"')]
    if kind in ("type", "minimum", "maximum", "exclusiveMinimum", "pattern", "const", "enum"):
        return [doc.problem(path, _expected(error.schema, error.instance, kind))]
    if kind == "minItems":
        return [doc.problem(path, f"expected at least {error.validator_value} item(s), got "
                                  f"{len(error.instance)}")]
    if kind == "uniqueItems":
        return [doc.problem(path, "list has duplicate items")]
    if kind == "minLength":
        return [doc.problem(path, "must not be empty")]
    return [doc.problem(path, error.message)]  # rare validators: jsonschema's wording is fine


def _expected(schema: dict[str, Any], instance: Any, kind: str) -> str:
    message = f"expected {describe(schema)}, got {show(instance)}"
    if kind == "enum" and len(schema["enum"]) > 8:  # listing them all would drown the message
        message = f"unknown {schema.get('title', 'name')} {show(instance)}"
    if kind == "enum" and isinstance(instance, str):
        hint = _closest(instance, [str(v) for v in schema["enum"]])
        if hint:
            message += f' (did you mean "{hint}"?)'
    return message


def _closest(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate, also matching snake_case or other case to camelCase (read_only -> readOnly)."""
    cands = list(candidates)
    folded = {c.lower().replace("_", "").replace("-", ""): c for c in cands}
    key = word.lower().replace("_", "").replace("-", "")
    if key in folded:
        return folded[key]
    close = difflib.get_close_matches(word, cands, n=1, cutoff=0.6)
    if close:
        return close[0]
    close = difflib.get_close_matches(key, list(folded), n=1, cutoff=0.75)
    return folded[close[0]] if close else None


def _unknown_fields(doc: Document, error: ValidationError, path: PathKey) -> list[Problem]:
    known = list(error.schema.get("properties", {}))
    patterns = error.schema.get("patternProperties", {})
    out = []
    for key in error.instance:
        if key in known or any(key.startswith(p.lstrip("^")) for p in patterns):
            continue
        message = f'unknown field "{key}"'
        # best first: same name in other spelling, a Compose name, the same name one level down, a typo
        hint = (next((k for k in known if _fold(k) == _fold(key)), None)
                or (_COMPOSE_NAMES.get(key) if "image" in known else None)
                or _nested_home(error.schema, key) or _closest(key, known))
        if hint:
            message += f' (did you mean "{hint}"?)'
        elif known:
            message += "; expected one of " + ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        out.append(doc.problem((*path, key), message, key=True))
    return out


def _fold(word: str) -> str:
    return word.lower().replace("_", "").replace("-", "")


def _nested_home(schema: dict[str, Any], key: str) -> str | None:
    """``memory`` at the service level belongs in ``resources.memory``: find such a field one level down."""
    for parent, sub in schema.get("properties", {}).items():
        node = _resolve(sub["$ref"]) if isinstance(sub, dict) and "$ref" in sub else sub
        branches = [node, *node.get("oneOf", [])] if isinstance(node, dict) else []
        for branch in branches:
            for name in branch.get("properties", {}) if isinstance(branch, dict) else ():
                if _fold(name) == _fold(key):
                    return f"{parent}.{name}"
    return None


def _bad_names(doc: Document, name: Any, sub: dict[str, Any], path: PathKey) -> list[Problem]:
    """A key that breaks ``propertyNames`` (a service called ``Web_1``): located at the key."""
    if "enum" in sub:
        message = f'unknown name "{name}"'
        hint = _closest(str(name), [str(v) for v in sub["enum"]])
        message += f' (did you mean "{hint}"?)' if hint else "; expected one of " + ", ".join(sub["enum"])
    else:
        message = f'invalid name "{name}": expected {describe(sub)}'
    return [doc.problem((*path, name), message, key=True)]


def _one_of(doc: Document, error: ValidationError, path: PathKey) -> list[Problem]:
    """Pick the branch the user evidently meant and report its errors; else say what was accepted."""
    branches: list[Any] = error.validator_value
    instance = error.instance
    if not error.context:  # oneOf matched several branches
        required = [b["required"][0] for b in branches if isinstance(b, dict) and "required" in b]
        if required and len(required) == len(branches):
            present = [r for r in required if isinstance(instance, dict) and r in instance]
            return [doc.problem(path, "set only one of " + ", ".join(f'"{r}"' for r in present))]
        return [doc.problem(path, f"ambiguous value {show(instance)}: it matches more than one form")]
    # Group the sub-errors by branch; a branch whose error is at the instance itself (wrong type,
    # missing key, pattern) is one the user did not mean, unless every branch is like that.
    by_branch: dict[int, list[ValidationError]] = {}
    for sub in error.context:
        by_branch.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
    if all(isinstance(b, dict) and set(b) == {"required"} for b in branches):
        names = ", ".join(f'"{b["required"][0]}"' for b in branches)
        return [doc.problem(path, f"missing one of the fields {names}")]
    # the branches whose type fits the value (no type error at the value itself) are what the user meant
    fitting = {i: errs for i, errs in by_branch.items()
               if not any(e.validator == "type" and len(e.absolute_path) == len(path) for e in errs)}
    if fitting:
        best = max(fitting.values(), key=lambda errs: (max(len(e.absolute_path) for e in errs), -len(errs)))
        out: list[Problem] = []
        for sub in best:
            out.extend(_explain(doc, sub))
        return out
    return [doc.problem(path, f"expected {describe(error.schema)}, got {show(instance)}")]
