"""Restart policies on the real kernel: the per-container supervisor restarts containers by itself.

Each test runs busybox containers with a restart policy in the bundle's annotations and short backoffs,
and checks what the runtime records (exit of each run, restart count, timestamps) and what the kernel
shows (the writable layer, processes, cgroups after delete).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rootfs_kit import remove_cgroup_parent

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.base import Status
from orchestrator.runtime.linux import restart, statedir

pytestmark = pytest.mark.root


def policy(name: str, **extra: str) -> Callable[[dict[str, Any]], None]:
    annotations = {restart.POLICY: name, restart.BACKOFF_INITIAL: "0.05", restart.BACKOFF_MAX: "1",
                   **{restart.PREFIX + k.replace("_", "-"): v for k, v in extra.items()}}

    def edit(spec: dict[str, Any]) -> None:
        spec["annotations"] = annotations
    return edit


def history(rt: Any, cid: str) -> list[dict[str, Any]]:
    counts = statedir.read_json(rt.state_dir / cid / statedir.RESTARTS) or {}
    return list(counts.get("history", []))


def restarts(rt: Any, cid: str) -> int:
    return int(rt.state(cid).annotations.get(restart.RESTARTS, "0"))


def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def assert_gone(rt: Any, cid: str, monitor_pid: int, monitor_start: int, cgroup: str) -> None:
    assert not statedir.alive(monitor_pid, monitor_start)
    assert not (rt.state_dir / cid).exists()
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        assert not (hierarchy / cgroup).exists(), hierarchy / cgroup


def start(rt: Any, bundles: Any, cid: str, args: list[str], edit: Any) -> dict[str, Any]:
    bundle, rootfs = bundles.make(args, edit)
    rt.create(cid, bundle, rootfs)
    rt.start(cid)
    rec = statedir.read_json(rt.state_dir / cid / statedir.STATE)
    assert rec is not None
    return rec


def test_on_failure_stops_after_max_retries_with_growing_backoff(runtime: Any, bundles: Any) -> None:
    start(runtime, bundles, "fail", ["sh", "-c", "echo run; exit 3"],
          policy("on-failure", max_retries="3", backoff_initial="0.1"))
    st = runtime.wait("fail", timeout=15)
    assert st.status == Status.STOPPED and st.exit_code == 3 and st.exit_signal is None
    assert st.annotations[restart.RESTARTS] == "3" and st.annotations[restart.RESTARTING] == "false"
    assert float(st.annotations[restart.LAST_RESTART]) <= st.finished_at
    runs = history(runtime, "fail")
    assert [r["exit_code"] for r in runs] == [3, 3, 3]
    assert [r["restart_delay_ms"] for r in runs] == [100, 200, 400]
    gaps = [r["restarted_at"] - r["finished_at"] for r in runs]      # the delay plus the restart itself
    assert all(gap >= r["restart_delay_ms"] / 1000 for gap, r in zip(gaps, runs, strict=True))
    assert gaps[0] < gaps[2]
    assert [line.text for line in runtime.logs("fail")] == ["run"] * 4     # one log across runs
    time.sleep(0.3)
    assert restarts(runtime, "fail") == 3                                  # and it stays stopped


def test_on_failure_does_not_restart_a_clean_exit_and_never_never_restarts(runtime: Any,
                                                                           bundles: Any) -> None:
    start(runtime, bundles, "clean", ["true"], policy("on-failure"))
    start(runtime, bundles, "never", ["sh", "-c", "exit 1"], policy("never"))
    clean, never = runtime.wait("clean", timeout=10), runtime.wait("never", timeout=10)
    time.sleep(0.3)
    assert clean.exit_code == 0 and clean.annotations[restart.RESTARTS] == "0"
    assert never.exit_code == 1 and restart.RESTARTS not in never.annotations
    assert runtime.state("never").status == Status.STOPPED and history(runtime, "clean") == []


def test_always_restarts_a_clean_exit_until_killed(runtime: Any, bundles: Any) -> None:
    rec = start(runtime, bundles, "always", ["sh", "-c", "sleep 0.05"], policy("always", backoff_max="0.05"))
    until(lambda: restarts(runtime, "always") >= 3)
    assert all(r["exit_code"] == 0 for r in history(runtime, "always"))
    st = runtime.state("always")
    assert rec["monitor_pid"] and st.pid != rec["pid"]               # a new init, the same monitor
    # the init exits every 50 ms, so it may be gone (and the run recorded) by the time kill looks
    with contextlib.suppress(RuntimeFailure):
        if st.status == Status.RUNNING:
            runtime.kill("always", signal.SIGKILL)
        else:
            runtime.kill("always")      # between two runs: cancels the pending restart
    st = runtime.wait("always", timeout=10)
    assert st.status == Status.STOPPED and st.annotations[restart.RESTARTING] == "false"
    count = restarts(runtime, "always")
    time.sleep(0.3)
    assert restarts(runtime, "always") == count and runtime.state("always").status == Status.STOPPED
    cgroup = rec["cgroup"]["path"]
    runtime.delete("always")
    assert_gone(runtime, "always", rec["monitor_pid"], rec["monitor_start_time"], cgroup)


def test_writable_layer_persists_across_restarts(runtime: Any, bundles: Any) -> None:
    script = "if [ -f /keep ]; then cat /keep; exit 0; fi; echo written-before-crash > /keep; exit 9"
    start(runtime, bundles, "layer", ["sh", "-c", script], policy("on-failure"))
    st = runtime.wait("layer", timeout=10)
    assert st.exit_code == 0 and st.annotations[restart.RESTARTS] == "1"
    assert [line.text for line in runtime.logs("layer")] == ["written-before-crash"]
    assert [r["exit_code"] for r in history(runtime, "layer")] == [9]


def test_delete_of_a_running_container_stops_restarts_and_leaves_nothing(runtime: Any,
                                                                          bundles: Any) -> None:
    rec = start(runtime, bundles, "del", ["sh", "-c", "sleep 0.1; exit 1"], policy("always"))
    until(lambda: restarts(runtime, "del") >= 2)
    until(lambda: runtime.state("del").status == Status.RUNNING)
    pid = runtime.state("del").pid
    runtime.delete("del", force=True)
    assert not os.path.exists(f"/proc/{pid}") or statedir.start_time(pid) is None
    assert_gone(runtime, "del", rec["monitor_pid"], rec["monitor_start_time"], rec["cgroup"]["path"])


def test_kill_of_a_running_container_is_final(runtime: Any, bundles: Any) -> None:
    # a clean exit on SIGTERM: "always" would restart it, but the user asked it to stop
    script = "trap 'exit 0' TERM; echo up; while true; do sleep 0.05; done"
    start(runtime, bundles, "term", ["sh", "-c", script], policy("always"))
    until(lambda: [line.text for line in runtime.logs("term")] == ["up"])
    runtime.kill("term", signal.SIGTERM)
    st = runtime.wait("term", timeout=10)
    assert st.status == Status.STOPPED and st.exit_code == 0 and st.annotations[restart.RESTARTS] == "0"
    time.sleep(0.3)
    assert runtime.state("term").status == Status.STOPPED and restarts(runtime, "term") == 0


def test_an_oom_kill_is_a_failure_recorded_per_run(runtime: Any, bundles: Any) -> None:
    edit = policy("on-failure")

    def limited(spec: dict[str, Any]) -> None:
        edit(spec)
        spec["linux"]["resources"] = {"memory": {"limit": 32 << 20, "swap": 32 << 20}}
    # the first run is OOM-killed (a shell variable that keeps doubling), the second exits cleanly
    script = "[ -f /oomed ] && exit 0; touch /oomed; x=a; while true; do x=$x$x; done"
    start(runtime, bundles, "oom", ["sh", "-c", script], limited)
    st = runtime.wait("oom", timeout=20)
    assert st.exit_code == 0 and not st.oom_killed and st.annotations[restart.RESTARTS] == "1"
    (first,) = history(runtime, "oom")
    assert first["oom_killed"] and first["exit_signal"] == signal.SIGKILL


def test_delete_during_a_long_backoff_returns_at_once(runtime: Any, bundles: Any) -> None:
    rec = start(runtime, bundles, "slow", ["sh", "-c", "exit 1"], policy("always", backoff_initial="30",
                                                                          backoff_max="30"))
    until(lambda: runtime.state("slow").annotations[restart.RESTARTING] == "true")
    st = runtime.wait("slow", timeout=0.2)          # a pending restart is not the end
    assert st.status == Status.STOPPED and st.exit_code == 1
    began = time.monotonic()
    runtime.delete("slow")                          # stopped: no force needed; the backoff is cut short
    assert time.monotonic() - began < 3
    assert_gone(runtime, "slow", rec["monitor_pid"], rec["monitor_start_time"], rec["cgroup"]["path"])


def test_user_namespace_container_restarts(runtime: Any, bundles: Any) -> None:
    edit = policy("on-failure", max_retries="1")

    def userns(spec: dict[str, Any]) -> None:
        edit(spec)
        spec["linux"]["namespaces"].append({"type": "user"})
        for key in ("uidMappings", "gidMappings"):
            spec["linux"][key] = [{"containerID": 0, "hostID": 0, "size": 1},
                                  {"containerID": 1, "hostID": 200001, "size": 65535}]
    start(runtime, bundles, "uns", ["sh", "-c", "echo $$; readlink /proc/self/ns/user; exit 5"], userns)
    st = runtime.wait("uns", timeout=15)
    assert st.exit_code == 5 and st.annotations[restart.RESTARTS] == "1"
    lines = [line.text for line in runtime.logs("uns")]
    assert lines[0] == lines[2] == "1"                                 # PID 1 in a fresh pid namespace
    # (a freed namespace's inode number is reused at once, so the two runs may show the same one)
    assert os.readlink("/proc/self/ns/user") not in lines[1::2]       # a user namespace each time


CREATOR = textwrap.dedent("""
    import sys
    from pathlib import Path
    from orchestrator.runtime.base import Mount
    from orchestrator.runtime.linux.native import LinuxRuntime
    state, bundle, opts, parent = sys.argv[1], sys.argv[2], sys.argv[3].split("|"), sys.argv[4]
    with LinuxRuntime(Path(state), cgroup_parent=parent) as rt:
        rt.create("orphan", Path(bundle), [Mount("overlay", "overlay", "", tuple(opts))])
        rt.start("orphan")
        print(rt._server.pid, flush=True)
""")


def test_restarts_continue_after_the_creator_and_fork_server_are_gone(runtime: Any, bundles: Any,
                                                                       state_root: Path) -> None:
    bundle, rootfs = bundles.make(["sh", "-c", "echo up; sleep 0.1; exit 2"], policy("on-failure"))
    proc = subprocess.run([sys.executable, "-c", CREATOR, str(runtime.state_dir), str(bundle),
                           "|".join(rootfs[0].options), runtime.test_cgroup_parent],
                          capture_output=True, text=True, timeout=30, check=True)
    server_pid = int(proc.stdout.strip())
    assert statedir.start_time(server_pid) is None                  # the creator's fork server is gone
    until(lambda: restarts(runtime, "orphan") >= 3)
    runs = history(runtime, "orphan")
    assert [r["exit_code"] for r in runs[:3]] == [2, 2, 2]
    assert [line.text for line in runtime.logs("orphan")][:3] == ["up"] * 3
    rec = statedir.read_json(runtime.state_dir / "orphan" / statedir.STATE)
    assert rec is not None
    runtime.delete("orphan", force=True)
    assert_gone(runtime, "orphan", rec["monitor_pid"], rec["monitor_start_time"], rec["cgroup"]["path"])


def test_python_supervisor_restarts_too(state_root: Path, bundles: Any) -> None:
    from orchestrator.runtime.linux.native import LinuxRuntime
    parent = f"orchestrator-rt-{uuid.uuid4().hex[:10]}"
    with LinuxRuntime(state_root / "py", cgroup_parent=parent, c_supervisor=False) as rt:
        try:
            start(rt, bundles, "py", ["sh", "-c", "exit 4"], policy("on-failure", max_retries="2"))
            st = rt.wait("py", timeout=15)
            assert st.exit_code == 4 and st.annotations[restart.RESTARTS] == "2"
            assert [r["restart_delay_ms"] for r in history(rt, "py")] == [50, 100]
        finally:
            rt.delete("py", force=True)
            remove_cgroup_parent(parent)


def test_invalid_policy_fails_create(runtime: Any, bundles: Any) -> None:
    bundle, rootfs = bundles.make(["true"], policy("sometimes"))
    with pytest.raises(RuntimeFailure, match=r"org\.orchestrator\.restart\.policy"):
        runtime.create("bad", bundle, rootfs)
    assert not (runtime.state_dir / "bad").exists()


def _crash(rt: Any, cid: str) -> None:
    """SIGKILL the init from outside (not a user stop through the runtime): a failure to the policy."""
    os.kill(rt.state(cid).pid, signal.SIGKILL)


@pytest.mark.parametrize("python_supervisor", [False, True])
def test_policy_changed_in_place_reaches_the_running_supervisor(state_root: Path, bundles: Any,
                                                                python_supervisor: bool) -> None:
    from orchestrator.runtime.linux.native import LinuxRuntime
    parent = f"orchestrator-rt-{uuid.uuid4().hex[:10]}"
    with LinuxRuntime(state_root / "upd", cgroup_parent=parent, c_supervisor=not python_supervisor) as rt:
        try:
            start(rt, bundles, "upd", ["sleep", "30"], policy("on-failure"))
            _crash(rt, "upd")                              # on-failure: restarted
            until(lambda: restarts(rt, "upd") == 1 and rt.state("upd").status == Status.RUNNING)
            never = {restart.POLICY: "never"}
            assert rt.update_restart("upd", never) is True
            assert rt.update_restart("upd", never) is False                    # already so
            assert rt.state("upd").annotations[restart.POLICY] == "never"
            _crash(rt, "upd")                              # never now: it stays stopped
            st = rt.wait("upd", timeout=10)
            assert st.status == Status.STOPPED and st.exit_signal == signal.SIGKILL
            time.sleep(0.3)
            assert restarts(rt, "upd") == 1 and rt.state("upd").status == Status.STOPPED
        finally:
            rt.delete("upd", force=True)
            remove_cgroup_parent(parent)


def test_policy_raised_in_place_restarts_what_it_would_not_have(runtime: Any, bundles: Any) -> None:
    # the change must land before the first run ends (the supervisor reads the policy then)
    start(runtime, bundles, "raise", ["sh", "-c", "sleep 2; exit 0"], policy("on-failure"))
    runtime.update_restart("raise", {restart.POLICY: "always", restart.BACKOFF_INITIAL: "0.05"})
    until(lambda: restarts(runtime, "raise") >= 1)           # a clean exit, restarted under always
    assert not (runtime.state_dir / "raise" / statedir.RESTART_ARGS).exists()   # the restarter's now
    assert runtime.state("raise").annotations[restart.POLICY] == "always"       # kept across restarts


def test_adding_a_policy_in_place_is_refused(runtime: Any, bundles: Any) -> None:
    start(runtime, bundles, "none", ["sleep", "30"], None)
    assert runtime.state("none").annotations[restart.RESTARTABLE] == "false"   # what the planner reads
    with pytest.raises(RuntimeFailure, match="without a restart policy"):
        runtime.update_restart("none", {restart.POLICY: "always"})
    assert runtime.update_restart("none", {restart.POLICY: "never"}) is False   # it never restarts
    runtime.delete("none", force=True)


def test_policy_changed_to_never_during_a_backoff_stops_the_restart(runtime: Any, bundles: Any) -> None:
    start(runtime, bundles, "backoff", ["sh", "-c", "exit 1"],
          policy("always", backoff_initial="1.5", backoff_max="2"))
    until(lambda: runtime.state("backoff").annotations.get(restart.RESTARTING) == "true")
    assert runtime.update_restart("backoff", {restart.POLICY: "never"}) is True
    # past the backoff the restarter (a Python process the supervisor execs) declines and says so
    until(lambda: runtime.state("backoff").annotations.get(restart.RESTARTING) == "false", timeout=15)
    st = runtime.state("backoff")
    assert st.status == Status.STOPPED and st.exit_code == 1 and restarts(runtime, "backoff") == 0
    assert st.annotations[restart.RESTARTING] == "false" and st.annotations[restart.POLICY] == "never"


def _restart_keeps_the_network_namespace(rt: Any, bundles: Any, cid: str) -> None:
    """What the network manager put in the namespace at create (here a veth pair made from outside)
    is still there after the supervisor restarted the container in place, twice (the second time
    from a supervisor the restarter exec'd), and no restarted init got a descriptor of ours."""
    start(rt, bundles, cid, ["sleep", "30"], policy("on-failure"))
    first = rt.state(cid).pid
    netns = os.readlink(f"/proc/{first}/ns/net")
    subprocess.run(["nsenter", "-t", str(first), "-n", "ip", "link", "add", "marker0", "type", "veth", "peer",
                    "name", "marker1"], check=True)
    pids = [first]
    for n in (1, 2):
        _crash(rt, cid)
        until(lambda: restarts(rt, cid) >= n and rt.state(cid).status == Status.RUNNING)  # noqa: B023
        pid = rt.state(cid).pid
        assert pid not in pids and os.readlink(f"/proc/{pid}/ns/net") == netns
        links = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "link"], capture_output=True,
                               text=True, check=True).stdout
        assert "marker0" in links
        assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2"]
        pids.append(pid)
    rt.delete(cid, force=True)


def test_a_restart_in_place_keeps_the_network_namespace(runtime: Any, bundles: Any) -> None:
    _restart_keeps_the_network_namespace(runtime, bundles, "netkeep")


def test_the_python_supervisor_keeps_the_network_namespace_too(state_root: Path, bundles: Any) -> None:
    from orchestrator.runtime.linux.native import LinuxRuntime
    parent = f"orchestrator-rt-{uuid.uuid4().hex[:10]}"
    with LinuxRuntime(state_root / "pynet", cgroup_parent=parent, c_supervisor=False) as rt:
        try:
            _restart_keeps_the_network_namespace(rt, bundles, "pynetkeep")
        finally:
            rt.delete("pynetkeep", force=True)
            remove_cgroup_parent(parent)


def test_a_sibling_that_joined_a_network_rejoins_it_after_both_restarted(runtime: Any, bundles: Any) -> None:
    """``network: container:x``: y joined x's namespace by x's pid at create. x restarts in place (a
    new pid, the same namespace, held), then y crashes: y comes back in that same namespace, not in
    a fresh one and not failing on x's old pid."""
    start(runtime, bundles, "x", ["sleep", "30"], policy("on-failure"))
    xpid = runtime.state("x").pid
    netns = os.readlink(f"/proc/{xpid}/ns/net")

    def join_x(spec: dict[str, Any]) -> None:
        policy("on-failure")(spec)
        joined = {"type": "network", "path": f"/proc/{xpid}/ns/net"}
        spec["linux"]["namespaces"] = [joined if n["type"] == "network" else n
                                       for n in spec["linux"]["namespaces"]]

    start(runtime, bundles, "y", ["sleep", "30"], join_x)
    assert os.readlink(f"/proc/{runtime.state('y').pid}/ns/net") == netns
    _crash(runtime, "x")
    until(lambda: restarts(runtime, "x") >= 1 and runtime.state("x").status == Status.RUNNING)
    _crash(runtime, "y")
    until(lambda: restarts(runtime, "y") >= 1 and runtime.state("y").status == Status.RUNNING)
    assert os.readlink(f"/proc/{runtime.state('y').pid}/ns/net") == netns
    for cid in ("y", "x"):
        runtime.delete(cid, force=True)
