"""The fork server's warm spare (``runtime.linux.spare``): a monitor and an init made ahead of a create.

Containers served by a spare get namespaces of their own (never a previous container's), specs the spare
does not fit take the ordinary path, and nothing of a spare outlives the runtime.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runtime.linux import forkserver, spare
from orchestrator.runtime.linux.forkclient import ForkServer

pytestmark = pytest.mark.root


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _status(pid: int, key: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
    return ""


def _dead(pid: int) -> bool:
    """Exited: a zombie, or already reaped."""
    try:
        return _status(pid, "State")[:1] in ("Z", "")
    except FileNotFoundError:
        return True


def _spare_pids(server_pid: int, timeout_s: float = 5.0, exclude: tuple[int, ...] = ()) -> tuple[int, int]:
    """(spare monitor, spare init) under the fork server, once both exist; ``exclude``: monitors of
    containers (also the server's children, named orch-monitor until they exec the supervisor)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for mon in _children(server_pid):
            if mon in exclude:
                continue
            inits = _children(mon)
            if inits and _status(mon, "Name") == "orch-monitor":
                return mon, inits[0]
        time.sleep(0.01)
    raise AssertionError("no spare monitor with an init under the fork server")


def _ns(pid: int, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


@pytest.mark.parametrize("c_init", [True, False], ids=["c-init", "py-init"])
def test_spare_is_made_ahead_in_its_own_namespaces_and_goes_away_with_the_server(c_init: bool,
                                                                                 tmp_path: Path) -> None:
    from orchestrator.runtime.linux import cmonitor
    server = ForkServer((cmonitor.build(tmp_path, cmonitor.SPARE_SOURCE, "orch-spare"),
                         cmonitor.build(tmp_path, cmonitor.INIT_SOURCE, "orch-init")) if c_init else None)
    every: list[int] = []
    mon = init = 0
    try:
        mon, init = _spare_pids(server.pid)
        assert _status(init, "NSpid").split()[-1] == "1"            # PID 1 of a new pid namespace
        want = "/memfd:orch-init" if c_init else "/memfd:"
        deadline = time.monotonic() + 5                 # a spawned init is the monitor's until its exec
        while not os.readlink(f"/proc/{init}/exe").startswith(want) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert os.readlink(f"/proc/{init}/exe").startswith(want)
        for kind in ("net", "ipc", "uts"):                           # made ahead (just after the fork)
            deadline = time.monotonic() + 5
            while _ns(init, kind) == _ns(os.getpid(), kind) and time.monotonic() < deadline:
                time.sleep(0.005)
            assert _ns(init, kind) != _ns(os.getpid(), kind)
        # only now: a forked Python init clears the mask it inherited a few lines after the fork (and
        # before it unshares), so reading it earlier races with the child under load
        assert _status(init, "SigBlk") == "0000000000000000"
        assert _ns(init, "mnt") == _ns(os.getpid(), "mnt")          # never ahead (see spare's docstring)
        assert int(_status(mon, "SigBlk"), 16) & (1 << 14)                # SIGTERM blocked: a monitor
        deadline = time.monotonic() + 5
        while len(_children(server.pid)) < forkserver.SPARES and time.monotonic() < deadline:
            time.sleep(0.01)
        every = [p for m in _children(server.pid) for p in (m, *_children(m))]
        assert len(_children(server.pid)) == forkserver.SPARES
    finally:
        server.close()
    for pid in {mon, init, *every} - {0}:
        assert not os.path.exists(f"/proc/{pid}"), f"spare process {pid} outlived the fork server"


def test_each_container_gets_fresh_namespaces(runtime: Any, bundles: Any) -> None:
    # all alive at once: a freed namespace's inode number is reused by the next one
    seen: dict[str, set[str]] = {"net": set(), "ipc": set(), "uts": set(), "mnt": set(), "pid": set()}
    for i in range(4):
        bundle, rootfs = bundles.make(["sleep", "30"])
        st = runtime.create(f"fresh{i}", bundle, rootfs)
        for kind, inodes in seen.items():
            ns = _ns(st.pid, kind)
            assert ns not in inodes, f"container {i} shares a {kind} namespace with an earlier one"
            inodes.add(ns)
    for i in range(4):
        runtime.delete(f"fresh{i}", force=True)


def test_specs_the_spare_does_not_fit_take_the_ordinary_path(runtime: Any, bundles: Any) -> None:
    def host_network(spec: dict[str, Any]) -> None:
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]

    bundle, rootfs = bundles.make(["sleep", "30"], host_network)
    st = runtime.create("hostnet", bundle, rootfs)
    assert _ns(st.pid, "net") == _ns(os.getpid(), "net")
    runtime.delete("hostnet", force=True)


@pytest.mark.parametrize("edit, fits", [
    (lambda s: None, True),
    (lambda s: s["linux"]["namespaces"].append({"type": "user"}), False),
    (lambda s: s["linux"].update(namespaces=[n for n in s["linux"]["namespaces"] if n["type"] != "pid"]),
     False),
    (lambda s: s["linux"].update(namespaces=[n for n in s["linux"]["namespaces"] if n["type"] != "uts"]),
     False),
    (lambda s: s["linux"]["namespaces"].__setitem__(1, {"type": "network", "path": "/proc/1/ns/net"}),
     False),
])
def test_usable(edit: Any, fits: bool, bundles: Any) -> None:
    import json
    bundle, _ = bundles.make(["true"], edit)
    spec = json.loads((Path(bundle) / "config.json").read_text())
    assert spare.usable({"spec": spec}) is fits
    assert spare.usable({"spec": spec, "files": True}) is False


def _nice(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])     # field 19


def test_a_container_from_a_spare_runs_at_the_servers_priority(runtime: Any, bundles: Any,
                                                               state_root: Path) -> None:
    """The spare is made at a lower priority; once made it waits at the server's (so it wakes at once
    for a request), and the container and its monitor never keep the lower one."""
    from orchestrator.runtime.linux import statedir
    bundle, rootfs = bundles.make(["sleep", "30"])
    st = runtime.create("prio", bundle, rootfs)
    rec = statedir.read_json(state_root / "containers" / "prio" / statedir.STATE)
    assert rec is not None
    mon = rec["monitor_pid"]
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert (_nice(st.pid), _nice(mon)) == (base, base)
    spare_mon, spare_init = _spare_pids(runtime._server.pid, exclude=(mon,))
    deadline = time.monotonic() + 5
    while (_nice(spare_mon), _nice(spare_init)) != (base, base) and time.monotonic() < deadline:
        time.sleep(0.01)                                # still being made, at base + NICE
    assert (_nice(spare_mon), _nice(spare_init)) == (base, base)
    runtime.delete("prio", force=True)


def test_a_spare_whose_init_died_ahead_is_passed_over(runtime: Any, bundles: Any,
                                                      state_root: Path) -> None:
    """The server writes the request to the spare init first: a broken pipe (the init is gone) means
    nothing started, and the ordinary path serves the create; the spare's monitor goes away."""
    from orchestrator.runtime.linux import statedir
    from orchestrator.runtime.linux.serverpool import ServerPool
    runtime._servers.close()
    runtime._servers = ServerPool(1, runtime._servers.c_spare)
    bundle, rootfs = bundles.make(["sleep", "30"])
    runtime.create("first", bundle, rootfs)             # starts the server and its spares
    server = runtime._server.pid
    rec = statedir.read_json(state_root / "containers" / "first" / statedir.STATE)
    assert rec is not None
    first = rec["monitor_pid"]          # named orch-monitor, with its init, until it execs the supervisor
    _spare_pids(server, exclude=(first,))               # the other spare (niced) has forked its init
    gone, inits = [], []
    for mon in _children(server):
        if mon != first and _status(mon, "Name") == "orch-monitor" and _children(mon):
            inits.append(_children(mon)[0])
            os.kill(inits[-1], 9)
            gone.append(mon)
    assert gone
    deadline = time.monotonic() + 5                     # dead: its end of the request pipe is closed
    while not all(_dead(i) for i in inits) and time.monotonic() < deadline:
        time.sleep(0.01)
    bundle2, rootfs2 = bundles.make(["sleep", "30"])
    st = runtime.create("second", bundle2, rootfs2)
    runtime.start("second")
    assert runtime.state("second").status.value == "running" and st.pid > 0
    # the spare tried went away; another whose init was killed too (a refill made meanwhile) is
    # tried by a later create, or discarded with the server (the runtime fixture's leak check)
    deadline = time.monotonic() + 5
    while not any(_dead(m) for m in gone) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(_dead(m) for m in gone)
    for cid in ("first", "second"):
        runtime.delete(cid, force=True)


@pytest.mark.parametrize("c_init", [True, False], ids=["c-init", "py-init"])
def test_a_spare_that_may_not_restore_its_priority_declines(c_init: bool, bundles: Any, state_root: Path,
                                                             tmp_path: Path) -> None:
    """Without CAP_SYS_NICE a spare cannot undo its lower priority: it declines every request (its
    init, which already has the request, is killed first) and the ordinary path makes the container,
    at the caller's priority."""
    import dataclasses
    import json
    import shutil
    import subprocess
    import sys
    import uuid

    from rootfs_kit import remove_cgroup_parent
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")

    def no_nice(spec: dict[str, Any]) -> None:
        for k, caps in spec["process"]["capabilities"].items():
            spec["process"]["capabilities"][k] = [c for c in caps if c != "CAP_SYS_NICE"]
    bundle, rootfs = bundles.make(["sleep", "30"], no_nice)
    parent = f"orchestrator-rt-{uuid.uuid4().hex[:10]}"
    script = tmp_path / "declined.py"
    script.write_text(f"""
import json, os
from pathlib import Path
from orchestrator.runtime.base import Mount
from orchestrator.runtime.linux.native import LinuxRuntime
with LinuxRuntime(Path({str(state_root / "containers")!r}), cgroup_parent={parent!r},
                  c_init={c_init!r}) as rt:
    mounts = [Mount(**m) for m in {[dataclasses.asdict(m) for m in rootfs]!r}]
    st = rt.create("declined", Path({str(bundle)!r}), mounts)
    with open(f"/proc/{{st.pid}}/stat") as f:
        nice = int(f.read().rsplit(")", 1)[1].split()[16])
    rt.delete("declined", force=True)
print(json.dumps({{"nice": nice, "mine": os.getpriority(os.PRIO_PROCESS, 0)}}))
""")
    try:
        out = subprocess.run(["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice", sys.executable,
                              str(script)], capture_output=True, text=True, timeout=60)
    finally:
        remove_cgroup_parent(parent)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["nice"] == got["mine"]


def test_a_create_does_not_wait_for_a_running_exec(runtime: Any, bundles: Any) -> None:
    """An exec helper (a child of the fork server) lives as long as its command: it must not hold the
    spare's request pipe, or the next create on that server would wait for the command to end."""
    import threading

    from orchestrator.runtime.linux.serverpool import ServerPool
    runtime._servers.close()
    runtime._servers = ServerPool(1, runtime._servers.c_spare)     # the exec and the create on one server
    bundle, rootfs = bundles.make(["sleep", "30"])
    runtime.create("execd", bundle, rootfs)
    runtime.start("execd")
    t = threading.Thread(target=runtime.exec, args=("execd", ["sleep", "4"]), daemon=True)
    t.start()
    time.sleep(0.5)                                     # the exec runs
    bundle2, rootfs2 = bundles.make(["sleep", "30"])
    t0 = time.monotonic()
    runtime.create("next", bundle2, rootfs2)
    assert time.monotonic() - t0 < 2.0 and t.is_alive()
    t.join(10)
    for cid in ("next", "execd"):
        runtime.delete(cid, force=True)


def test_a_cgroup_that_cannot_be_made_fails_the_create_and_the_next_one_works(runtime: Any,
                                                                               bundles: Any) -> None:
    """The API side makes the cgroup while the server and the init work, then says "go" (or gives
    up): a cgroup the kernel refuses fails the create with that error, leaves nothing, and the
    server reads the next request as a request (on a spare, and on the ordinary path)."""
    from orchestrator.errors import RuntimeFailure

    def bad_cpus(spec: dict[str, Any]) -> None:
        spec["linux"]["resources"] = {"cpu": {"cpus": "4095"}}

    def bad_cpus_host_net(spec: dict[str, Any]) -> None:    # no spare fits: the ordinary path
        bad_cpus(spec)
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]

    for edit in (bad_cpus, bad_cpus_host_net):
        bundle, rootfs = bundles.make(["true"], edit)
        with pytest.raises(RuntimeFailure, match="cpuset"):
            runtime.create("badcg", bundle, rootfs)
        assert runtime.list() == []
        bundle, rootfs = bundles.make(["true"])
        runtime.create("next", bundle, rootfs)
        runtime.start("next")
        assert runtime.wait("next", timeout=20).exit_code == 0
        runtime.delete("next", force=True)
