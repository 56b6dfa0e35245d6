"""Resolution of configs and secrets from a real manifest: content, and errors naming the line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from orchestrator.errors import ManifestError
from orchestrator.manifest import load_text
from orchestrator.manifest.model import Secret, SourceRef, Stack
from orchestrator.secrets.sources import resolve_config, resolve_secret

MANIFEST = """\
apiVersion: orchestrator/v1
kind: Stack
metadata: {name: shop}
spec:
  services:
    web:
      image: busybox:latest
      configs: [nginx.conf, motd]
      secrets: [db, token, api-key]
  configs:
    nginx.conf: {file: conf/nginx.conf}
    motd: {content: "hello\\n"}
  secrets:
    db: {file: secret/db.txt}
    token: {env: SHOP_TOKEN}
    api-key: {sops: secret/api.enc.yaml}
"""


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    (tmp_path / "conf").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "conf/nginx.conf").write_bytes(b"worker_processes 1;\n")
    (tmp_path / "secret/db.txt").write_bytes(b"s3cr3t-db-password\n")
    (tmp_path / "secret/api.enc.yaml").write_text("api: ENC[AES256_GCM,data:xx]\n")
    path = tmp_path / "stack.yaml"
    path.write_text(MANIFEST)
    return load_text(MANIFEST, str(path)).stack("shop")


def _secret(stack: Stack, name: str) -> Secret:
    return next(s for s in stack.secrets if s.name == name)


def test_configs_resolve_from_file_and_inline(stack: Stack) -> None:
    by_name = {c.name: c for c in stack.configs}
    assert resolve_config(by_name["nginx.conf"]) == b"worker_processes 1;\n"
    assert resolve_config(by_name["motd"]) == b"hello\n"


def test_secrets_resolve_from_file_and_env(stack: Stack) -> None:
    assert resolve_secret(_secret(stack, "db"), {}).reveal() == b"s3cr3t-db-password\n"
    assert resolve_secret(_secret(stack, "token"), {"SHOP_TOKEN": "tok-123"}).reveal() == b"tok-123"
    assert resolve_secret(_secret(stack, "token"), {"SHOP_TOKEN": ""}).reveal() == b""


def test_unset_env_names_the_manifest_line(stack: Stack) -> None:
    with pytest.raises(ManifestError) as info:
        resolve_secret(_secret(stack, "token"), {"OTHER": "x"})
    (p,) = info.value.problems
    assert p.file.endswith("stack.yaml") and p.line == 15 and p.col > 0
    assert p.path == "spec.secrets.token.env"
    assert "SHOP_TOKEN is not set" in str(info.value)


def test_missing_file_is_a_manifest_error(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "secret/db.txt").unlink()          # removed after the plan was loaded
    (tmp_path / "conf/nginx.conf").unlink()
    with pytest.raises(ManifestError, match=r"stack.yaml:14:\d+: .*secret db: file not found"):
        resolve_secret(_secret(stack, "db"), {})
    cfg = next(c for c in stack.configs if c.name == "nginx.conf")
    with pytest.raises(ManifestError, match=r'configs\["nginx.conf"\].file: config nginx.conf: file not'):
        resolve_config(cfg)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    sec = Secret("d", file=str(tmp_path), source=SourceRef("m.yaml", 3, 5))
    with pytest.raises(ManifestError, match=r"m.yaml:3:5: .*not a regular file"):
        resolve_secret(sec, {})


def test_unreadable_file_is_a_manifest_error(tmp_path: Path) -> None:
    path = tmp_path / "locked"
    path.write_bytes(b"top-secret-value")
    path.chmod(0)
    tmp_path.chmod(0o755)
    if os.geteuid() != 0:
        with pytest.raises(ManifestError, match="permission denied"):
            resolve_secret(Secret("l", file=str(path), source=SourceRef("m.yaml", 1, 1)), {})
        return
    # root reads anything: check the message from a forked child that dropped to nobody
    sec = Secret("l", file=str(path), source=SourceRef("m.yaml", 1, 1))
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery from here on, only os._exit
        os.close(rfd)
        try:
            os.setgid(65534)
            os.setuid(65534)
            resolve_secret(sec, {})
            os.write(wfd, b"no error")
        except ManifestError as exc:
            os.write(wfd, str(exc).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        message = f.read().decode()
    os.waitpid(pid, 0)
    assert message == "m.yaml:1:1: spec.secrets.l.file: secret l: file not readable (permission denied): " \
        + str(path)


def _fake_sops(tmp_path: Path, body: str) -> Path:
    """A stand-in for the sops binary (not packaged for this Debian): exercises only our boundary —
    the argument list, the environment passed through, exit-status and output handling."""
    path = tmp_path / "bin" / "sops"
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_sops_missing_is_a_clear_error(stack: Stack, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="the sops tool is not installed") as info:
        resolve_secret(_secret(stack, "api-key"), {"PATH": str(tmp_path / "nowhere")})
    assert info.value.problems[0].path == "spec.secrets.api-key.sops"


def test_sops_decrypts_with_the_orchestrator_env(stack: Stack, tmp_path: Path) -> None:
    _fake_sops(tmp_path, '[ "$1" = --decrypt ] || exit 9\nprintf "%s:" "$SOPS_AGE_KEY_FILE"; cat "$2"\n')
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "SOPS_AGE_KEY_FILE": "/keys/age.txt"}
    value = resolve_secret(_secret(stack, "api-key"), env)
    assert value.reveal() == b"/keys/age.txt:api: ENC[AES256_GCM,data:xx]\n"


def test_sops_failure_withholds_its_stderr(stack: Stack, tmp_path: Path) -> None:
    _fake_sops(tmp_path, 'echo "failed near: password=leaked-plaintext" >&2\nexit 128\n')
    with pytest.raises(ManifestError, match=r"sops could not decrypt .*exit status 128") as info:
        resolve_secret(_secret(stack, "api-key"), {"PATH": str(tmp_path / "bin")})
    assert "leaked-plaintext" not in str(info.value)
