"""Schema: the file itself (2020-12, described, closed), and the messages its errors turn into."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from orchestrator.errors import ManifestError
from orchestrator.manifest import load_text
from orchestrator.manifest.schema import describe, load_schema, schema_path

HEAD = "apiVersion: orchestrator/v1\nkind: Stack\nmetadata: {name: shop}\nspec:\n  services:\n"


def problems(service_body: str) -> list[str]:
    text = HEAD + "    api:\n      image: busybox:latest\n" + service_body
    with pytest.raises(ManifestError) as info:
        load_text(text, "m.yaml")
    return [str(p) for p in info.value.problems]


def _objects(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield where, node
        for k, v in node.items():
            yield from _objects(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _objects(v, f"{where}/{i}")


def test_schema_is_valid_2020_12_with_an_id() -> None:
    schema = json.loads(schema_path().read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("stack.schema.json")


def test_every_property_has_a_description_and_objects_are_closed() -> None:
    for where, node in _objects(load_schema()):
        is_schema = where.split("/")[-1] != "properties"   # not a property literally named "properties"
        if is_schema and isinstance(node.get("properties"), dict):
            assert node.get("additionalProperties") is False, where
            for name, prop in node["properties"].items():
                assert "description" in prop, f"{where}/properties/{name}"


def test_type_error_says_expected_and_got() -> None:
    assert problems("      replicas: two\n") == [
        'm.yaml:8:17: spec.services.api.replicas: expected an integer between 0 and 1000, got "two"']


def test_unknown_field_is_located_at_the_key_with_a_suggestion() -> None:
    assert problems("      replicaz: 2\n") == [
        'm.yaml:8:7: spec.services.api.replicaz: unknown field "replicaz" (did you mean "replicas"?)']


def test_camel_case_suggestion_for_snake_case() -> None:
    assert problems("      working_dir: /app\n") == [
        'm.yaml:8:7: spec.services.api.working_dir: unknown field "working_dir" (did you mean "workingDir"?)']


def test_enum_with_suggestion() -> None:
    assert problems("      restart: {policy: alway}\n") == [
        'm.yaml:8:25: spec.services.api.restart.policy: expected one of "never", "on-failure", "always", '
        'got "alway" (did you mean "always"?)']


def test_one_of_picks_the_branch_of_the_right_type() -> None:
    # a mapping was meant: report the missing key, not "expected a string"
    assert problems("      ports: [{hostPort: 80}]\n") == [
        'm.yaml:8:15: spec.services.api.ports[0]: missing required field "containerPort"']
    # neither branch's type: say what is accepted
    assert problems("      resources: {memory: true}\n") == [
        "m.yaml:8:27: spec.services.api.resources.memory: expected an integer >= 0 or a size like 64Mi, "
        "1G or 512k, got true"]


def test_every_error_is_reported() -> None:
    got = problems("      replicas: -1\n      user: [x]\n      stopSignal: term\n      labels: {a: {}}\n")
    assert len(got) == 4


def test_required_and_const() -> None:
    with pytest.raises(ManifestError) as info:
        load_text("apiVersion: v1\nkind: Stack\nmetadata: {}\nspec: {services: {}}\n", "m.yaml")
    assert [str(p) for p in info.value.problems] == [
        'm.yaml:1:13: apiVersion: expected "orchestrator/v1", got "v1"',
        'm.yaml:3:11: metadata: missing required field "name"']


def test_x_extension_fields_are_allowed() -> None:
    text = "x-defaults: &d {image: busybox:latest}\n" + HEAD + "    api: {<<: *d}\n"
    assert load_text(text, "m.yaml").stacks[0].services[0].image == "busybox:latest"


@pytest.mark.parametrize(("schema", "words"), [
    ({"type": "integer", "minimum": 0}, "an integer >= 0"),
    ({"type": "number", "exclusiveMinimum": 0}, "a number > 0"),
    ({"type": "integer", "minimum": 1, "maximum": 9}, "an integer between 1 and 9"),
    ({"enum": ["a", "b"]}, 'one of "a", "b"'),
    ({"type": ["string", "null"]}, "a string or nothing (null)"),
    ({"$ref": "#/$defs/duration"}, "a number >= 0 or a duration like 500ms, 5s or 1m30s"),
])
def test_describe(schema: dict[str, Any], words: str) -> None:
    assert describe(schema) == words
