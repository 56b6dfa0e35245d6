"""In-place limit changes and resource readings for containers of the native runtime.

The native runtime records each container's cgroup (hierarchy root and path) in its state dir before it
creates it; this module opens that cgroup through the runtime's cgroup driver to ``update`` limits (the
reconciler's update-in-place: a running container keeps running) and to read ``stats``. It is the
fallback for runtimes without ``update``/``stats`` methods of their own; when the runtime grows them,
``reconcile.session`` prefers those.

Neighbours: ``runtime.linux.statedir`` (the record), ``runtime.linux.cgroups`` (driver); used by
``reconcile.session`` (wiring) and ``cli.stack_cmds`` (``stats``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.errors import ContainerNotFound


class NativeCgroups:
    def __init__(self, runtime_state_dir: Path) -> None:
        self.state_dir = runtime_state_dir

    def _cgroup(self, container_id: str) -> Any:
        from orchestrator.runtime.linux import statedir
        from orchestrator.runtime.linux.cgroups import open_driver
        rec = statedir.read_json(self.state_dir / container_id / statedir.STATE)
        if rec is None or "cgroup" not in rec:
            raise ContainerNotFound(f"container {container_id} not found", op="cgroup",
                                    path=str(self.state_dir / container_id))
        cg = rec["cgroup"]
        return open_driver(Path(cg["root"])).open(str(cg["path"]))

    def update(self, container_id: str, resources: Mapping[str, Any]) -> None:
        self._cgroup(container_id).update(resources)

    def limits(self, container_id: str) -> tuple[int | None, int | None]:
        """(memory limit bytes, pids limit) as the kernel has them now; None = unlimited."""
        st = self.stats(container_id)
        return st.memory_limit_bytes, st.pids_limit

    def stats(self, container_id: str) -> Any:
        """A ``runtime.linux.cgroups.CgroupStats`` reading."""
        return self._cgroup(container_id).stats()
