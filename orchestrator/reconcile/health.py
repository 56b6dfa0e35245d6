"""Health probes (exec, http, tcp) and the readiness rule the executor waits on.

``exec`` probes run through ``runtime.exec`` bounded by ``timeout`` (the runtime kills a hung probe).
``tcp``/``http`` probes connect to ``127.0.0.1:PORT``
*inside the container's network namespace*: a short-lived thread ``setns``-es into ``/proc/PID/ns/net``
(setns(CLONE_NEWNET) changes only the calling thread) and creates the socket there; a socket keeps its
namespace for life, so the rest of the probe runs anywhere. This works for every network mode, including
``none``, without knowing the container's address.

``Readiness`` implements Docker's semantics, with a faster cadence while ``apply`` waits: healthy on the
first success; failures inside ``startPeriod`` do not count; after it, one failure counts per
``interval``; ``retries`` counted failures make the container unhealthy.

Neighbours: used by ``reconcile.execute`` (waits) and the supervisor side (restart on unhealthy).
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.errors import ExecTimeout, OrchestratorError
from orchestrator.manifest.model import Healthcheck
from orchestrator.runtime.base import ContainerState, Runtime

CLONE_NEWNET = 0x40000000
Connect = Callable[[int, int, float], socket.socket]


def netns_connect(pid: int, port: int, timeout_s: float) -> socket.socket:
    """A TCP socket connected to 127.0.0.1:port in the network namespace of ``pid``."""
    result: dict[str, object] = {}

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns(net) into pid {pid}: {os.strerror(err)}")
            finally:
                os.close(fd)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(timeout_s)
            try:
                s.connect(("127.0.0.1", port))
            except OSError:
                s.close()
                raise
            result["sock"] = s
        except OSError as exc:
            result["err"] = exc

    # the thread's namespace change dies with the thread: nothing else in the process is affected
    t = threading.Thread(target=run, name=f"probe-{pid}", daemon=True)
    t.start()
    t.join(timeout_s + 1.0)
    sock = result.get("sock")
    if isinstance(sock, socket.socket):
        return sock
    err = result.get("err")
    raise err if isinstance(err, OSError) else TimeoutError(f"connect to port {port} timed out")


@dataclass
class Prober:
    runtime: Runtime
    connect: Connect = netns_connect

    def probe(self, container_id: str, state: ContainerState, hc: Healthcheck) -> tuple[bool, str]:
        """(ok, output) of one probe; never raises for a failing probe, only reports it."""
        try:
            if hc.kind == "exec":
                try:
                    r = self.runtime.exec(container_id, hc.exec, timeout=hc.timeout_s)
                except ExecTimeout:
                    return False, f"exec probe timed out after {hc.timeout_s:g}s"
                out = (r.stdout + r.stderr).decode(errors="replace").strip()[-500:]
                return r.exit_code == 0, f"exit {r.exit_code}" + (f": {out}" if out else "")
            sock = self.connect(state.pid, hc.port, hc.timeout_s)
            with sock:
                if hc.kind == "tcp":
                    return True, f"tcp port {hc.port} open"
                req = f"GET {hc.http_path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: orchestrator\r\n\r\n"
                sock.sendall(req.encode())
                head = sock.recv(256).decode(errors="replace").split("\r\n", 1)[0]
            parts = head.split()
            code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            return code == hc.http_status, f"http {hc.http_path}: {head or 'no response'}"
        except (OSError, OrchestratorError) as exc:
            return False, f"{hc.kind} probe failed: {exc}"


@dataclass
class Readiness:
    """The state of one container's health while we wait on it."""

    hc: Healthcheck
    started: float
    failures: int = 0
    last_counted: float = 0.0
    last_output: str = ""

    def cadence_s(self) -> float:
        return min(self.hc.interval_s, 0.25)

    def observe(self, ok: bool, output: str, now: float | None = None) -> str:
        """Feed one probe result: returns ``healthy``, ``unhealthy`` or ``starting``."""
        now = time.monotonic() if now is None else now
        self.last_output = output
        if ok:
            self.failures = 0
            return "healthy"
        if now - self.started < self.hc.start_period_s:
            return "starting"
        if now - self.last_counted >= self.hc.interval_s or self.failures == 0:
            self.failures += 1
            self.last_counted = now
        return "unhealthy" if self.failures >= max(self.hc.retries, 1) else "starting"
