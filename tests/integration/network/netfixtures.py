"""Helpers for the network integration tests: throwaway named network namespaces with a busybox httpd,
and commands run inside them with ``ip netns exec`` (which bind-mounts /etc/netns/<ns>/{hosts,
resolv.conf} over /etc, the way a container sees its own files). Everything is removed by ``close``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path


class Namespaces:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.names: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def add(self) -> str:
        name = f"orct-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.names.append(name)
        return name

    @staticmethod
    def path(name: str) -> str:
        return f"/run/netns/{name}"

    def etc(self, name: str, filename: str, text: str) -> None:
        d = Path("/etc/netns") / name
        d.mkdir(parents=True, exist_ok=True)
        (d / filename).write_text(text)

    def httpd(self, name: str, body: str, port: int = 8080) -> None:
        www = self.tmp / f"www-{name}"
        www.mkdir()
        (www / "index.html").write_text(body)
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", name, "busybox", "httpd", "-f", "-p", str(port), "-h", str(www)]))
        # wait until it answers locally, inside its own namespace
        for _ in range(100):
            if self.fetch(name, f"http://127.0.0.1:{port}/", timeout=1) == body:
                return
            time.sleep(0.02)
        raise AssertionError(f"httpd in {name} did not start")

    def run(self, name: str, *argv: str, timeout: float = 5) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def fetch(self, name: str, url: str, timeout: float = 3) -> str | None:
        """GET ``url`` from inside ``name``; None on failure. (busybox wget's own -T crashes this build,
        so the time limit is the subprocess's.)"""
        try:
            done = self.run(name, "busybox", "wget", "-q", "-O", "-", url, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return done.stdout if done.returncode == 0 else None

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], check=False)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
        if os.path.isdir("/etc/netns") and not os.listdir("/etc/netns"):
            os.rmdir("/etc/netns")


def host_fetch(url: str, timeout: float = 3) -> str | None:
    try:
        done = subprocess.run(["busybox", "wget", "-q", "-O", "-", url], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    return done.stdout if done.returncode == 0 else None
