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
