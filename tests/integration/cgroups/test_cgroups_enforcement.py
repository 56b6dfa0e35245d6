"""The cgroup drivers on the real kernel: limits are enforced, accounting is sane, nothing is left behind.

Each test works under its own ``orchestrator-test-<uuid>`` parent and removes it; processes are plain
children (python / busybox / dd) moved in with ``add_pid`` while they wait on stdin, so every byte and
cycle they spend after "go" is charged to the test cgroup. The ``driver`` fixture runs the tests that
matter for both kill paths twice on a hybrid host: as hybrid (``cgroup.kill`` in the unified tree) and
as plain v1 (freezer, then SIGKILL each pid).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.runtime.linux.cgroups import Cgroup, CgroupDriver, open_driver
from orchestrator.runtime.linux.cgroups.v1 import V1Driver

pytestmark = pytest.mark.root

MiB = 1 << 20
ROOT = Path("/sys/fs/cgroup")


class Parent:
    """A unique test parent cgroup; ``make`` creates children, ``close`` kills and removes all."""

    def __init__(self, driver: CgroupDriver) -> None:
        self.driver = driver
        self.path = f"orchestrator-test-{uuid.uuid4().hex[:12]}"
        self.cg = driver.create(self.path, {})
        self.children: list[Cgroup] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def make(self, name: str, resources: dict[str, object]) -> Cgroup:
        cg = self.driver.create(f"{self.path}/{name}", resources)
        self.children.append(cg)
        return cg

    def spawn(self, cg: Cgroup, argv: list[str], stdout: int | None = None,
              stderr: int | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` waiting for a line on stdin, move it into ``cg``; ``go`` lets it run."""
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr)
        self.procs.append(proc)
        cg.add_pid(proc.pid)
        return proc

    def close(self) -> None:
        for cg in self.children:
            cg.kill_all()
            cg.destroy()
        for proc in self.procs:
            proc.kill()
            proc.wait(5)
        self.cg.destroy()
        assert not self.cg.exists()


def go(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.flush()


@pytest.fixture(params=["detected", "v1"])
def parent(request: pytest.FixtureRequest) -> Iterator[Parent]:
    driver = open_driver() if request.param == "detected" else V1Driver(ROOT)
    if request.param == "v1" and not (ROOT / "memory").is_dir():
        pytest.skip("host has no cgroup v1 hierarchies")
    p = Parent(driver)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def one(request: pytest.FixtureRequest) -> Iterator[Parent]:
    p = Parent(open_driver())
    try:
        yield p
    finally:
        p.close()


def test_over_the_memory_limit_is_oom_killed_and_reported(one: Parent) -> None:
    cg = one.make("oom", {"memory": {"limit": 64 * MiB, "swap": 64 * MiB}, "pids": {"limit": 8}})
    proc = one.spawn(cg, [sys.executable, "-c",
                          "import sys; sys.stdin.readline(); x = b'x' * (256 << 20); print('survived')"],
                     stdout=subprocess.PIPE)
    assert not cg.oom_killed()
    go(proc)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == -9 and b"survived" not in out
    assert cg.oom_killed()
    stats = cg.stats()
    print(f"\noom: limit 64 MiB, max usage {stats.memory_max_usage_bytes / MiB:.1f} MiB, "
          f"oom_kill {stats.oom_kill_count}, exit {proc.returncode}")
    assert stats.oom_kill_count == 1
    assert stats.memory_limit_bytes == 64 * MiB
    assert 48 * MiB <= stats.memory_max_usage_bytes <= 64 * MiB


FORK_BOMB = """
import os, sys, time
sys.stdin.readline()
failures = 0
while failures < 20:          # every process forks until the kernel refuses 20 times, then sleeps
    try:
        os.fork()
    except OSError:
        failures += 1
        time.sleep(0.01)
time.sleep(60)
"""


def test_fork_bomb_stops_at_pids_max_and_kill_all_ends_it(parent: Parent) -> None:
    cg = parent.make("bomb", {"pids": {"limit": 24}, "memory": {"limit": 512 * MiB}})
    proc = parent.spawn(cg, [sys.executable, "-c", FORK_BOMB])
    go(proc)
    deadline = time.monotonic() + 10
    while cg.stats().pids_current < 24 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    stats = cg.stats()
    assert stats.pids_limit == 24
    assert stats.pids_current == 24 == len(cg.pids())
    started = time.monotonic()
    cg.kill_all()
    took = time.monotonic() - started
    assert cg.pids() == []
    assert proc.wait(5) == -9
    # pids.current also counts zombies until their parents (us, and init for orphans) reap them
    deadline = time.monotonic() + 5
    while cg.stats().pids_current and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cg.stats().pids_current == 0
    print(f"\n{parent.driver.kind}: fork bomb held at {stats.pids_current} pids, kill_all took {took:.3f}s")
    cg.destroy()
    cg.destroy()                               # idempotent
    assert not cg.exists()


def _cpu_share(cg: Cgroup, seconds: float) -> float:
    before, t0 = cg.stats().cpu_usage_ns, time.monotonic()
    time.sleep(seconds)
    return (cg.stats().cpu_usage_ns - before) / ((time.monotonic() - t0) * 1e9)


def test_cpu_quota_holds_usage_and_update_changes_it_in_place(parent: Parent) -> None:
    cg = parent.make("cpu", {"cpu": {"quota": 20000, "period": 100000}})
    proc = parent.spawn(cg, ["/bin/busybox", "sh", "-c", "read x; while :; do :; done"])
    go(proc)
    time.sleep(0.2)
    share = _cpu_share(cg, 1.0)
    cg.update({"cpu": {"quota": 60000, "period": 100000}})
    time.sleep(0.2)
    raised = _cpu_share(cg, 1.0)
    print(f"\n{parent.driver.kind}: cpu quota 0.2 -> measured {share:.3f}; updated to 0.6 -> {raised:.3f}")
    # the quota is a ceiling; the floors only prove the loop ran (other work shares these 2 cores)
    assert 0.10 <= share <= 0.25
    assert 0.35 <= raised <= 0.70 and raised > share + 0.15
    assert proc.poll() is None                  # same process, still running: no recreate


def _whole_disk(dev: int) -> tuple[int, int]:
    """major:minor of the disk holding ``dev`` (throttles apply to whole disks, not partitions)."""
    major, minor = os.major(dev), os.minor(dev)
    sys_dev = Path(f"/sys/dev/block/{major}:{minor}")
    if not sys_dev.exists():
        pytest.skip(f"{major}:{minor} is not a block device (tmpfs/overlay test dir): cannot throttle")
    if (sys_dev / "partition").exists():
        major, minor = map(int, (sys_dev.resolve().parent / "dev").read_text().split(":"))
    return major, minor


def test_blkio_write_throttle_holds_direct_io_rate(one: Parent, tmp_path: Path) -> None:
    major, minor = _whole_disk(os.stat(tmp_path).st_dev)
    rate = 2 * MiB
    cg = one.make("io", {"blockIO": {"throttleWriteBpsDevice": [
        {"major": major, "minor": minor, "rate": rate}]}})
    target = tmp_path / "throttled"
    proc = one.spawn(cg, ["/bin/busybox", "sh", "-c",
                          f"read x; exec /bin/dd if=/dev/zero of={target} bs=256K count=24 oflag=direct"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started = time.monotonic()
    go(proc)
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - started
    assert proc.returncode == 0, err
    written = 24 * 256 * 1024
    measured = written / took
    stats = cg.stats()
    print(f"\nblkio {major}:{minor} wbps limit {rate / MiB:.1f} MiB/s: dd wrote {written / MiB:.0f} MiB "
          f"in {took:.2f}s = {measured / MiB:.2f} MiB/s; cgroup counted {stats.blkio_write_bytes} bytes "
          f"in {stats.blkio_write_ops} ops")
    # the first slice of a throttled group may go through unthrottled, so allow some slack above
    assert measured <= rate * 1.3
    assert measured >= rate * 0.5
    assert stats.blkio_write_bytes >= written


def test_stats_of_a_living_process_are_sane(parent: Parent) -> None:
    cg = parent.make("stats", {"memory": {"limit": 128 * MiB}, "pids": {"limit": 10}})
    proc = parent.spawn(cg, [sys.executable, "-c",
                             "import sys, time; sys.stdin.readline(); x = b'x' * (32 << 20); "
                             "print('ready', flush=True); time.sleep(30)"], stdout=subprocess.PIPE)
    go(proc)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    s = cg.stats()
    print(f"\n{parent.driver.kind}: {s}")
    assert s.memory_limit_bytes == 128 * MiB
    assert 32 * MiB <= s.memory_usage_bytes <= 128 * MiB
    assert s.memory_rss_bytes >= 30 * MiB
    assert s.memory_max_usage_bytes >= s.memory_usage_bytes
    assert s.pids_current == 1 and s.pids_limit == 10
    assert s.cpu_usage_ns > 0 and s.cpu_user_ns + s.cpu_system_ns > 0
    assert s.oom_kill_count == 0 and not cg.oom_killed()
    assert cg.pids() == [proc.pid]


def test_v1_device_allowlist_and_cpuset(one: Parent) -> None:
    if one.driver.kind == "v2":
        pytest.skip("device allowlist is not enforced on cgroup v2 (needs eBPF)")
    cg = one.make("dev", {"cpu": {"cpus": "0"}, "devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]})
    script = ("read x; grep Cpus_allowed_list /proc/self/status; echo ok > /dev/null && echo null-ok; "
              "head -c 1 /dev/zero >/dev/null 2>&1 || echo zero-denied")
    proc = one.spawn(cg, ["/bin/busybox", "sh", "-c", script], stdout=subprocess.PIPE)
    go(proc)
    out, _ = proc.communicate(timeout=10)
    assert out.decode().split() == ["Cpus_allowed_list:", "0", "null-ok", "zero-denied"]


def test_memory_and_swap_limits_update_in_place_both_ways(parent: Parent) -> None:
    cg = parent.make("mem", {"memory": {"limit": 64 * MiB, "swap": 64 * MiB}})
    proc = parent.spawn(cg, ["/bin/busybox", "sh", "-c", "read x; sleep 30"])
    memsw = cg.file("memory", "memory.memsw.limit_in_bytes")
    has_memsw = parent.driver.kind != "v2" and memsw.exists()
    # raising both needs memsw written first on v1, lowering both needs the limit first
    for limit in (256 * MiB, 32 * MiB):
        cg.update({"memory": {"limit": limit, "swap": limit}})
        assert cg.stats().memory_limit_bytes == limit
        if has_memsw:
            assert int(memsw.read_text()) == limit
    cg.update({"memory": {"limit": -1}})          # unlimited memory: unlimited memory+swap too (runc)
    assert cg.stats().memory_limit_bytes is None
    assert proc.poll() is None
