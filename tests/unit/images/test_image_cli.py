"""``orchestrator image import|ls|inspect|rm``: the handlers through their own argparse registration.

The runner below mirrors ``orchestrator.cli.main`` (global -o flag, errors -> message + exit code) but only
registers the image verbs, so these tests do not depend on other verb groups being importable.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from img_archives import entry, layer, oci_archive

from orchestrator.cli import image_cmds
from orchestrator.cli.context import Context
from orchestrator.errors import OrchestratorError
from orchestrator.settings import Settings


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-o", "--output", default="table")
    image_cmds.register(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args, Context(settings=Settings.from_env(), output=args.output)))
    except OrchestratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


LAYER = layer(entry("bin", tarfile.DIRTYPE, mode=0o755), entry("bin/sh", data=b"sh", mode=0o755))


def test_image_verbs(state_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = oci_archive(tmp_path / "a.tar", [LAYER], ref="demo:1")
    assert main(["image", "import", str(archive)]) == 0
    assert "imported demo:1" in capsys.readouterr().out
    assert main(["-o", "json", "image", "import", str(archive), "--name", "other"]) == 0
    image_id = json.loads(capsys.readouterr().out)["id"]

    assert main(["image", "ls"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["REPOSITORY", "TAG", "ID", "LAYERS", "SIZE", "CREATED"]
    assert {tuple(line.split()[:2]) for line in out[1:]} == {("demo", "1"), ("other", "latest")}

    assert main(["-o", "yaml", "image", "inspect", "demo:1"]) == 0
    assert f"id: {image_id}" in capsys.readouterr().out

    # the in-use contract: containers/<id>/image holds the image id
    (state_root / "containers/c1").mkdir(parents=True)
    (state_root / "containers/c1/image").write_text(image_id + "\n")
    assert main(["image", "rm", "other"]) == 0                 # untag only
    assert main(["image", "rm", "demo:1"]) == 1
    assert "in use by a container" in capsys.readouterr().err
    (state_root / "containers/c1/image").unlink()
    assert main(["image", "rm", "demo:1"]) == 0
    assert "deleted " + image_id in capsys.readouterr().out
    assert main(["image", "inspect", "demo:1"]) == 1
    assert "not found" in capsys.readouterr().err


def test_import_error_is_reported(state_root: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    evil = oci_archive(tmp_path / "evil.tar", [layer(entry("../x", data=b"x"))])
    assert main(["image", "import", str(evil)]) == 1
    err = capsys.readouterr().err
    assert "evil.tar" in err and "'..' component refused" in err
