"""The gitops config file (docs/gitops.md) and the CLI flags -> ``GitSourceSpec``: pure parsing."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from orchestrator.cli.source_cmds import _specs
from orchestrator.errors import UsageError
from orchestrator.sources.gitops import Verification


def ns(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"config": None, "repo": None, "name": "", "ref": "main", "path": "",
                               "interval": "1m", "resync": "5m", "gnupg_home": "", "allowed_signers": "",
                               "rollback": False}
    return argparse.Namespace(**{**base, **kw})


def config(tmp_path: Path, text: str) -> argparse.Namespace:
    p = tmp_path / "gitops.yaml"
    p.write_text(text)
    return ns(config=str(p))


def test_config_file_with_two_sources(tmp_path: Path) -> None:
    specs = _specs(config(tmp_path, """
sources:
  - name: apps
    url: https://git.example.invalid/org/apps.git
    ref: release
    path: stacks/
    interval: 30s
    rollback: true
    verify: {allowedSigners: /etc/orchestrator/allowed_signers, allowedFingerprints: ["SHA256:abc"]}
  - {name: infra, url: "file:///srv/git/infra.git"}
"""))
    apps, infra = specs
    assert (apps.name, apps.ref, apps.path, apps.interval_s, apps.resync_s, apps.rollback) == \
        ("apps", "release", "stacks/", 30.0, 300.0, True)
    assert apps.verify == Verification(allowed_signers="/etc/orchestrator/allowed_signers",
                                       allowed_fingerprints=("SHA256:abc",))
    assert (infra.ref, infra.path, infra.interval_s, infra.verify, infra.rollback) == \
        ("main", "", 60.0, None, False)


@pytest.mark.parametrize("text, message", [
    ("sources: []", "non-empty 'sources'"),
    ("sources: [{name: a}]", "needs 'name' and 'url'"),
    ("sources: [{name: a, url: x, intervall: 1s}]", "unknown keys intervall"),
    ("sources: [{name: a, url: x}, {name: a, url: y}]", "unique: a"),
    ("sources: [{name: ../a, url: x}]", "must match"),
    ("sources: [{name: a, url: x, interval: soon}]", "sources[0].interval"),
    ("sources: [{name: a, url: x, verify: {signers: f}}]", "sources[0].verify"),
])
def test_config_errors_name_the_entry(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace(".", r"\.")):
        _specs(config(tmp_path, text))


@pytest.mark.parametrize("url, name", [("file:///srv/git/origin.git", "origin"),
                                       ("git@github.com:org/repo.git", "repo"),
                                       ("https://user:token@host/org/app/", "app")])
def test_flags_derive_a_file_safe_name(url: str, name: str) -> None:
    (spec,) = _specs(ns(repo=url, allowed_signers="/k"))
    assert spec.name == name and spec.url == url
    assert spec.verify == Verification(allowed_signers="/k")
