"""Probe results and the readiness rule (Docker's semantics), without a kernel: the connect function is
replaced by one that hands back one end of a socketpair served by a thread."""

from __future__ import annotations

import contextlib
import socket
import threading

from orchestrator.errors import ExecTimeout
from orchestrator.manifest.model import Healthcheck
from orchestrator.reconcile.health import Prober, Readiness
from orchestrator.runtime.base import ContainerState, ExecResult, Status
from orchestrator.runtime.fake import FakeRuntime

STATE = ContainerState("c1", Status.RUNNING, "/b", pid=4242)


def serving(reply: bytes) -> tuple[list[tuple[int, int]], object]:
    seen: list[tuple[int, int]] = []

    def connect(pid: int, port: int, timeout: float) -> socket.socket:
        seen.append((pid, port))
        ours, theirs = socket.socketpair()

        def serve() -> None:
            with theirs, contextlib.suppress(OSError):   # the prober may hang up first
                theirs.recv(1024)
                theirs.sendall(reply)
        threading.Thread(target=serve, daemon=True).start()
        return ours
    return seen, connect


def test_http_probe_checks_status_line() -> None:
    seen, connect = serving(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    p = Prober(FakeRuntime(), connect)  # type: ignore[arg-type]
    hc = Healthcheck(kind="http", http_path="/health", port=8080)
    assert p.probe("c1", STATE, hc) == (True, "http /health: HTTP/1.1 200 OK") and seen == [(4242, 8080)]
    _, connect = serving(b"HTTP/1.0 503 Service Unavailable\r\n\r\n")
    ok, out = Prober(FakeRuntime(), connect).probe("c1", STATE, hc)  # type: ignore[arg-type]
    assert not ok and "503" in out


def test_tcp_probe_and_refused() -> None:
    _, connect = serving(b"")
    assert Prober(FakeRuntime(), connect).probe(  # type: ignore[arg-type]
        "c1", STATE, Healthcheck(kind="tcp", port=5432)) == (True, "tcp port 5432 open")

    def refused(pid: int, port: int, timeout: float) -> socket.socket:
        raise ConnectionRefusedError(111, "Connection refused")
    ok, out = Prober(FakeRuntime(), refused).probe("c1", STATE, Healthcheck(kind="tcp", port=1))
    assert not ok and out == "tcp probe failed: [Errno 111] Connection refused"


def test_exec_probe_output() -> None:
    rt = FakeRuntime(exec_handler=lambda cid, argv: ExecResult(3, b"", b"db not ready\n"))
    rt.containers["c1"] = STATE
    ok, out = Prober(rt).probe("c1", STATE, Healthcheck(kind="exec", exec=("pg_isready",)))
    assert (ok, out) == (False, "exit 3: db not ready")


def test_exec_probe_timeout_is_a_failed_probe() -> None:
    def hang(cid: str, argv: object) -> ExecResult:
        raise ExecTimeout("exec 'sleep' timed out after 2s and was killed", op="exec")
    rt = FakeRuntime(exec_handler=hang)
    rt.containers["c1"] = STATE
    ok, out = Prober(rt).probe("c1", STATE, Healthcheck(kind="exec", exec=("sleep", "9"), timeout_s=2.0))
    assert (ok, out) == (False, "exec probe timed out after 2s")


def test_readiness_start_period_interval_retries() -> None:
    r = Readiness(Healthcheck(kind="tcp", interval_s=1.0, retries=3, start_period_s=5.0), started=0.0)
    assert r.observe(False, "x", now=1.0) == "starting" and r.failures == 0      # inside startPeriod
    assert r.observe(False, "x", now=5.0) == "starting" and r.failures == 1
    assert r.observe(False, "x", now=5.5) == "starting" and r.failures == 1      # same interval
    assert r.observe(False, "x", now=6.0) == "starting" and r.failures == 2
    assert r.observe(False, "x", now=7.0) == "unhealthy" and r.failures == 3
    assert r.observe(True, "ok", now=7.5) == "healthy" and r.failures == 0
    assert r.cadence_s() == 0.25
