"""``initplan``: a create request compiled into the C init's ops (pure: no kernel, no C)."""

from __future__ import annotations

import copy
import struct
from typing import Any

import pytest
from rootfs_kit import BASE_SPEC

from orchestrator.runtime.linux import initplan
from orchestrator.runtime.linux import syscalls as sc


def _decode(raw: bytes) -> list[tuple[str, ...]]:
    """The wire format read back as init.c reads it."""
    ops, pos = [], 0
    while pos < len(raw):
        (count,), pos = struct.unpack_from("<I", raw, pos), pos + 4
        fields = []
        for _ in range(count):
            end = raw.index(b"\0", pos)
            fields.append(raw[pos:end].decode())
            pos = end + 1
        ops.append(tuple(fields))
    return ops


def _req(edit: Any = None) -> dict[str, Any]:
    spec = copy.deepcopy(BASE_SPEC)
    spec["root"]["path"] = "/b/rootfs/"
    if edit:
        edit(spec)
    return {"spec": spec, "bundle": "/b", "exec_fifo": "/s/exec.fifo", "seccomp": "00" * 8,
            "seccomp_flags": 0, "rootfs": [{"type": "overlay", "source": "overlay", "target": "",
                                            "options": ["lowerdir=/l", "upperdir=/u", "workdir=/w"]}]}


def test_ops_follow_the_python_inits_step_order() -> None:
    raw = initplan.compile_ops(_req())
    assert raw is not None
    ops = _decode(raw)
    names = [op[0] for op in ops]
    # the order of init.container_init: mounts, devices, fifo, pivot, paths, cgroup, ..., user, exec
    order = ["unshare", "root", "mount", "rootmount", "specmount", "mknod", "symlink", "fifo", "pivot",
             "cgroup", "hostname", "loopback", "rlimit", "user", "chdir", "nnp", "seccomp", "findexec",
             "exec"]
    firsts = [names.index(n) for n in order]
    assert firsts == sorted(firsts), names
    assert ops[0] == ("unshare", "unshare", str(sc.CLONE_NEWNS))      # net/ipc/uts were made ahead
    assert ("root", "rootfs", "/b/rootfs") in ops                        # trailing slash dropped
    assert ops[-1][:4] == ("exec", "exec", "1", "true")
    assert ops[-1][4:] == ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    user = next(op for op in ops if op[0] == "user")
    assert user[2:6] == ("1", "0", "0", "")                              # caps, uid, gid, no groups


def test_environment_is_deduplicated_like_the_python_init() -> None:
    raw = initplan.compile_ops(_req(lambda s: s["process"].update(env=["A=1", "B", "A=2", "C=x=y"])))
    assert raw is not None
    assert _decode(raw)[-1][4:] == ("A=2", "C=x=y")


@pytest.mark.parametrize("edit, extra", [
    (lambda s: s["linux"]["namespaces"].append({"type": "user"}), {}),
    (lambda s: s["linux"]["namespaces"].__setitem__(0, {"type": "pid", "path": "/proc/1/ns/pid"}), {}),
    (None, {"files": True}),
    (lambda s: s["process"].update(args=[]), {}),
    (lambda s: s["process"].update(args=["a\0b"]), {}),
    (lambda s: s["process"].update(rlimits=[{"type": "RLIMIT_NO_SUCH", "soft": 1, "hard": 1}]), {}),
    (lambda s: s["process"].update(capabilities={"bounding": ["CAP_NO_SUCH"]}), {}),
])
def test_requests_the_c_init_is_not_for(edit: Any, extra: dict[str, Any]) -> None:
    assert initplan.compile_ops({**_req(edit), **extra}) is None
