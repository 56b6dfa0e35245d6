"""The fast validity check agrees with jsonschema on our schema (it decides whether jsonschema runs)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from orchestrator.manifest.fastcheck import UnsupportedSchema, compile_schema, equal
from orchestrator.manifest.loader import parse_text
from orchestrator.manifest.schema import fast_check, load_schema, validator

EXAMPLES = Path(__file__).resolve().parents[3] / "manifests"


def valid_documents() -> list[Any]:
    docs = []
    for f in sorted(EXAMPLES.rglob("*.yaml")):
        parsed, _ = parse_text(f.read_text(), str(f), f.parent)
        docs.extend(d.data for d in parsed)
    return docs


VALID = valid_documents()
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=True),
                    st.sampled_from(["", "x", "64Mi", "5s", "busybox:latest", "/data", "on-failure", "tcp",
                                     "container:api", "0-1", "NET_RAW", "A=1", "8080:80", "healthy", "0644"]))
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=3), max_leaves=8)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


def agree(data: Any) -> None:
    assert fast_check()(data) == validator().is_valid(data)


def test_examples_are_valid_for_both() -> None:
    assert VALID
    for doc in VALID:
        assert fast_check()(doc) and validator().is_valid(doc)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_agrees_on_mutated_manifests(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(VALID)))
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(paths(doc)))
        new = data.draw(json_values)
        if not where:
            doc = new
            continue
        parent = doc
        for part in where[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[where[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["x", "image", "extra", "replicas", "cpus"]))] = new
        else:
            parent[where[-1]] = new
    agree(doc)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_agrees_on_random_values(value: Any) -> None:
    agree(value)


def test_equal_follows_json_semantics() -> None:
    assert equal(1, 1.0) and not equal(True, 1) and not equal([True], [1]) and equal({"a": [1]}, {"a": [1.0]})


def test_unknown_keywords_are_refused() -> None:
    with pytest.raises(UnsupportedSchema):
        compile_schema({"type": "object", "dependentRequired": {}})
    with pytest.raises(UnsupportedSchema):
        compile_schema({"$ref": "https://example.com/x"})


def test_compiles_the_real_schema() -> None:
    assert callable(compile_schema(load_schema()))
    assert isinstance(validator(), Draft202012Validator)
