"""The v2 driver on a real cgroup2 tree: the host's own root on a pure-v2 host, or ``unified`` on a
hybrid one (which has no resource controllers but does have cgroup.kill, cgroup.freeze and eBPF device
filters, so the v2-only code paths still run against the kernel here)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.runtime.linux.cgroups import CgroupDriver, open_driver
from orchestrator.runtime.linux.cgroups.v2 import V2Cgroup, V2Driver

pytestmark = pytest.mark.root


@pytest.fixture
def v2() -> Iterator[tuple[CgroupDriver, str]]:
    driver = open_driver()
    if driver.kind == "hybrid":
        driver = V2Driver(Path("/sys/fs/cgroup/unified"))
    elif driver.kind != "v2":
        pytest.skip("no cgroup2 tree on this host")
    parent = f"orchestrator-test-{uuid.uuid4().hex[:12]}"
    pcg = driver.create(parent, {})
    try:
        yield driver, parent
    finally:
        for child in sorted((driver.root / parent).iterdir(), reverse=True):
            if child.is_dir():
                cg = driver.cgroup(f"{parent}/{child.name}")
                cg.kill_all()
                cg.destroy()
        pcg.destroy()


PROBE = ("read x; echo hi > /dev/null && echo null-ok; head -c1 /dev/zero >/dev/null && echo zero-read; "
         "echo x > /dev/zero 2>/dev/null || echo zero-write-denied; "
         "head -c1 /dev/urandom >/dev/null 2>&1 || echo urandom-denied; "
         "head -c1 /dev/urandom >/dev/null 2>&1 && echo urandom-ok")


def probe(cg: V2Cgroup) -> list[str]:
    proc = subprocess.Popen(["/bin/busybox", "sh", "-c", PROBE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    cg.add_pid(proc.pid)
    out, _ = proc.communicate(b"go\n", timeout=10)
    return out.decode().split()


def test_ebpf_device_allowlist_is_enforced_and_replaced_on_update(v2: tuple[CgroupDriver, str]) -> None:
    driver, parent = v2
    cg = driver.create(f"{parent}/dev", {"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}]})
    assert isinstance(cg, V2Cgroup)
    assert probe(cg) == ["null-ok", "zero-read", "zero-write-denied", "urandom-denied"]
    cg.update({"devices": [{"allow": True, "access": "rwm"}]})
    assert probe(cg) == ["null-ok", "zero-read", "urandom-ok"]


@pytest.mark.parametrize("how", ["cgroup.kill", "freeze"])
def test_kill_all_empties_the_cgroup(v2: tuple[CgroupDriver, str], how: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    driver, parent = v2
    cg = driver.create(f"{parent}/k", {})
    if how == "freeze":
        monkeypatch.setattr(cg, "_kill_file", lambda: None)    # as on kernels before 5.14
    procs = [subprocess.Popen(["/bin/busybox", "sh", "-c", "read x; sleep 60 & sleep 60 & wait"],
                              stdin=subprocess.PIPE) for _ in range(3)]
    for p in procs:
        cg.add_pid(p.pid)
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()
    deadline = time.monotonic() + 5
    while len(cg.pids()) < 9 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(cg.pids()) == 9
    cg.kill_all()
    assert cg.pids() == []
    assert [p.wait(5) for p in procs] == [-9, -9, -9]
    cg.destroy()
    assert not cg.exists()
