"""Loader: duplicate keys, marks, multi-document files, directories, bad YAML, caps, refused tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ManifestError
from orchestrator.manifest import load, load_text
from orchestrator.manifest.loader import MAX_FILE_BYTES, dotted, expand_paths, parse_text

STACK = """apiVersion: orchestrator/v1
kind: Stack
metadata: {{name: {name}}}
spec:
  services:
    api: {{image: busybox:latest}}
"""


def parse(text: str) -> tuple[list, list]:  # type: ignore[type-arg]
    return parse_text(text, "f.yaml", Path("/tmp"))


def test_marks_for_values_and_keys() -> None:
    docs, problems = parse("a: 1\nb:\n  - x\n  - {c: 2}\n")
    assert not problems
    doc = docs[0]
    assert doc.data == {"a": 1, "b": ["x", {"c": 2}]}
    assert doc.marks[("a",)] == (1, 4)
    assert doc.marks[("b", 1, "c")] == (4, 9)
    assert doc.key_marks[("b", 1, "c")] == (4, 6)
    assert doc.mark(("b", 1, "missing", "deeper")) == (4, 5)   # nearest ancestor


def test_duplicate_key_is_refused_at_the_duplicate() -> None:
    _, problems = parse("a: 1\nb: 2\na: 3\n")
    assert [str(p) for p in problems] == ["f.yaml:3:1: duplicate key 'a' (first defined at line 1)"]


def test_duplicate_key_in_flow_mapping() -> None:
    _, problems = parse("x: {a: 1, a: 2}\n")
    assert [str(p) for p in problems] == ["f.yaml:1:11: duplicate key 'a' (first defined at line 1)"]


def test_merge_keys_explicit_wins_and_no_false_duplicate() -> None:
    docs, problems = parse("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n")
    assert not problems
    assert docs[0].data["m"] == {"x": 1, "y": 3}
    docs, problems = parse("base: &b {x: 1, y: 2}\nm:\n  y: 3\n  <<: [*b, {z: 4, x: 5}]\n")
    assert not problems
    assert docs[0].data["m"] == {"x": 1, "y": 3, "z": 4}
    assert docs[0].marks[("m", "y")] == (3, 6)      # the explicit value, not the anchor's


def test_timestamps_stay_strings_and_keys_stay_text() -> None:
    docs, _ = parse("d: 2024-01-01\non: yes\n")
    assert docs[0].data == {"d": "2024-01-01", "on": True}


def test_multi_document() -> None:
    text = STACK.format(name="a") + "---\n" + STACK.format(name="b") + "---\n"
    stacks = load_text(text, "multi.yaml")
    assert [s.name for s in stacks.stacks] == ["a", "b"]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_documents_are_nothing(text: str) -> None:
    assert load_text(text, "empty.yaml").stacks == ()


def test_bad_yaml_gives_file_line_col() -> None:
    with pytest.raises(ManifestError) as info:
        load_text("a: [1, 2\nb: 3\n", "bad.yaml")
    (p,) = info.value.problems
    assert (p.file, p.line) == ("bad.yaml", 2)
    assert p.message.startswith("invalid YAML:")


@pytest.mark.parametrize("text", ["a: !!python/object:os.system x\n", "a: !!python/name:os.system\n",
                                  "a: !custom {x: 1}\n", "a: !!binary aGVsbG8=\n", "? [a, b]\n: 1\n",
                                  "a: !!omap [{x: 1}]\n"])
def test_unsafe_or_odd_constructs_are_refused(text: str) -> None:
    _, problems = parse(text)
    assert len(problems) == 1 and problems[0].line == 1


def test_alias_bomb_is_capped() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefg", "bcdefgh", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    _, problems = parse("\n".join(lines) + "\n")
    assert "document too large" in problems[0].message


def test_recursive_alias_is_refused() -> None:
    _, problems = parse("a: &a [*a]\n")
    assert problems and "nested" in problems[0].message


def test_huge_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * (MAX_FILE_BYTES + 1) + "\n")
    with pytest.raises(ManifestError, match="file too large"):
        load([big])


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(ManifestError) as info:
        load([bad, tmp_path / "nope.yaml"])
    messages = sorted(p.message for p in info.value.problems)
    assert messages == ["no such file or directory", "not UTF-8 text (byte 3)"]


def test_directory_is_recursive_sorted_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "b" / "two.yml").write_text(STACK.format(name="two"))
    (tmp_path / "a.yaml").write_text(STACK.format(name="one"))
    (tmp_path / "notes.txt").write_text("not yaml: [")
    (tmp_path / ".git" / "x.yaml").write_text("not: [valid")
    files, problems = expand_paths([tmp_path])
    assert not problems
    assert [f.relative_to(tmp_path).as_posix() for f, _ in files] == ["a.yaml", "b/two.yml"]
    stacks = load([tmp_path])
    assert [s.name for s in stacks.stacks] == ["one", "two"]
    assert len(stacks.files) == 2


def test_every_file_is_reported_not_just_the_first(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("a: [\n")
    (tmp_path / "b.yaml").write_text(STACK.format(name="b").replace("busybox:latest", "busybox:latest, x: 1"))
    with pytest.raises(ManifestError) as info:
        load([tmp_path])
    assert {Path(p.file).name for p in info.value.problems} == {"a.yaml", "b.yaml"}


def test_no_files_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"no manifest files \(\*.yaml, \*.yml\) found"):
        load([tmp_path])


def test_dotted_paths() -> None:
    assert dotted(("spec", "services", "api", "ports", 0)) == "spec.services.api.ports[0]"
    label = ("metadata", "labels", "app.kubernetes.io/name")
    assert dotted(label) == 'metadata.labels["app.kubernetes.io/name"]'


def test_gc_state_is_restored_even_on_errors() -> None:
    import gc

    assert gc.isenabled()
    load_text(STACK.format(name="a"), "ok.yaml")
    assert gc.isenabled()
    with pytest.raises(ManifestError):
        load_text("a: [\n", "bad.yaml")
    assert gc.isenabled()
    gc.disable()
    try:
        load_text(STACK.format(name="a"), "ok.yaml")
        assert not gc.isenabled()
    finally:
        gc.enable()
