"""Property tests: no input, however malformed, makes the loader raise anything but ManifestError."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import ManifestError
from orchestrator.manifest import load_text

DEMO = (Path(__file__).resolve().parents[3] / "manifests" / "demo" / "stack.yaml").read_text()
DEMO_DATA = yaml.safe_load(DEMO)

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def only_manifest_errors(text: str) -> None:
    try:
        load_text(text, "p.yaml")
    except ManifestError as exc:
        assert exc.problems, "a ManifestError must carry at least one problem"
        for p in exc.problems:
            assert p.file == "p.yaml" and p.line >= 0 and p.col >= 0 and p.message


@PROPS
@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    only_manifest_errors(text)


yaml_tokens = st.sampled_from([":", " ", "\n", "- ", "  ", "{", "}", "[", "]", ",", "&a ", "*a", "<<: ",
                               "!!int ", "!!str ", "!!python/object ", "? ", "|", ">", "'", '"', "#", "---\n",
                               "...\n", "~", "0o17", "0x1F", "1e3", ".inf", "yes", "null", "2024-01-01",
                               "apiVersion: orchestrator/v1\n", "kind: Stack\n", "spec:\n", "services:\n",
                               "image: busybox\n", "\t", "%YAML 1.1\n", "\ufeff", "\x00", "²"])


@PROPS
@given(st.lists(yaml_tokens | st.text(max_size=5), max_size=40))
def test_yaml_ish_token_soup(tokens: list[str]) -> None:
    only_manifest_errors("".join(tokens))


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                    st.sampled_from(["64Mi", "5s", "container:web", "0-99", "-1", "8080:80/udp", "ALL"]))
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4)
                      | st.dictionaries(st.text(max_size=10), kids, max_size=4), max_leaves=12)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@PROPS
@given(st.data())
def test_mutations_of_a_valid_manifest(data: st.DataObject) -> None:
    doc = copy.deepcopy(DEMO_DATA)
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.sampled_from(_paths(doc)))
        if not where:
            continue
        parent = doc
        for part in where[:-1]:
            parent = parent[part]
        parent[where[-1]] = data.draw(values)
    only_manifest_errors(yaml.safe_dump(doc))


@PROPS
@given(st.data())
def test_text_mutations_of_a_valid_manifest(data: st.DataObject) -> None:
    text = DEMO
    for _ in range(data.draw(st.integers(1, 5))):
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, min(len(text), i + 10)))
        text = text[:i] + data.draw(yaml_tokens | st.text(max_size=4)) + text[j:]
    only_manifest_errors(text)
