"""The convert and export verbs end to end, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "compose"


def test_convert_to_stdout_with_warnings_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(FIXTURES / "unsupported" / "compose.yaml")]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out)["kind"] == "Stack"
    assert f"warning: {FIXTURES / 'unsupported' / 'compose.yaml'}:5:5: services.app.build:" in err


def test_convert_to_file_then_export_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = tmp_path / "stack.yaml"
    assert main(["convert", str(FIXTURES / "workers" / "compose.yaml"), "--out", str(stack),
                 "--profile", "cron"]) == 0
    assert "scheduler" in yaml.safe_load(stack.read_text())["spec"]["services"]
    out_dir = tmp_path / "k8s"
    assert main(["export", "kubernetes", "-f", str(stack), "--dir", str(out_dir)]) == 0
    _, err = capsys.readouterr()
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.yaml"))
    assert "workers/60-deployment-scheduler.yaml" in files
    assert "not mappable" in err.splitlines()[-1]
    first = {f: (out_dir / f).read_bytes() for f in files}

    # re-export: byte-identical; drop the cron profile: the stale deployment is pruned by inventory
    assert main(["convert", str(FIXTURES / "workers" / "compose.yaml"), "--out", str(stack)]) == 0
    (out_dir / "workers" / "hand-written.yaml").write_text("kept: true\n")
    assert main(["export", "kubernetes", "-f", str(stack), "--dir", str(out_dir)]) == 0
    now = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.yaml"))
    gone = {"workers/50-service-scheduler.yaml", "workers/60-deployment-scheduler.yaml"}
    assert set(now) == (set(files) - gone) | {"workers/hand-written.yaml"}
    for f in now:
        if f in first:
            assert (out_dir / f).read_bytes() == first[f], f


def test_export_stream_and_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = tmp_path / "stack.yaml"
    assert main(["convert", str(FIXTURES / "webapp" / "compose.yaml"), "--out", str(stack)]) == 0
    capsys.readouterr()
    assert main(["-o", "json", "export", "kubernetes", "-f", str(stack)]) == 0
    out, err = capsys.readouterr()
    docs = list(yaml.safe_load_all(out))
    assert docs[0]["kind"] == "Namespace" and len(docs) > 5
    report = json.loads(err)
    assert report["summary"]["exact"] > 0 and report["fields"]


def test_convert_invalid_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  app:\n    image: a\n    image: b\n")
    assert main(["convert", str(bad)]) == 1
    assert f"{bad}:4:5" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.yaml")]) == 1


def test_convert_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for _ in range(2):
        assert main(["convert", str(FIXTURES / "gateway" / "compose.yaml")]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert main(["-o", "json", "convert", str(FIXTURES / "gateway" / "compose.yaml")]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["name"] == "gateway"


def test_export_takes_compose_files_directly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "kubernetes", "-f", str(FIXTURES / "workers" / "compose.yaml"),
                 "-f", str(FIXTURES / "gateway" / "compose.yaml")]) == 0
    out, err = capsys.readouterr()
    namespaces = [d["metadata"]["name"] for d in yaml.safe_load_all(out) if d["kind"] == "Namespace"]
    assert namespaces == ["gateway", "workers"]
    assert "warning:" in err and "rslave" in err
