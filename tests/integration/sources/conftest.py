"""Fixtures for the sources' end-to-end tests: a private state root with busybox imported, the
``orchestrator`` CLI as subprocesses (``watch``/``gitops`` in the background, stopped by pid with
SIGTERM), and the runtime's view of what runs (pid and command line of each container's process).

Teardown stops every background process this test started, then ``orchestrator down`` on every stack
the state root knows, so the autouse leak check sees nothing of ours.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("images")
    subprocess.run([sys.executable, str(REPO / "scripts/build_images.py"), str(d)], check=True,
                   stdout=subprocess.DEVNULL)
    return d


@dataclass
class Orch:
    root: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([sys.executable, "-m", "orchestrator", *args], env=self.env, text=True,
                             capture_output=True, timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"orchestrator {' '.join(args)} -> {res.returncode}\n"
                                 f"{res.stdout}\n{res.stderr}")
        return res

    def start(self, *args: str, log: Path) -> subprocess.Popen[str]:
        out = log.open("w")
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], env=self.env, text=True,
                                stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str], timeout: float = 15) -> int:
        """SIGTERM by pid (graceful stop); returns the exit code."""
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"pid {proc.pid} ignored SIGTERM for {timeout}s") from None

    def ps(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = json.loads(self.run("-o", "json", "ps").stdout)
        return rows

    def processes(self) -> dict[str, tuple[int, str]]:
        """Running containers: id -> (pid, command line), from the runtime's state and /proc."""
        out: dict[str, tuple[int, str]] = {}
        state_dir = self.root / "runtime"
        if not state_dir.is_dir():
            return out
        for d in state_dir.iterdir():
            try:
                pid = int(json.loads((d / "state.json").read_text()).get("pid", 0))
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                stat = Path(f"/proc/{pid}/stat").read_text()
            except (OSError, ValueError):
                continue
            if pid and stat.rsplit(")", 1)[1].split()[0] != "Z":
                out[d.name] = (pid, cmd)
        return out

    def wait_running(self, needle: str, timeout: float = 20, *, gone: str = "") -> tuple[str, int]:
        """Wait until a container runs a command containing ``needle`` (and none runs ``gone``)."""
        deadline = time.monotonic() + timeout
        seen: dict[str, tuple[int, str]] = {}
        while time.monotonic() < deadline:
            seen = self.processes()
            hit = [(cid, pid) for cid, (pid, cmd) in seen.items() if needle in cmd]
            if hit and not (gone and any(gone in cmd for _p, cmd in seen.values())):
                return hit[0]
            for p in self.procs:
                if p.poll() is not None:
                    raise AssertionError(f"background orchestrator exited with {p.returncode}")
            time.sleep(0.02)
        raise AssertionError(f"no container running {needle!r} (gone: {gone!r}) after {timeout}s: {seen}")

    @staticmethod
    def wait_for(cond: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    @staticmethod
    def stack_yaml(name: str, arg: str, *, service: str = "web", extra: str = "") -> str:
        """One service running ``sleep ARG``; ``extra``: more service keys, indented 6 spaces."""
        return (f"apiVersion: orchestrator/v1\nkind: Stack\nmetadata: {{name: {name}}}\nspec:\n"
                f"  services:\n    {service}:\n      image: busybox:latest\n"
                f'      command: ["sleep", "{arg}"]\n'
                # sleep as pid 1 ignores SIGTERM: do not wait the default 10 s on every replace
                "      stopGracePeriod: 200ms\n      network: none\n"
                # a replica killed within the update's monitor window fails the rollout (rolled back)
                "      update: {monitor: 200ms}\n" + extra)

    @staticmethod
    def atomic_write(path: Path, text: str) -> None:
        """What editors do: write a temp file next to it, then rename over the original."""
        tmp = path.with_name(f".{path.name}.swp")
        tmp.write_text(text)
        os.rename(tmp, path)


@pytest.fixture
def orch(state_root: Path, images_dir: Path) -> Iterator[Orch]:
    env = {**os.environ, "ORCHESTRATOR_ROOT": str(state_root), "PYTHONPATH": str(REPO)}
    o = Orch(state_root, env)
    o.run("image", "import", str(images_dir / "busybox.oci.tar"), "--name", "busybox:latest")
    yield o
    for p in o.procs:
        if p.poll() is None:
            o.stop(p)
    stacks = sorted({str(r["stack"]) for r in o.ps()})
    if stacks:
        o.run("down", *stacks)
