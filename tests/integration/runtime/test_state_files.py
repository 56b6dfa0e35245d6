"""State files on the real kernel: a query never writes (``state()`` computes OOM on read), and the
supervisor leaves no temp files behind in the state dir."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runtime.base import Status
from orchestrator.runtime.linux import statedir

pytestmark = pytest.mark.root


def test_state_of_a_stopped_container_writes_nothing(runtime: Any, bundles: Any) -> None:
    assert runtime._supervisor, "needs the C supervisor (it leaves oom_killed to the reader)"
    bundle, rootfs = bundles.make(["sh", "-c", "exit 4"])
    runtime.create("quiet", bundle, rootfs)
    runtime.start("quiet")
    st = runtime.wait("quiet", timeout=10)
    assert st.status == Status.STOPPED and st.exit_code == 4 and st.oom_killed is False
    cdir = Path(runtime.state_dir) / "quiet"
    exit_file = cdir / statedir.EXIT
    before = (exit_file.read_bytes(), os.stat(exit_file).st_ino)
    assert statedir.read_json(exit_file)["oom_killed"] is None        # the supervisor's record
    for _ in range(3):
        assert runtime.state("quiet").oom_killed is False
    assert (exit_file.read_bytes(), os.stat(exit_file).st_ino) == before
    assert [n for n in os.listdir(cdir) if n.endswith(".tmp")] == []
    runtime.delete("quiet")


def test_a_create_writes_its_record_twice_without_rewriting_a_file(runtime: Any, bundles: Any) -> None:
    """creating.json (ownership, before anything is made), then state.json with the processes, as a
    new file: renaming over an existing file makes ext4 flush it (~0.3 ms per create)."""
    bundle, rootfs = bundles.make(["true"])
    runtime.create("twice", bundle, rootfs)
    cdir = Path(runtime.state_dir) / "twice"
    assert not (cdir / statedir.CREATING).exists()
    rec = statedir.read_json(cdir / statedir.STATE)
    assert rec is not None and rec["pid"] > 0 and rec["cgroup"]["path"].endswith("/twice")
    runtime.delete("twice", force=True)


def test_a_create_cut_short_is_found_and_cleaned_up(runtime: Any, bundles: Any) -> None:
    """A crash between the first record and state.json (kill -9 of the API process) leaves
    creating.json: the container reads as creating, and delete removes its cgroup and state dir."""
    import json
    import subprocess

    from orchestrator.runtime.linux.cgroups import open_driver
    bundle, _rootfs = bundles.make(["true"])
    cdir = Path(runtime.state_dir) / "cut"
    cdir.mkdir(parents=True)
    path = f"{runtime.test_cgroup_parent}/cut"
    (cdir / statedir.CREATING).write_text(json.dumps({
        "id": "cut", "bundle": str(bundle), "created_at": 0.0, "pid": 0, "start_time": 0, "monitor_pid": 0,
        "monitor_start_time": 0, "cgroup": {"root": "/sys/fs/cgroup", "path": path}, "annotations": {}}))
    cg = open_driver(Path("/sys/fs/cgroup")).create(path, {})
    stray = subprocess.Popen(["sleep", "30"])
    try:
        cg.add_pid(stray.pid)                   # a process the cut-short create had started
        assert runtime.state("cut").status == Status.CREATING
        runtime.delete("cut", force=True)
        assert stray.wait(5) == -9
        assert not cg.exists() and not cdir.exists()
    finally:
        stray.kill()
        stray.wait()
