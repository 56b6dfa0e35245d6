"""Descriptor escapes (runc CVE-2024-21626 style): no directory descriptor of the host reaches a container
process, so neither ``fchdir`` on an inherited fd nor a ``cwd`` of ``/proc/self/fd/N`` can climb out.

The probe (``escape_probe fds``) lists every descriptor it holds with its target and, for directories,
whether ``../../..`` from it reaches ``host_marker``; ``escape_probe cwd`` reports where it was started
and whether ``../../..`` from there reaches it."""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from escapekit import PROBE, Escape, errnos

from orchestrator.errors import RuntimeFailure

pytestmark = pytest.mark.root

FD_LINE = re.compile(r"^fd (\d+) (.*) dir=(\d) reach=(\d)$")
# what a container process may legitimately hold: its stdio pipes/sockets, /dev/null, anon inodes
HARMLESS = re.compile(r"^(pipe:\[\d+\]|socket:\[\d+\]|anon_inode:.*|/dev/null|/dev/pts/\d+)$")


def fd_table(lines: list[str]) -> dict[int, tuple[str, bool, bool]]:
    out = {}
    for line in lines:
        m = FD_LINE.match(line)
        if m:
            out[int(m[1])] = (m[2], m[3] == "1", m[4] == "1")
    return out


def assert_contained(table: dict[int, tuple[str, bool, bool]], *host_paths: Path) -> None:
    assert table, "the probe listed no descriptors"
    for fd, (target, is_dir, reach) in table.items():
        assert not is_dir and not reach, f"fd {fd} -> {target} is a directory (reaches host: {reach})"
        assert HARMLESS.match(target), f"fd {fd} -> {target!r} leaked into the container"
        for p in host_paths:
            assert str(p) not in target, f"fd {fd} -> {target!r} is a host object"


def test_container_process_holds_no_host_descriptor(esc: Escape, tmp_path: Path) -> None:
    st, out, err = esc.run(tmp_path, esc.config(esc.service([PROBE, "fds", str(esc.host_marker)])))
    assert st.exit_code == 0, err
    assert_contained(fd_table(out), esc.base, tmp_path)


def test_exec_process_holds_no_host_descriptor(esc: Escape, tmp_path: Path) -> None:
    cid = esc.create(tmp_path, esc.config(esc.service(["sleep", "60"])))
    esc.runtime.start(cid)
    res = esc.runtime.exec(cid, [PROBE, "fds", str(esc.host_marker)])
    assert res.exit_code == 0, res.stderr
    assert_contained(fd_table(res.stdout.decode().splitlines()), esc.base, tmp_path)
    cwd = errnos(esc.runtime.exec(cid, [PROBE, "cwd", str(esc.host_marker)]).stdout.decode().splitlines())
    assert cwd["stat_host_marker_relative"] == errno.ENOENT


@pytest.fixture
def leaky(esc: Escape, tmp_path: Path) -> Iterator[tuple[Any, int, int]]:
    """A runtime created by a careless caller that holds an inheritable descriptor on a host file and
    one on a host directory (the fd numbers are the same in anything it forks)."""
    from orchestrator.runtime.linux.native import LinuxRuntime
    file_fd = os.open(esc.host_marker, os.O_RDONLY)
    dir_fd = os.open(esc.host_dir, os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(file_fd, True)
    os.set_inheritable(dir_fd, True)
    state = tmp_path / "leaky-runtime"
    shutil.copytree(esc.runtime.state_dir / ".bin", state / ".bin")     # the built supervisor: no gcc
    rt = LinuxRuntime(state, cgroup_parent=esc.cgroup_parent)
    try:
        yield rt, file_fd, dir_fd
    finally:
        esc.cleanup()
        rt.close()
        os.close(file_fd)
        os.close(dir_fd)


def test_creator_descriptors_do_not_leak_in(esc: Escape, tmp_path: Path,
                                            leaky: tuple[Any, int, int]) -> None:
    rt, file_fd, dir_fd = leaky
    st, out, err = esc.run(tmp_path, esc.config(esc.service([PROBE, "fds", str(esc.host_marker)])), rt)
    assert st.exit_code == 0, err
    table = fd_table(out)
    assert file_fd not in table and dir_fd not in table
    assert_contained(table, esc.host_marker, esc.host_dir, esc.base)
    cid = esc.create(tmp_path, esc.config(esc.service(["sleep", "60"])), rt)
    rt.start(cid)
    res = rt.exec(cid, [PROBE, "fds", str(esc.host_marker)])
    assert res.exit_code == 0, res.stderr
    table = fd_table(res.stdout.decode().splitlines())
    assert file_fd not in table and dir_fd not in table
    assert_contained(table, esc.host_marker, esc.host_dir, esc.base)


def _cwd_candidates(dir_fd: int) -> list[int]:
    # every low descriptor the runtime's own processes may hold, and the creator's leaked directory
    return sorted({*range(3, 12), dir_fd})


def test_cwd_proc_self_fd_cannot_reach_the_host(esc: Escape, tmp_path: Path,
                                                leaky: tuple[Any, int, int]) -> None:
    """process.cwd = /proc/self/fd/N: the runtime must refuse it (not a directory / no such fd) or end up
    inside the container; never with a cwd from which ``..`` climbs to the host."""
    rt, _file_fd, dir_fd = leaky
    outcomes: dict[int, str] = {}
    for n in _cwd_candidates(dir_fd):
        svc = esc.service([PROBE, "cwd", str(esc.host_marker)], workingDir=f"/proc/self/fd/{n}")
        try:
            _st, out, err = esc.run(tmp_path, esc.config(svc), rt)
        except RuntimeFailure as exc:
            outcomes[n] = f"refused: {exc.errno}"
            continue
        got = errnos(out)
        assert got.get("stat_host_marker_relative") == errno.ENOENT, (n, out, err)
        assert not any(line.startswith("getcwd (unreachable)") for line in out), (n, out)
        outcomes[n] = "inside"
    assert set(outcomes) == set(_cwd_candidates(dir_fd)), outcomes


def test_exec_cwd_proc_self_fd_cannot_reach_the_host(esc: Escape, tmp_path: Path,
                                                     leaky: tuple[Any, int, int]) -> None:
    rt, _file_fd, dir_fd = leaky
    cid = esc.create(tmp_path, esc.config(esc.service(["sleep", "60"])), rt)
    rt.start(cid)
    outcomes: dict[int, str] = {}
    for n in _cwd_candidates(dir_fd):
        try:
            res = rt.exec(cid, [PROBE, "cwd", str(esc.host_marker)],
                          cwd=f"/proc/self/fd/{n}")
        except RuntimeFailure as exc:
            outcomes[n] = f"refused: {exc.errno}"
            continue
        out = res.stdout.decode().splitlines()
        if res.exit_code != 0:
            outcomes[n] = f"failed: {res.exit_code} {res.stderr!r}"
            continue
        assert errnos(out).get("stat_host_marker_relative") == errno.ENOENT, (n, out)
        assert not any(line.startswith("getcwd (unreachable)") for line in out), (n, out)
        outcomes[n] = "inside"
    assert set(outcomes) == set(_cwd_candidates(dir_fd)), outcomes
