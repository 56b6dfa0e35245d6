"""Unit tests of the escape-suite fixes that need no root: the sysctl policy (``orchestrator.policy``) as
``spec.validate`` and the manifest checks apply it, the sealed interpreter copy of the fork server, the
signal reset and non-dumpable helpers of the init, and the magic-link refusal of ``check_executable``.
The processes-changing helpers run in forked children so this pytest process keeps its own state."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator import manifest as manifests
from orchestrator.errors import ManifestError, RuntimeFailure
from orchestrator.policy import sysctl_allowed, sysctl_refusal
from orchestrator.runtime.linux import init, security_defaults
from orchestrator.runtime.linux.forkclient import sealed_interpreter
from orchestrator.runtime.linux.spec import validate

ALL_NS = ["pid", "network", "ipc", "uts", "mount", "cgroup"]


@pytest.mark.parametrize(("key", "own", "ok"), [
    ("kernel.shmmni", {}, True),
    ("fs.mqueue.msg_max", {}, True),
    ("kernel.shmmni", {"own_ipcns": False}, False),
    ("net.ipv4.ip_forward", {}, True),
    ("net/ipv4/ip_forward", {}, True),
    ("net.ipv4.ip_forward", {"own_netns": False}, False),
    ("kernel.hostname", {"own_utsns": False}, False),
    ("kernel.domainname", {}, True),
    ("kernel.core_pattern", {}, False),
    ("vm.swappiness", {}, False),
    ("kernel.shm_rmid_forced.", {}, False),
    ("net...kernel.core_pattern", {}, False),
])
def test_sysctl_policy(key: str, own: dict[str, bool], ok: bool) -> None:
    kw = {"own_netns": True, "own_utsns": True, "own_ipcns": True, **own}
    assert sysctl_allowed(key, **kw) is ok
    assert (sysctl_refusal(key, **kw) == "") is ok
    assert security_defaults.sysctl_allowed is sysctl_allowed        # the runtime re-exports the same rule


def _spec(sysctl: dict[str, str], namespaces: list[str]) -> dict[str, Any]:
    return {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"args": ["true"], "cwd": "/"},
            "linux": {"namespaces": [{"type": t} for t in namespaces], "sysctl": sysctl}}


@pytest.mark.parametrize(("sysctl", "dropped", "needle"), [
    ({"kernel.core_pattern": "core"}, None, "not namespaced"),
    ({"vm.swappiness": "60"}, None, "not namespaced"),
    ({"net.ipv4.ip_forward": "1"}, "network", "network namespace"),
    ({"kernel.hostname": "x"}, "uts", "uts namespace"),
    ({"kernel.msgmax": "8192"}, "ipc", "ipc namespace"),
])
def test_spec_refuses_host_sysctls(sysctl: dict[str, str], dropped: str | None, needle: str) -> None:
    problems = validate(_spec(sysctl, [n for n in ALL_NS if n != dropped]))
    assert any(p.startswith("linux.sysctl: ") and needle in p for p in problems), problems


def test_spec_accepts_namespaced_sysctls() -> None:
    spec = _spec({"kernel.shmmni": "1", "net.ipv4.ip_forward": "1", "kernel.domainname": "d"}, ALL_NS)
    assert not [p for p in validate(spec) if p.startswith("linux.sysctl")]


def test_manifest_check_points_at_the_sysctl(tmp_path: Path) -> None:
    text = ("apiVersion: orchestrator/v1\nkind: Stack\nmetadata: {name: s}\nspec:\n  services:\n"
            "    web:\n      rootfs: /tmp\n      command: [\"true\"]\n      network: host\n"
            "      security:\n        sysctls:\n          net.ipv4.ip_forward: \"1\"\n"
            "          kernel.shmmni: \"1\"\n")
    with pytest.raises(ManifestError) as info:
        manifests.load_text(text, str(tmp_path / "stack.yaml"))
    msg = str(info.value)
    assert f"{tmp_path / 'stack.yaml'}:12:11:" in msg and "net.ipv4.ip_forward" in msg
    assert "kernel.shmmni" not in msg
    ok = text.replace("      network: host\n", "")
    manifests.load_text(ok, str(tmp_path / "stack.yaml"))
    doc = json.loads(json.dumps({"apiVersion": "orchestrator/v1", "kind": "Stack", "metadata": {"name": "s"},
                                 "spec": {"services": {"web": {"rootfs": "/tmp", "command": ["true"],
                                                               "namespaces": {"uts": "host"},
                                                               "security": {"sysctls": {
                                                                   "kernel.hostname": "h"}}}}}}))
    with pytest.raises(ManifestError, match="uts namespace"):
        manifests.load_text(json.dumps(doc), str(tmp_path / "stack.yaml"))


def test_sealed_interpreter_is_an_immutable_copy() -> None:
    fd = sealed_interpreter()
    try:
        with open(os.path.realpath(sys.executable), "rb") as f:
            assert os.pread(fd, 1 << 26, 0) == f.read()
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        want = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        assert seals & want == want
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"x", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
    finally:
        os.close(fd)


def _in_child(body: Callable[[], str]) -> str:
    """Run ``body`` in a forked child; what it returns comes back through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.write(w, body().encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


def _sig_lines() -> str:
    return "".join(ln for ln in Path("/proc/self/status").read_text().splitlines(True)
                   if ln.startswith(("SigBlk", "SigIgn")))


def test_reset_signals_gives_default_dispositions_and_an_empty_mask() -> None:
    def body() -> str:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1, signal.SIGTERM])
        before = _sig_lines()
        init.reset_signals()
        return before + "--\n" + _sig_lines()

    before, after = _in_child(body).split("--\n")
    assert "SigIgn:\t0000000000000000" not in before          # python ignores SIGPIPE/SIGXFSZ
    assert after.split() == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"]


def test_make_undumpable() -> None:
    libc = ctypes.CDLL(None, use_errno=True)

    def body() -> str:
        before = libc.prctl(3, 0, 0, 0, 0)           # PR_GET_DUMPABLE
        init.make_undumpable()
        return f"{before} {libc.prctl(3, 0, 0, 0, 0)}"

    assert _in_child(body) == "1 0"


def test_check_executable_refuses_proc_magic_links(tmp_path: Path) -> None:
    init.check_executable("/bin/sh", {})
    init.check_executable("sh", {"PATH": "/nonexistent:/bin"})
    for bad in ("/proc/self/exe", f"/proc/{os.getpid()}/exe"):
        with pytest.raises(RuntimeFailure) as info:
            init.check_executable(bad, {})
        assert info.value.errno == errno.ELOOP
    (tmp_path / "python").symlink_to("/proc/self/exe")           # an image's symlink to it
    with pytest.raises(RuntimeFailure, match="magic link"):
        init.check_executable("python", {"PATH": str(tmp_path)})
    with pytest.raises(RuntimeFailure) as info:
        init.check_executable("no-such-program", {"PATH": str(tmp_path)})
    assert info.value.errno == errno.ENOENT


def test_check_executable_can_leave_a_missing_program_to_execve(tmp_path: Path) -> None:
    init.check_executable("/no/such/program", {}, must_exist=False)
    with pytest.raises(RuntimeFailure, match="magic link"):
        init.check_executable("/proc/self/exe", {}, must_exist=False)


def test_spec_treats_a_joined_host_namespace_as_the_host() -> None:
    spec = _spec({"net.ipv4.ip_forward": "1"}, ["pid", "ipc", "uts", "mount"])
    spec["linux"]["namespaces"].append({"type": "network", "path": "/proc/self/ns/net"})
    assert any("network namespace" in p for p in validate(spec))
    spec["linux"]["namespaces"][-1] = {"type": "network", "path": "/proc/1/ns/pid"}    # not ours: no match
    assert not [p for p in validate(spec) if p.startswith("linux.sysctl")]
