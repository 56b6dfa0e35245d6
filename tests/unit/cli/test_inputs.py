"""``-f`` inputs: Compose files are detected by shape and converted; manifests load as usual."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli.inputs import load_inputs
from orchestrator.errors import ManifestError

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "tests" / "fixtures" / "compose" / "webapp" / "compose.yaml"


def test_compose_and_manifests_together(capsys: pytest.CaptureFixture[str]) -> None:
    ss = load_inputs([COMPOSE, ROOT / "manifests" / "demo"])
    names = [s.name for s in ss.stacks]
    assert "demo" in names and len(names) == 2
    assert "warning: " in capsys.readouterr().err           # unsupported keys are reported, not dropped


def test_same_stack_twice_is_an_error() -> None:
    with pytest.raises(ManifestError, match="also defined"):
        load_inputs([COMPOSE, COMPOSE])


def test_plain_manifest_is_not_taken_for_compose(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("apiVersion: orchestrator/v1\nkind: Stack\nmetadata: {name: s}\nspec:\n  services:\n"
                 "    a: {image: busybox:latest}\n")
    assert [s.name for s in load_inputs([f]).stacks] == ["s"]
