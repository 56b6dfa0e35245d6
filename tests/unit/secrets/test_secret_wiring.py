"""The process-wide Redactor wired into every output path: logs, ``ctx.emit`` (json/yaml/table/text), the
CLI's error lines, the store proxy; and the digest ledger behind the precise content-change reasons."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator import errors, logs
from orchestrator.cli.context import Context
from orchestrator.manifest.model import FileMount, Service
from orchestrator.secrets import redact
from orchestrator.secrets.ledger import DigestLedger, content_reason, mounted
from orchestrator.secrets.value import SecretValue
from orchestrator.settings import Settings

VALUE = SecretValue(b"pa55-wiring-Kq3z\n")
SHOWN = str(VALUE)


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    redact.register([VALUE])
    yield
    redact.process_redactor().discard(VALUE)


def test_register_and_scrub_are_process_wide() -> None:
    assert redact.scrub("x pa55-wiring-Kq3z y") == f"x {SHOWN} y"
    assert redact.process_redactor() is redact.process_redactor()


@pytest.mark.parametrize("output", ["json", "yaml", "table"])
def test_emit_scrubs_every_format(output: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = Context(Settings.from_env(str(tmp_path)), output=output)
    ctx.emit([{"msg": "pa55-wiring-Kq3z\n", "n": 1}], headers=("msg", "n"), rows=[["pa55-wiring-Kq3z", 1]])
    out = capsys.readouterr().out
    assert "pa55-wiring-Kq3z" not in out and "<redacted sha256:" in out
    if output == "json":
        assert json.loads(out)[0]["n"] == 1


def test_emit_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Context(Settings.from_env(str(tmp_path))).emit(None, text="error: pa55-wiring-Kq3z")
    # the value's own trailing newline is part of what is replaced
    assert capsys.readouterr().out.rstrip("\n") == f"error: {SHOWN}"


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_log_lines_are_scrubbed_also_in_exceptions(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(fmt, "info")
    try:
        log = logs.get("test")
        log.info("read", value="pa55-wiring-Kq3z", nested={"k": ["pa55-wiring-Kq3z"]})
        try:
            raise ValueError("bad token pa55-wiring-Kq3z")
        except ValueError:
            log.exception("failed")
    finally:
        logs.configure()
    err = capsys.readouterr().err
    assert "pa55-wiring-Kq3z" not in err
    assert err.count("<redacted sha256:") >= 3


def test_cli_error_lines_are_scrubbed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator import cli
    from orchestrator.cli import stack_cmds

    def boom(args: Any, ctx: Any) -> int:
        raise errors.ReconcileError("shop/api-1: exited 1 right after starting\n    | token=pa55-wiring-Kq3z")

    monkeypatch.setattr(stack_cmds, "ps_cmd", boom)
    assert cli.main(["--root", str(tmp_path), "ps"]) == errors.ReconcileError.exit_code
    err = capsys.readouterr().err
    assert "pa55-wiring-Kq3z" not in err and f"token={SHOWN}" in err


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.store = "the store"

    def event(self, *args: Any, **kw: Any) -> None:
        self.calls.append(("event", args, kw))

    def containers(self, *args: Any) -> list[str]:
        return ["pa55-wiring-Kq3z"]          # reads pass through untouched


def test_scrubbing_proxy_scrubs_only_the_chosen_writes() -> None:
    rec = _Recorder()
    proxy: Any = redact.Scrubbing(rec, {"event"})
    proxy.event("shop", "shop/api-1", "create-failed", message="saw pa55-wiring-Kq3z")
    assert rec.calls == [("event", ("shop", "shop/api-1", "create-failed"), {"message": f"saw {SHOWN}"})]
    assert proxy.containers() == ["pa55-wiring-Kq3z"] and proxy.store == "the store"


class _Store:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path)
        self.writes = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.writes += 1
        self.conn.execute(sql, params)
        self.conn.commit()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise errors.StateError(str(exc)) from exc


def test_ledger_records_once_and_reasons_read_like_the_issue(tmp_path: Path) -> None:
    store = _Store(tmp_path / "db")
    ledger = DigestLedger(store)
    assert ledger.lookup("h1") is None and store.writes == 0      # nothing recorded: nothing written
    svc = Service("web", image="x", configs=(FileMount("nginx.conf", "/etc/nginx.conf"),),
                  secrets=(FileMount("db", "/run/secrets/db", on_change="signal", signal="SIGHUP"),))
    old = {"config:nginx.conf": "a1b2" + "0" * 60, "secret:db": "1111" + "0" * 60, "config:other": "x"}
    assert mounted(svc, old) == {"config:nginx.conf": old["config:nginx.conf"], "secret:db": old["secret:db"]}
    ledger.record({"h1": mounted(svc, old)})
    writes = store.writes
    ledger.record({"h1": mounted(svc, old)})
    assert store.writes == writes                                   # content-addressed: once
    assert DigestLedger(store).lookup("h1") == mounted(svc, old)
    new = {**old, "config:nginx.conf": "c3d4" + "0" * 60, "secret:db": "2222" + "0" * 60}
    assert content_reason(old, new, svc, restart_only=True) == \
        "config nginx.conf changed (sha256 a1b2 -> c3d4)"
    assert content_reason(old, new, svc, restart_only=False) == (
        "config nginx.conf changed (sha256 a1b2 -> c3d4), onChange restart; "
        "secret db changed (sha256 1111 -> 2222), onChange signal:SIGHUP")
    assert content_reason(old, old, svc, restart_only=False) == ""
