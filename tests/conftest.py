"""Shared fixtures: per-test state roots, the ``root`` marker, and the leak check.

Tests marked ``@pytest.mark.root`` touch the real kernel (namespaces, overlayfs, cgroups, netns). Without
root they are skipped, loudly: the skip reason is printed in the summary (``-ra``). Every root test runs
under ``leak_check``: mounts, network links, named netns and our cgroups must be the same after the test
as before it, or the test fails.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="NEEDS ROOT: real-kernel test skipped (run the suite as root)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


def _mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        # mount point and fs type; ids change on remount so leave them out
        return {" ".join((line.split()[4], line.split(" - ")[1].split()[0])) for line in f}


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def _netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


_CGROUP_BASES = ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified")
# the default parent every container cgroup is nested under (like Docker's "docker"): shared
# infrastructure that outlives containers, so not a leak itself; the session removes it if it made it
_DEFAULT_PARENTS = {f"{base}/orchestrator" for base in _CGROUP_BASES}


def _cgroups() -> set[str]:
    found: set[str] = set()
    for base in _CGROUP_BASES:
        for dirpath, _dirs, _files in os.walk(base):
            if "orchestrator" in dirpath and dirpath not in _DEFAULT_PARENTS:
                found.add(dirpath)
    return found


def _parents() -> set[str]:
    base = "/sys/fs/cgroup"
    return {p for h in os.listdir(base) if os.path.isdir(p := os.path.join(base, h, "orchestrator"))}


@pytest.fixture(scope="session", autouse=True)
def _default_cgroup_parent() -> Iterator[None]:
    """Remove the default ``orchestrator`` parent cgroups at the end if this run created them."""
    existed = _parents()
    yield
    for parent in _parents() - existed if IS_ROOT else ():
        with contextlib.suppress(OSError):          # only when empty: a leak inside fails its own test
            os.rmdir(parent)


def snapshot() -> dict[str, set[str]]:
    return {"mounts": _mounts(), "links": _links(), "netns": _netns(), "cgroups": _cgroups()}


@pytest.fixture(scope="session")
def c_programs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C programs (supervisor, spare monitor, spare init), compiled once for the session. Each is
    named by a hash of its sources, so a runtime whose ``.bin`` already holds them uses them as they
    are; building them for every test's state dir cost ~0.7 s of CPU a test."""
    from orchestrator.runtime.linux import cmonitor
    out = tmp_path_factory.mktemp("c-programs")
    for name, sources in cmonitor.PROGRAMS.items():
        cmonitor.build(out, sources, name)
    return out


@pytest.fixture(scope="session")
def seed_c_programs(c_programs: Path) -> Callable[[Path], Path]:
    """``seed(runtime_state_dir)``: hard links to the session's C programs in its ``.bin``."""
    def seed(state_dir: Path) -> Path:
        bin_dir = state_dir / ".bin"
        bin_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for program in c_programs.iterdir():
            with contextlib.suppress(FileExistsError):
                os.link(program, bin_dir / program.name)
        return state_dir
    return seed


@pytest.fixture
def state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               seed_c_programs: Callable[[Path], Path]) -> Path:
    """A private state root for this test, also exported as ORCHESTRATOR_ROOT for CLI runs; its runtime
    dir (``runtime``, as the CLI lays it out) starts with the session's C programs."""
    root = tmp_path / "state"
    root.mkdir()
    seed_c_programs(root / "runtime")
    monkeypatch.setenv("ORCHESTRATOR_ROOT", str(root))
    return root


@pytest.fixture(autouse=True)
def leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    if not IS_ROOT or "root" not in request.keywords:
        yield
        return
    before = snapshot()
    yield
    after = snapshot()
    leaked = {k: sorted(after[k] - before[k]) for k in after if after[k] - before[k]}
    if leaked:
        pytest.fail(f"test leaked kernel objects: {leaked}", pytrace=False)
