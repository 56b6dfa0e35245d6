"""``orchestrator validate``: exit codes, the summary line, problems as lines or as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[3]
BAD = ("apiVersion: orchestrator/v1\nkind: Stack\nmetadata: {name: x}\nspec:\n  services:\n"
       "    a: {image: i, replicas: two}\n")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # main() points structlog at the sys.stderr of the moment, which pytest closes after the test;
    # put back the previous configuration so later tests do not log into a closed file
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_shipped_manifests_validate(capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["validate", "-f", "manifests/"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ") and " stacks, " in out and " services in " in out


def test_invalid_exits_1_with_file_line_col(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert main(["validate", "-f", str(bad)]) == 1
    err = capsys.readouterr().err
    assert (f'error: {bad}:6:29: spec.services.a.replicas: expected an integer between 0 and 1000, '
            'got "two"') in err
    assert "1 problem found" in err


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert main(["-o", "json", "validate", "-f", str(bad)]) == 1
    problems = json.loads(capsys.readouterr().out)
    assert problems == [{"file": str(bad), "line": 6, "col": 29, "path": "spec.services.a.replicas",
                         "message": 'expected an integer between 0 and 1000, got "two"'}]
    good = tmp_path / "good.yaml"
    good.write_text(BAD.replace("two", "2"))
    assert main(["-o", "json", "validate", "-f", str(good)]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_stdin_and_no_traceback_in_a_real_process(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "validate", "-f", "-"], input="a: [\n",
                          capture_output=True, text=True, check=False, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: <stdin>:2:1: invalid YAML")
    assert "Traceback" not in proc.stderr
