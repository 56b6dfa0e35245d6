"""Differential test: for the same ``linux.resources``, our v1 driver writes the same cgroup files as
Debian's runc, on create and on ``update`` (where runc's write order for memory+swap matters).

Devices are left out: runc always appends its default device allowlist, which our caller (the OCI spec
builder) adds itself. Only v1/hybrid hosts: on v2 the installed runc (1.1) still converts cpu shares to
cpu.weight with the old linear formula, which we deliberately do not use (see convert.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.runtime.linux.cgroups import CgroupDriver, open_driver

pytestmark = pytest.mark.root

MiB = 1 << 20
ROOT = Path("/sys/fs/cgroup")
FILES = [
    ("memory", "memory.limit_in_bytes"), ("memory", "memory.memsw.limit_in_bytes"),
    ("memory", "memory.soft_limit_in_bytes"), ("cpu", "cpu.shares"), ("cpu", "cpu.cfs_quota_us"),
    ("cpu", "cpu.cfs_period_us"), ("cpuset", "cpuset.cpus"), ("cpuset", "cpuset.mems"),
    ("pids", "pids.max"), ("blkio", "blkio.bfq.weight"), ("blkio", "blkio.throttle.read_bps_device"),
    ("blkio", "blkio.throttle.write_bps_device"), ("blkio", "blkio.throttle.read_iops_device"),
    ("blkio", "blkio.throttle.write_iops_device"),
]
CREATE = {
    "memory": {"limit": 64 * MiB, "swap": 128 * MiB, "reservation": 32 * MiB},
    "cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"},
    "pids": {"limit": 100},
    "blockIO": {"weight": 300,
                "throttleReadBpsDevice": [{"major": 7, "minor": 0, "rate": 1048576}],
                "throttleWriteBpsDevice": [{"major": 7, "minor": 0, "rate": 2097152}],
                "throttleReadIOPSDevice": [{"major": 7, "minor": 0, "rate": 100}],
                "throttleWriteIOPSDevice": [{"major": 7, "minor": 0, "rate": 200}]},
}
UPDATE = {   # raise memory+swap (memsw must go first), change cpu and pids
    "memory": {"limit": 256 * MiB, "swap": 512 * MiB},
    "cpu": {"shares": 2048, "quota": 50000, "period": 50000},
    "pids": {"limit": 200},
}


def snapshot(path: str) -> dict[str, str]:
    return {f"{c}/{f}": (ROOT / c / path / f).read_text().strip() for c, f in FILES
            if (ROOT / c / path / f).exists()}


@pytest.fixture
def setting(tmp_path: Path) -> Iterator[tuple[CgroupDriver, str, list[str]]]:
    """Our driver, a fresh parent cgroup, and the argv prefix for runc on a container created
    (not started) under ``<parent>/runc`` with ``CREATE``; last element is the container name."""
    runc = shutil.which("runc")
    driver = open_driver()
    if runc is None or driver.kind == "v2":
        pytest.skip("needs runc and a cgroup v1/hybrid host")
    parent = f"orchestrator-test-{uuid.uuid4().hex[:12]}"
    pcg = driver.create(parent, {})
    bundle = tmp_path / "bundle"
    (bundle / "rootfs/bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", bundle / "rootfs/bin/sh")
    subprocess.run([runc, "spec", "--bundle", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"].update(terminal=False, args=["/bin/sh", "-c", "sleep 30"])
    config["linux"].update(cgroupsPath=f"/{parent}/runc", resources=CREATE)
    (bundle / "config.json").write_text(json.dumps(config))
    runc_argv = [runc, "--root", str(tmp_path / "runc-state")]
    name = f"cgdiff-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run([*runc_argv, "create", "--bundle", str(bundle), name], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=30)
        yield driver, parent, [*runc_argv, name]
    finally:
        subprocess.run([*runc_argv, "delete", "--force", name], check=False, timeout=30)
        ours = driver.cgroup(f"{parent}/ours")
        ours.kill_all()
        ours.destroy()
        pcg.destroy()
        # runc also made the parent in the name=systemd hierarchy, which our driver does not manage
        systemd_parent = ROOT / "systemd" / parent
        if systemd_parent.exists():
            systemd_parent.rmdir()


def test_create_and_update_write_what_runc_writes(setting: tuple[CgroupDriver, str, list[str]],
                                                  tmp_path: Path) -> None:
    driver, parent, runc = setting
    ours = driver.create(f"{parent}/ours", CREATE)
    theirs = snapshot(f"{parent}/runc")
    assert len(theirs) == len(FILES)
    assert snapshot(f"{parent}/ours") == theirs

    update_file = tmp_path / "update.json"
    update_file.write_text(json.dumps(UPDATE))
    *argv, name = runc
    subprocess.run([*argv, "update", "-r", str(update_file), name], check=True, timeout=30)
    ours.update(UPDATE)
    theirs = snapshot(f"{parent}/runc")
    assert theirs["memory/memory.memsw.limit_in_bytes"] == str(512 * MiB)
    assert snapshot(f"{parent}/ours") == theirs
