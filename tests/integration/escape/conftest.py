"""Fixtures for the adversarial escape suite (helpers in ``escapekit``).

One ``LinuxRuntime`` (one fork server) per init flavour serves the session under its own cgroup parent,
created before the first test so the per-test leak check only sees what a test itself made; ``esc``
force-deletes every container a test made when it ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from escapekit import HERE, Escape, build_rootfs
from rootfs_kit import remove_cgroup_parent

from orchestrator.reconcile.bundle import BundleBuilder
from orchestrator.settings import Settings


@pytest.fixture(scope="session", params=["c-init", "py-init"])
def escape(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Escape]:
    """Twice: with warm spares' container init in C (``init.c``, the default) and in Python (``init``,
    which every other create uses): each attack is tried against both."""
    if os.geteuid() != 0:
        pytest.skip("NEEDS ROOT: real-kernel test skipped (run the suite as root)")
    if not shutil.which("gcc"):
        pytest.skip("gcc not installed")
    from orchestrator.runtime.linux.native import LinuxRuntime

    base = tmp_path_factory.mktemp("escape")
    probe = base / "escape_probe"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(probe), str(HERE / "escape_probe.c")], check=True)
    host_dir = base / "hostdir"
    host_dir.mkdir()
    (host_dir / "untouched").write_text("host\n")
    host_marker = base / f"HOST_ONLY_{uuid.uuid4().hex}"
    host_marker.write_text("if a container can read this, it escaped\n")
    rootfs = base / "rootfs"
    build_rootfs(rootfs, probe, host_dir)
    settings = Settings.from_env(str(base / "state"))
    parent = f"orchestrator-escape-{uuid.uuid4().hex[:8]}"
    rt = LinuxRuntime(base / "runtime", cgroup_parent=parent, c_init=request.param == "c-init")
    env = Escape(base, rootfs, host_marker, host_dir, rt, parent, settings, BundleBuilder(settings),
                 c_init=request.param == "c-init")
    # one container before any test: the cgroup parent then exists before the first leak snapshot
    env.run(base, env.config(env.service(["true"])))
    env.cleanup()
    try:
        yield env
    finally:
        env.cleanup()
        rt.close()
        remove_cgroup_parent(parent)


@pytest.fixture
def esc(escape: Escape) -> Iterator[Escape]:
    """The session's objects; every container a test made is force-deleted when it ends."""
    try:
        yield escape
    finally:
        escape.cleanup()


