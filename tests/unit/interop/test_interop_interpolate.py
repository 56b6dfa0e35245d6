"""Compose variable interpolation and .env parsing, case by case."""

from __future__ import annotations

import pytest

from orchestrator.errors import Problem
from orchestrator.interop.interpolate import (
    InterpolationError,
    interpolate_tree,
    parse_dotenv,
    substitute,
)
from orchestrator.interop.yamlsource import load_text

ENV = {"SET": "value", "EMPTY": "", "PORT": "8080"}

CASES = [
    ("plain", "plain", set()),
    ("$SET", "value", set()),
    ("${SET}", "value", set()),
    ("pre-${SET}-post", "pre-value-post", set()),
    ("${MISSING}", "", {"MISSING"}),
    ("$MISSING/x", "/x", {"MISSING"}),
    ("${MISSING:-def}", "def", set()),
    ("${EMPTY:-def}", "def", set()),
    ("${EMPTY-def}", "", set()),
    ("${MISSING-def}", "def", set()),
    ("${SET:-def}", "value", set()),
    ("${SET:+alt}", "alt", set()),
    ("${EMPTY:+alt}", "", set()),
    ("${EMPTY+alt}", "alt", set()),
    ("${MISSING+alt}", "", set()),
    ("$${SET}", "${SET}", set()),
    ("cost: $$5", "cost: $5", set()),
    ("${MISSING:-${PORT}}", "8080", set()),
    ("${MISSING:-${ALSO:-deep}}", "deep", set()),
    ("${SET:?must be set}", "value", set()),
    ("trailing $", "trailing $", set()),
]


@pytest.mark.parametrize(("text", "expected", "unset"), CASES)
def test_substitute(text: str, expected: str, unset: set[str]) -> None:
    seen: set[str] = set()
    assert substitute(text, ENV, seen) == expected
    assert seen == unset


@pytest.mark.parametrize("text", ["${MISSING:?need it}", "${EMPTY:?need it}", "${MISSING?x}", "${1BAD}",
                                  "${SET", "${SET%x}"])
def test_substitute_errors(text: str) -> None:
    with pytest.raises(InterpolationError):
        substitute(text, ENV, set())


def test_required_message_is_kept() -> None:
    with pytest.raises(InterpolationError, match=r"DB_PASSWORD.*set it in \.env"):
        substitute("${DB_PASSWORD:?set it in .env}", {}, set())


def test_tree_interpolation_locates_errors_and_unset_names() -> None:
    data = load_text("a:\n  b: ${NOPE}\n  c: ${X:?boom}\n  d: [x, '${SET}']\n  ${KEY}: 1\n", "c.yaml")
    problems: list[Problem] = []
    warnings: list[Problem] = []
    out = interpolate_tree(data, ENV, "c.yaml", problems, warnings)
    assert out["a"]["d"] == ["x", "value"]
    assert "${KEY}" in out["a"]                     # keys are not interpolated
    assert [(p.line, p.path) for p in problems] == [(3, "a.c")]
    assert [(w.line, w.path) for w in warnings] == [(2, "a.b")]
    assert "NOPE is not set" in warnings[0].message


def test_aliases_are_copied_not_mutated() -> None:
    data = load_text("x: &a {v: '${SET}'}\ny: *a\n", "c.yaml")
    out = interpolate_tree(data, ENV, "c.yaml", [], [])
    assert out["x"]["v"] == out["y"]["v"] == "value"
    assert data["x"]["v"] == "${SET}"


def test_parse_dotenv() -> None:
    text = "\n".join([
        "# comment", "", "A=1", "export B = two ", "C='${A} literal'", 'D="line\\nbreak ${A}"',
        "E=${A}${B} # trailing comment", "F=", "not a pair", "G=a#b",
    ])
    problems: list[Problem] = []
    env = parse_dotenv(text, ".env", {}, problems)
    assert env == {"A": "1", "B": "two", "C": "${A} literal", "D": "line\nbreak 1", "E": "1two", "F": "",
                   "G": "a#b"}
    assert [(p.line, p.message) for p in problems] == [(9, "expected KEY=VALUE, got 'not a pair'")]


def test_alias_bomb_is_refused() -> None:
    lines = ["a: &a ['$X', '$X', '$X', '$X', '$X', '$X', '$X', '$X', '$X', '$X']"]
    for i in range(1, 8):
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]")
    data = load_text("\n".join(lines) + "\n", "bomb.yaml")
    problems: list[Problem] = []
    interpolate_tree(data, {"X": "x"}, "bomb.yaml", problems, [])
    assert len(problems) == 1 and "more than" in problems[0].message
