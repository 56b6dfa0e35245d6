"""Compose YAML reading: positions kept, duplicate keys refused with their line, merge keys honoured."""

from __future__ import annotations

import pytest

from orchestrator.errors import ManifestError
from orchestrator.interop.yamlsource import MarkedList, MarkedMap, load_text


def test_positions_of_keys_and_items() -> None:
    data = load_text("services:\n  web:\n    image: nginx\n    ports:\n      - '80:80'\n", "c.yaml")
    assert isinstance(data, MarkedMap)
    web = data["services"]["web"]
    assert web.where("image") == (3, 5)
    ports = web["ports"]
    assert isinstance(ports, MarkedList) and ports.where(0) == (5, 9)


def test_duplicate_keys_are_all_reported_with_lines() -> None:
    text = "services:\n  web:\n    image: a\n    image: b\n  web:\n    image: c\n"
    with pytest.raises(ManifestError) as exc:
        load_text(text, "c.yaml")
    lines = [(p.line, p.path) for p in exc.value.problems]
    assert lines == [(4, "image"), (5, "web")]
    assert "duplicate key (first at line 3)" in str(exc.value)


def test_merge_keys_explicit_wins_and_is_not_a_duplicate() -> None:
    text = "x: &base {a: 1, b: 2}\ny:\n  <<: *base\n  b: 3\n"
    data = load_text(text, "c.yaml")
    assert dict(data["y"]) == {"a": 1, "b": 3}


def test_syntax_error_is_located() -> None:
    with pytest.raises(ManifestError) as exc:
        load_text("services:\n  web: [unclosed\n", "c.yaml")
    problem = exc.value.problems[0]
    assert problem.file == "c.yaml" and problem.line >= 2 and "invalid YAML" in problem.message


def test_dates_stay_strings() -> None:
    assert load_text("v: 2024-01-01\n", "c.yaml")["v"] == "2024-01-01"


def test_scalars_resolve_as_yaml_1_2_like_compose() -> None:
    data = load_text("a: yes\nb: 22:22\nc: true\nd: 0440\ne: 1.5\nf: ~\ng: 08\nh: No\ni: 0o17\n", "c.yaml")
    assert dict(data) == {"a": "yes", "b": "22:22", "c": True, "d": 0o440, "e": 1.5, "f": None, "g": 8,
                          "h": "No", "i": 0o17}


def test_oversized_and_binary_input_is_refused() -> None:
    with pytest.raises(ManifestError, match="file too large"):
        load_text("a: " + "x" * (4 * 1024 * 1024), "big.yaml")
    with pytest.raises(ManifestError, match="NUL"):
        load_text("a: \0", "bin.yaml")
