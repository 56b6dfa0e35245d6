"""Content digests and per-mount change reasons: only real content changes cause anything."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from orchestrator.errors import ManifestError
from orchestrator.manifest import load_text
from orchestrator.manifest.model import Stack
from orchestrator.secrets.digest import (
    change_reasons,
    config_items,
    content_digests,
    resolve_stack,
    restart_digest,
    secret_items,
    signals,
    strongest,
)

MANIFEST = """\
apiVersion: orchestrator/v1
kind: Stack
metadata: {name: shop}
spec:
  services:
    web:
      image: busybox:latest
      configs:
        - {source: nginx.conf, target: /etc/nginx/nginx.conf, onChange: "signal:HUP"}
        - {source: motd, target: /etc/motd, onChange: none}
      secrets:
        - {source: tls, target: /run/secrets/tls.key, mode: "0400", uid: 101}
    api:
      image: busybox:latest
      configs: [motd]
      secrets:
        - {source: db, env: DB_PASSWORD, onChange: none}
    worker:
      image: busybox:latest
  configs:
    nginx.conf: {file: nginx.conf}
    motd: {content: "hello\\n"}
    unused: {file: does-not-matter.txt}
  secrets:
    tls: {file: tls.key}
    db: {env: DB_PASSWORD_SRC}
"""


def _stack(tmp_path: Path, nginx: bytes = b"worker_processes 1;\n", tls: bytes = b"-----KEY-----\n") -> Stack:
    (tmp_path / "nginx.conf").write_bytes(nginx)
    (tmp_path / "tls.key").write_bytes(tls)
    (tmp_path / "does-not-matter.txt").write_bytes(b"x")
    return load_text(MANIFEST, str(tmp_path / "stack.yaml")).stack("shop")


ENV = {"DB_PASSWORD_SRC": "pw-1"}


def test_digest_map_covers_mounted_items_only(tmp_path: Path) -> None:
    digests = content_digests(_stack(tmp_path), ENV)
    assert sorted(digests) == ["config:motd", "config:nginx.conf", "secret:db", "secret:tls"]
    assert digests["config:motd"] == hashlib.sha256(b"hello\n").hexdigest()
    assert digests["secret:db"] == hashlib.sha256(b"pw-1").hexdigest()


def test_unchanged_content_causes_nothing(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    old = content_digests(stack, ENV)
    (tmp_path / "nginx.conf").touch()            # a new mtime, same bytes
    new = content_digests(stack, ENV)
    for svc in stack.services:
        assert change_reasons(old, new, svc) == []
        assert restart_digest(svc, old) == restart_digest(svc, new)


def test_signal_mount_change_reason_and_no_restart(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    old = content_digests(stack, ENV)
    _stack(tmp_path, nginx=b"worker_processes 2;\n")
    new = content_digests(stack, ENV)
    web = stack.service("web")
    (change,) = change_reasons(old, new, web)
    a, b = old["config:nginx.conf"][:4], new["config:nginx.conf"][:4]
    assert change.reason == f"config nginx.conf changed (sha256 {a} -> {b})"
    assert change.action == "signal" and change.signal == "SIGHUP" and change.effect == "signal:SIGHUP"
    assert str(change).endswith("; onChange signal:SIGHUP (/etc/nginx/nginx.conf)")
    assert strongest([change]) == "signal" and signals([change]) == ("SIGHUP",)
    # signal mounts stay out of the hash that recreates
    assert restart_digest(web, old) == restart_digest(web, new)
    # other services do not mount it: nothing for them
    assert change_reasons(old, new, stack.service("api")) == []


def test_restart_mount_change_recreates(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    old = content_digests(stack, ENV)
    _stack(tmp_path, tls=b"-----NEW KEY-----\n")
    new = content_digests(stack, ENV)
    web = stack.service("web")
    (change,) = change_reasons(old, new, web)
    assert change.kind == "secret" and change.action == "restart" and change.target == "/run/secrets/tls.key"
    assert restart_digest(web, old) != restart_digest(web, new)
    assert strongest([change]) == "restart"
    assert "-----" not in str(change) and "KEY" not in str(change.to_dict())


def test_secret_in_env_always_restarts(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    old = content_digests(stack, ENV)
    new = content_digests(stack, {"DB_PASSWORD_SRC": "pw-2"})
    api = stack.service("api")
    (change,) = change_reasons(old, new, api)
    assert change.action == "restart"                     # onChange none, but env can only change at exec
    assert restart_digest(api, old) != restart_digest(api, new)


def test_none_mount_and_new_mount(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    old = content_digests(stack, ENV)
    stack2 = load_text(MANIFEST.replace('"hello\\n"', '"bye\\n"'), str(tmp_path / "stack.yaml")).stack("shop")
    new = content_digests(stack2, ENV)
    web_changes = change_reasons(old, new, stack2.service("web"))
    assert [(c.name, c.action) for c in web_changes] == [("motd", "none")]
    assert strongest(web_changes) == "none"
    api_changes = change_reasons(old, new, stack2.service("api"))
    assert [(c.name, c.action) for c in api_changes] == [("motd", "restart")]
    # a mount with no previous digest is new: its definition is in the spec hash, no content reason
    del old["config:motd"]
    assert change_reasons(old, new, stack2.service("api")) == []
    assert strongest([]) == "none"


def test_all_problems_reported_together(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    (tmp_path / "tls.key").unlink()
    with pytest.raises(ManifestError) as info:
        resolve_stack(stack, {})
    paths = sorted(p.path for p in info.value.problems)
    assert paths == ["spec.secrets.db.env", "spec.secrets.tls.file"]
    assert all(p.line > 0 for p in info.value.problems)


def test_items_for_materialisation(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    resolved = resolve_stack(stack, ENV)
    web = stack.service("web")
    assert [(m.target, c) for m, c in config_items(web, resolved)] == [
        ("/etc/nginx/nginx.conf", b"worker_processes 1;\n"), ("/etc/motd", b"hello\n")]
    ((meta, value),) = secret_items(web, resolved)
    assert (meta.target, meta.uid, meta.mode, value.reveal()) == ("/run/secrets/tls.key", 101, 0o400,
                                                                 b"-----KEY-----\n")
