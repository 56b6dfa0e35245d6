"""JSON-schema validation of a runtime spec against the vendored OCI runtime-spec schemas.

Called by ``spec.validate`` in the API process only (jsonschema is heavy and never imported by the fork
server or the container init). The schemas live in ``orchestrator/data/oci-runtime-spec`` (see the
README there for what was adapted). Every ``$ref`` is inlined once per process (the schemas have no
recursive references): validating a ref-free schema takes ~0.6 ms instead of ~4 ms with a ref registry,
which matters on the container start path; for the same reason each distinct seccomp profile (hundreds
of entries, ~15 ms) is validated once per process.
"""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path
from typing import Any

_ROOT = "config-schema.json"
_FILES = (_ROOT, "config-linux.json", "defs.json", "defs-linux.json")


def _inline(node: Any, current: str, docs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:          # draft 4: members beside "$ref" are ignored
            filename, _, pointer = str(node["$ref"]).partition("#")
            filename = filename or current
            target = docs[filename]
            for part in pointer.strip("/").split("/"):
                if part:
                    target = target[part]
            return _inline(target, filename, docs)
        return {k: _inline(v, current, docs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(x, current, docs) for x in node]
    return node


_lock = threading.Lock()


def _validators(schema_dir: Path) -> tuple[Any, Any]:
    """(whole config, ``linux.seccomp`` alone), built once per process: the first creates of an apply
    run in parallel threads, and each would otherwise build its own (~40 ms of CPU under the GIL)."""
    with _lock:
        return _build_validators(schema_dir)


@functools.lru_cache(maxsize=4)
def _build_validators(schema_dir: Path) -> tuple[Any, Any]:
    docs = {name: json.loads((schema_dir / name).read_text()) for name in _FILES}
    flat = _inline(docs[_ROOT], _ROOT, docs)
    seccomp = flat["properties"]["linux"]["properties"]["seccomp"]
    import jsonschema  # here, not at the top: only a create pays its import, never a no-op pass

    return jsonschema.Draft4Validator(flat), jsonschema.Draft4Validator(seccomp)


def _messages(validator: Any, doc: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str, str]]:
    out = []
    for err in validator.iter_errors(doc):
        path = (*prefix, *err.absolute_path)
        where = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in path).lstrip(".")
        out.append((where or "<root>", err.message))
    return out


def _seccomp_messages(schema_dir: Path, canonical: str) -> tuple[tuple[str, str], ...]:
    with _lock:
        return _seccomp_messages_once(schema_dir, canonical)


@functools.lru_cache(maxsize=32)
def _seccomp_messages_once(schema_dir: Path, canonical: str) -> tuple[tuple[str, str], ...]:
    # a seccomp profile is most of a spec's size (hundreds of syscall names) and the same for every
    # container of a service: validate each distinct one once
    return tuple(_messages(_build_validators(schema_dir)[1], json.loads(canonical), ("linux", "seccomp")))


def _quick(schema_dir: Path) -> Any:
    with _lock:
        return _quick_once(schema_dir)


@functools.lru_cache(maxsize=4)
def _quick_once(schema_dir: Path) -> Any:
    from orchestrator.runtime.linux.quickcheck import compile_schema
    return compile_schema(_build_validators(schema_dir)[0].schema)


def errors(spec: dict[str, Any], schema_dir: Path) -> list[str]:
    """Every schema violation, as ``json.path: message`` lines, sorted by path. A spec that
    ``quickcheck`` finds certainly valid skips jsonschema (~0.6 ms of every container start)."""
    whole, _ = _validators(schema_dir)
    quick = _quick(schema_dir)
    linux = spec.get("linux")
    found: list[tuple[str, str]] = []
    if isinstance(linux, dict) and isinstance(linux.get("seccomp"), dict):
        rest = {**spec, "linux": {k: v for k, v in linux.items() if k != "seccomp"}}
        found += _seccomp_messages(schema_dir, json.dumps(linux["seccomp"], sort_keys=True))
        if not quick(rest):
            found += _messages(whole, rest)
    elif not quick(spec):
        found += _messages(whole, spec)
    return [f"{where}: {message}" for where, message in sorted(found)]
