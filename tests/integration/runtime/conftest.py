"""Fixtures for runtime tests on the real kernel: a busybox root filesystem, OCI bundles, runtimes.

The rootfs is built once per session by copying /bin/busybox (Debian's busybox-static) and linking its
applets; each container gets an overlay (that rootfs as the read-only lower, a per-test upper/work dir),
mounted by the runtime inside the container's mount namespace.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rootfs_kit

from orchestrator.runtime.base import Mount


def build_busybox_rootfs(dest: Path) -> Path:
    return rootfs_kit.build_busybox_rootfs(dest, extra_dirs=("var/log",))


BASE_SPEC = rootfs_kit.BASE_SPEC


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


class Bundles:
    """Makes bundle dirs (config.json + empty rootfs mount point) and the overlay Mount for each."""

    def __init__(self, base: Path, lower: Path) -> None:
        self.base, self.lower, self.count = base, lower, 0

    def make(self, args: list[str], edit: Callable[[dict[str, Any]], None] | None = None,
             ) -> tuple[Path, list[Mount]]:
        self.count += 1
        bundle = self.base / f"bundle{self.count}"
        for d in ("rootfs", "upper", "work"):
            (bundle / d).mkdir(parents=True)
        spec = copy.deepcopy(BASE_SPEC)
        spec["process"]["args"] = args
        if edit:
            edit(spec)
        (bundle / "config.json").write_text(json.dumps(spec, indent=1))
        overlay = Mount("overlay", "overlay", "", (f"lowerdir={self.lower}", f"upperdir={bundle / 'upper'}",
                                                   f"workdir={bundle / 'work'}"))
        return bundle, [overlay]


@pytest.fixture
def bundles(tmp_path: Path, busybox_rootfs: Path) -> Bundles:
    return Bundles(tmp_path, busybox_rootfs)


@pytest.fixture(params=["c-init", "py-init"])
def runtime(request: pytest.FixtureRequest, state_root: Path,
            seed_c_programs: Callable[[Path], Path]) -> Iterator[Any]:
    """A native runtime with its own cgroup parent, removed (with every container) afterwards; once with
    warm spares' container init in C (``init.c``, the default), once with every init in Python."""
    from orchestrator.runtime.linux.native import LinuxRuntime
    parent = f"orchestrator-rt-{uuid.uuid4().hex[:10]}"
    rt = LinuxRuntime(seed_c_programs(state_root / "containers"), cgroup_parent=parent,
                      c_init=request.param == "c-init")
    rt.test_cgroup_parent = parent            # type: ignore[attr-defined]
    yield rt
    for st in rt.list():
        rt.delete(st.id, force=True)
    rt.close()
    rootfs_kit.remove_cgroup_parent(parent)
