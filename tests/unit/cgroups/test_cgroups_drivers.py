"""The drivers against temp directory trees shaped like pure-v2, v1 and hybrid cgroupfs layouts.

Detection uses an injected statfs; interface files are pre-created as the kernel would show them
(writes never create files, so a write to a file the layout lacks fails as it would on a real host).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.errors import ContainerNotFound, RuntimeFailure
from orchestrator.runtime.linux.cgroups import detect_kind, fsio, open_driver
from orchestrator.runtime.linux.cgroups.detect import CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, parse_proc_cgroup
from orchestrator.runtime.linux.cgroups.v1 import V1Cgroup, _init_cpuset
from orchestrator.runtime.linux.cgroups.v2 import V2Cgroup

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")
V1_FILES = {
    "memory": ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.soft_limit_in_bytes",
               "memory.usage_in_bytes", "memory.max_usage_in_bytes", "memory.stat", "memory.oom_control"],
    "cpu": ["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"],
    "cpuacct": ["cpuacct.usage", "cpuacct.usage_user", "cpuacct.usage_sys", "cpuacct.stat"],
    "cpuset": ["cpuset.cpus", "cpuset.mems"],
    "pids": ["pids.max", "pids.current"],
    "blkio": ["blkio.bfq.weight", "blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device",
              "blkio.throttle.read_iops_device", "blkio.throttle.write_iops_device",
              "blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive"],
    "devices": ["devices.allow", "devices.deny"],
    "freezer": ["freezer.state"],
}
V2_FILES = ["cgroup.controllers", "cgroup.subtree_control", "cgroup.procs", "cgroup.kill", "cgroup.freeze",
            "cgroup.events", "memory.max", "memory.swap.max", "memory.low", "memory.current",
            "memory.peak", "memory.stat", "memory.events", "cpu.weight", "cpu.max", "cpu.stat",
            "cpuset.cpus", "cpuset.mems", "pids.max", "pids.current", "io.max", "io.weight", "io.stat"]


def touch(d: Path, names: list[str], content: str = "") -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (d / name).exists():
            (d / name).write_text(content)


def v2_tree(root: Path, *paths: str) -> None:
    touch(root, ["cgroup.procs", "cgroup.subtree_control"])
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    for path in paths:
        touch(root / path, V2_FILES)


def v1_tree(root: Path, *paths: str, hybrid: bool = False) -> None:
    for ctrl in V1_CONTROLLERS:
        touch(root / ctrl, ["cgroup.procs"])
    (root / "cpuset/cpuset.cpus").write_text("0-3\n")
    (root / "cpuset/cpuset.mems").write_text("0\n")
    for ctrl in V1_CONTROLLERS:
        for path in paths:
            touch(root / ctrl / path, ["cgroup.procs", *V1_FILES.get(ctrl, [])])
    if hybrid:
        touch(root / "unified", ["cgroup.procs", "cgroup.controllers", "cgroup.subtree_control"])
        for path in paths:
            touch(root / "unified" / path, ["cgroup.procs", "cgroup.kill", "cgroup.events"])


def fake_statfs(types: dict[str, int]) -> Callable[[Path], int]:
    return lambda p: types.get(p.name, 0xEF53)   # anything unknown looks like ext4


def proc_cgroup(tmp: Path, text: str) -> Path:
    p = tmp / "proc-self-cgroup"
    p.write_text(text)
    return p


def test_detection_of_each_layout(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    root.mkdir()
    assert detect_kind(root, fake_statfs({"cg": CGROUP2_SUPER_MAGIC})) == "v2"
    assert detect_kind(root, fake_statfs({"cg": TMPFS_MAGIC})) == "v1"
    (root / "unified").mkdir()
    assert detect_kind(root, fake_statfs({"cg": TMPFS_MAGIC, "unified": CGROUP2_SUPER_MAGIC})) == "hybrid"
    assert detect_kind(root, fake_statfs({"cg": TMPFS_MAGIC, "unified": TMPFS_MAGIC})) == "v1"
    with pytest.raises(RuntimeFailure, match="neither cgroup2"):
        detect_kind(root, fake_statfs({}))


def test_real_statfs_reads_f_type() -> None:
    from orchestrator.runtime.linux.cgroups import statfs_type

    assert statfs_type(Path("/proc")) == 0x9FA0          # PROC_SUPER_MAGIC
    with pytest.raises(RuntimeFailure) as info:
        statfs_type(Path("/nonexistent-path-for-test"))
    assert info.value.errno == errno.ENOENT


def test_v2_create_enables_controllers_and_writes_limits(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cg"
    v2_tree(root, "system.slice/orch/orchestrator", "system.slice/orch/orchestrator/c1")
    for d in ("system.slice", "system.slice/orch"):
        touch(root / d, V2_FILES)
        (root / d / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "system.slice/orch/orchestrator/cgroup.controllers").write_text("cpu io memory pids\n")
    written: list[tuple[str, str]] = []
    real_write = fsio.write

    def spy(path: Path, value: str) -> None:
        written.append((str(path.relative_to(root)), value))
        real_write(path, value)

    monkeypatch.setattr(fsio, "write", spy)
    proc = proc_cgroup(tmp_path, "0::/system.slice/orch\n")
    driver = open_driver(root, statfs=fake_statfs({"cg": CGROUP2_SUPER_MAGIC}), proc_self_cgroup=proc)
    assert driver.kind == "v2"
    parent = driver.default_parent()
    assert parent == "system.slice/orch/orchestrator"
    cg = driver.create(f"{parent}/c1", {"memory": {"limit": 1 << 26}, "cpu": {"shares": 2048},
                                        "pids": {"limit": 64}})
    assert isinstance(cg, V2Cgroup)
    enables = [(f, v) for f, v in written if f.endswith("subtree_control")]
    assert enables[:5] == [("cgroup.subtree_control", f"+{c}") for c in ("cpu", "cpuset", "io", "memory",
                                                                          "pids")]
    # the parent lacks cpuset, so it can only pass on what it has
    assert ("system.slice/orch/orchestrator/cgroup.subtree_control", "+cpuset") not in enables
    assert ("system.slice/orch/orchestrator/cgroup.subtree_control", "+cpu") in enables
    leaf = root / parent / "c1"
    assert (leaf / "memory.max").read_text() == str(1 << 26)
    assert (leaf / "cpu.weight").read_text() == "174"
    assert (leaf / "pids.max").read_text() == "64"
    cg.update({"memory": {"limit": 1 << 27}})
    assert (leaf / "memory.max").read_text() == str(1 << 27)
    assert (leaf / "pids.max").read_text() == "64"          # untouched by a partial update
    cg.add_pid(4242)
    assert (leaf / "cgroup.procs").read_text() == "4242"


def test_v2_enable_controllers_ebusy_explains_delegation(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cg"
    v2_tree(root, "svc/orchestrator/c1")

    def busy(path: Path, value: str) -> None:
        raise RuntimeFailure("busy", op="cgroup write", path=str(path), errno=errno.EBUSY)

    monkeypatch.setattr(fsio, "write", busy)
    driver = open_driver(root, statfs=fake_statfs({"cg": CGROUP2_SUPER_MAGIC}))
    with pytest.raises(RuntimeFailure, match="delegated cgroup") as info:
        driver.create("svc/orchestrator/c1", {})
    assert info.value.errno == errno.EBUSY


def test_create_failure_removes_what_it_made(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    v2_tree(root, "orchestrator")
    (root / "orchestrator/cgroup.controllers").write_text("")
    driver = open_driver(root, statfs=fake_statfs({"cg": CGROUP2_SUPER_MAGIC}))
    # a plain mkdir in a temp dir has no interface files: the first write fails, like a missing controller
    with pytest.raises(RuntimeFailure) as info:
        driver.create("orchestrator/new", {"memory": {"limit": 1 << 26}})
    assert info.value.path.endswith("orchestrator/new/memory.max")
    assert str(1 << 26) in str(info.value)
    assert not (root / "orchestrator/new").exists()
    assert (root / "orchestrator").exists()                # existed before: not ours to remove


def test_v1_create_in_every_hierarchy_with_comounted_cpu(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    v1_tree(root, "orchestrator", "orchestrator/c1")
    # Debian/systemd layout: cpu and cpuacct are symlinks to one "cpu,cpuacct" hierarchy
    import shutil
    shutil.rmtree(root / "cpuacct")
    (root / "cpu").rename(root / "cpu,cpuacct")
    (root / "cpu").symlink_to("cpu,cpuacct")
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    touch(root / "cpu,cpuacct/orchestrator/c1", V1_FILES["cpuacct"])
    (root / "memory/orchestrator/c1/memory.limit_in_bytes").write_text("9223372036854771712\n")
    proc = proc_cgroup(tmp_path, "5:cpu,cpuacct:/\n4:memory:/\n1:name=systemd:/\n")
    driver = open_driver(root, statfs=fake_statfs({"cg": TMPFS_MAGIC}), proc_self_cgroup=proc)
    assert driver.kind == "v1"
    assert driver.default_parent() == "orchestrator"
    cg = driver.create("orchestrator/c1", {"memory": {"limit": 1 << 26, "swap": 1 << 26},
                                           "cpu": {"quota": 20000, "period": 100000},
                                           "blockIO": {"weight": 200}, "devices": []})
    assert isinstance(cg, V1Cgroup)
    assert len(cg.dirs()) == len(V1_CONTROLLERS) - 1      # cpu,cpuacct counted once, no unified
    base = root / "memory/orchestrator/c1"
    assert (base / "memory.limit_in_bytes").read_text() == str(1 << 26)
    assert (base / "memory.memsw.limit_in_bytes").read_text() == str(1 << 26)
    assert (root / "cpu/orchestrator/c1/cpu.cfs_quota_us").read_text() == "20000"
    assert (root / "blkio/orchestrator/c1/blkio.bfq.weight").read_text() == "200"
    assert (root / "pids/orchestrator/c1/pids.max").read_text() == "max"
    assert (root / "devices/orchestrator/c1/devices.deny").read_text() == "a"
    # empty cpusets (parent made by someone else, and ours) were filled from the level above
    assert (root / "cpuset/orchestrator/cpuset.cpus").read_text() == "0-3"
    assert (root / "cpuset/orchestrator/c1/cpuset.mems").read_text() == "0"
    cg.add_pid(99)
    assert all((d / "cgroup.procs").read_text() == "99" for d in cg.dirs())
    assert cg.pids() == [99]


def test_v1_cpu_period_refused_first_is_retried_after_quota(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cg"
    v1_tree(root, "c")
    order: list[str] = []
    real_write = fsio.write

    def picky(path: Path, value: str) -> None:
        if path.name == "cpu.cfs_period_us" and "cpu.cfs_quota_us" not in order:
            order.append("period refused")
            raise RuntimeFailure("einval", op="cgroup write", path=str(path), errno=errno.EINVAL)
        order.append(path.name)
        real_write(path, value)

    monkeypatch.setattr(fsio, "write", picky)
    driver = open_driver(root, statfs=fake_statfs({"cg": TMPFS_MAGIC}))
    driver.cgroup("c").update({"cpu": {"quota": 10000, "period": 20000}})
    assert order == ["period refused", "cpu.cfs_quota_us", "cpu.cfs_period_us"]


def test_v1_cpuset_is_initialised_from_the_parent(tmp_path: Path) -> None:
    parent = tmp_path / "cpuset/orchestrator"
    touch(parent, ["cpuset.cpus", "cpuset.mems"])
    (parent / "cpuset.cpus").write_text("0-3\n")
    (parent / "cpuset.mems").write_text("0\n")
    touch(parent / "c1", ["cpuset.cpus", "cpuset.mems"])
    _init_cpuset(parent / "c1")
    assert (parent / "c1/cpuset.cpus").read_text() == "0-3"
    assert (parent / "c1/cpuset.mems").read_text() == "0"


def test_hybrid_adds_the_unified_dir_and_prefers_systemd_path(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    v1_tree(root, "orchestrator/c1", hybrid=True)
    proc = proc_cgroup(tmp_path, "9:name=systemd:/svc\n8:pids:/\n4:memory:/other/x\n0::/svc\n")
    driver = open_driver(root, statfs=fake_statfs({"cg": TMPFS_MAGIC, "unified": CGROUP2_SUPER_MAGIC}),
                         proc_self_cgroup=proc)
    assert driver.kind == "hybrid"
    assert driver.default_parent() == "svc/orchestrator"
    cg = driver.open("orchestrator/c1")
    assert cg.dirs()[-1] == root / "unified/orchestrator/c1"
    cg.kill_all()                                           # empty cgroup: cgroup.kill, then done
    assert (root / "unified/orchestrator/c1/cgroup.kill").read_text() == "1"


def test_open_missing_and_bad_paths(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    v2_tree(root)
    driver = open_driver(root, statfs=fake_statfs({"cg": CGROUP2_SUPER_MAGIC}))
    with pytest.raises(ContainerNotFound):
        driver.open("orchestrator/nope")
    for bad in ("../etc", "a//b", "a/./b"):
        with pytest.raises(RuntimeFailure, match="invalid cgroup path"):
            driver.cgroup(bad)
    for root_path in ("", "/", "//"):
        with pytest.raises(RuntimeFailure, match="root cgroup"):
            driver.cgroup(root_path)
    driver.cgroup("orchestrator/nope").destroy()           # idempotent on a missing cgroup
    with pytest.raises(ContainerNotFound):
        driver.cgroup("orchestrator/nope").stats()


def test_parse_proc_cgroup() -> None:
    assert parse_proc_cgroup("12:cpu,cpuacct:/a\n1:name=systemd:/b\n0::/c\n") == {
        "cpu": "/a", "cpuacct": "/a", "name=systemd": "/b", "": "/c"}


def test_v1_stats_and_oom(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    v1_tree(root, "c")
    files = {
        "cpuacct/c/cpuacct.usage": "5000000000\n", "cpuacct/c/cpuacct.usage_user": "3000000000\n",
        "cpuacct/c/cpuacct.usage_sys": "2000000000\n",
        "memory/c/memory.usage_in_bytes": "1048576\n", "memory/c/memory.limit_in_bytes": "67108864\n",
        "memory/c/memory.max_usage_in_bytes": "2097152\n",
        "memory/c/memory.stat": "cache 4096\nrss 8192\ntotal_cache 40960\ntotal_rss 81920\n",
        "memory/c/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        "pids/c/pids.current": "3\n", "pids/c/pids.max": "max\n",
        "blkio/c/blkio.throttle.io_service_bytes_recursive":
            "8:0 Read 100\n8:0 Write 200\n8:0 Total 300\n8:16 Write 50\nTotal 350\n",
        "blkio/c/blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\n8:16 Write 3\n",
    }
    for rel, text in files.items():
        (root / rel).write_text(text)
    cg = open_driver(root, statfs=fake_statfs({"cg": TMPFS_MAGIC})).open("c")
    s = cg.stats()
    assert (s.cpu_usage_ns, s.cpu_user_ns, s.cpu_system_ns) == (5 * 10**9, 3 * 10**9, 2 * 10**9)
    assert (s.memory_usage_bytes, s.memory_limit_bytes, s.memory_max_usage_bytes) == (1 << 20, 1 << 26,
                                                                                      2 << 20)
    assert (s.memory_cache_bytes, s.memory_rss_bytes) == (40960, 81920)
    assert (s.pids_current, s.pids_limit) == (3, None)
    assert (s.blkio_read_bytes, s.blkio_write_bytes, s.blkio_read_ops, s.blkio_write_ops) == (100, 250, 1, 5)
    assert s.oom_kill_count == 2 and cg.oom_killed()
    (root / "memory/c/memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cg.stats().memory_limit_bytes is None


def test_v2_stats_and_oom(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    v2_tree(root, "c")
    files = {
        "cpu.stat": "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\n",
        "memory.current": "1048576\n", "memory.max": "max\n", "memory.peak": "2097152\n",
        "memory.stat": "anon 8192\nfile 4096\n", "memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        "pids.current": "2\n", "pids.max": "10\n",
        "io.stat": ("8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n"
                    "8:16 rbytes=1 wbytes=2 rios=3 wios=4\n"),
    }
    for rel, text in files.items():
        (root / "c" / rel).write_text(text)
    cg = open_driver(root, statfs=fake_statfs({"cg": CGROUP2_SUPER_MAGIC})).open("c")
    s = cg.stats()
    assert (s.cpu_usage_ns, s.cpu_user_ns, s.cpu_system_ns) == (5_000_000, 3_000_000, 2_000_000)
    assert (s.memory_usage_bytes, s.memory_limit_bytes, s.memory_max_usage_bytes) == (1 << 20, None, 2 << 20)
    assert (s.memory_cache_bytes, s.memory_rss_bytes) == (4096, 8192)
    assert (s.pids_current, s.pids_limit) == (2, 10)
    assert (s.blkio_read_bytes, s.blkio_write_bytes, s.blkio_read_ops, s.blkio_write_ops) == (101, 202, 4, 6)
    assert s.oom_kill_count == 1 and cg.oom_killed()
