"""``LinuxRuntime.update``/``stats`` on the real kernel: the one seam for a container's cgroup after
create (limits changed in place, readings), through the cgroup recorded in its state dir."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.errors import ContainerNotFound
from orchestrator.runtime.base import Status

pytestmark = pytest.mark.root


def test_update_in_place_and_stats(runtime: Any, bundles: Any) -> None:
    def limits(spec: dict[str, Any]) -> None:
        spec["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 32}}
    bundle, rootfs = bundles.make(["sleep", "30"], limits)
    runtime.create("cg", bundle, rootfs)
    runtime.start("cg")
    st = runtime.stats("cg")
    assert (st.memory_limit_bytes, st.pids_limit) == (64 << 20, 32) and st.pids_current >= 1
    pid = runtime.state("cg").pid
    runtime.update("cg", {"memory": {"limit": 96 << 20}})        # only the keys given change
    st = runtime.stats("cg")
    assert (st.memory_limit_bytes, st.pids_limit) == (96 << 20, 32)
    assert runtime.state("cg").status == Status.RUNNING and runtime.state("cg").pid == pid
    runtime.delete("cg", force=True)
    with pytest.raises(ContainerNotFound):
        runtime.stats("cg")
    with pytest.raises(ContainerNotFound):
        runtime.update("nosuch", {"pids": {"limit": 5}})
