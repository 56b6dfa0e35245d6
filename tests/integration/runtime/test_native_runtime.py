"""The native runtime on the real kernel: isolation, lifecycle, exec, logs, supervision, cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ContainerNotFound, RuntimeFailure
from orchestrator.runtime.base import Mount, Status
from orchestrator.runtime.linux import statedir

pytestmark = pytest.mark.root


def run(rt: Any, bundles: Any, cid: str, args: list[str], edit: Any = None) -> Any:
    bundle, rootfs = bundles.make(args, edit)
    rt.create(cid, bundle, rootfs)
    rt.start(cid)
    return rt.wait(cid, timeout=10)


def out(rt: Any, cid: str, stream: str = "stdout") -> list[str]:
    return [line.text for line in rt.logs(cid) if line.stream == stream]


def mount_points(under: Path) -> list[str]:
    """Host mount points that involve ``under`` (other tests on this host may mount elsewhere)."""
    with open("/proc/self/mountinfo") as f:
        return sorted(line.strip() for line in f if str(under) in line or " overlay " in line)


def test_pid1_hostname_and_host_processes_invisible(runtime: Any, bundles: Any) -> None:
    st = run(runtime, bundles, "iso", ["sh", "-c", "echo $$; hostname; ls /proc | grep -c '^[0-9]'"])
    assert st.status == Status.STOPPED and st.exit_code == 0
    pid, hostname, nprocs = out(runtime, "iso")
    assert pid == "1"
    assert hostname == "ctr" and os.uname().nodename != "ctr"
    assert int(nprocs) <= 3          # sh, ls, grep: nothing of the host


def test_host_mount_table_unchanged(runtime: Any, bundles: Any, tmp_path: Path) -> None:
    before = mount_points(tmp_path)
    bundle, rootfs = bundles.make(["sleep", "30"])
    runtime.create("mnt", bundle, rootfs)
    runtime.start("mnt")
    assert mount_points(tmp_path) == before
    inside = runtime.exec("mnt", ["cat", "/proc/self/mounts"]).stdout.decode()
    assert " / overlay " in inside and " /proc proc " in inside and " /dev/pts devpts " in inside
    runtime.delete("mnt", force=True)
    assert mount_points(tmp_path) == before


def test_exit_code_signal_and_kill(runtime: Any, bundles: Any) -> None:
    assert run(runtime, bundles, "code", ["sh", "-c", "exit 7"]).exit_code == 7
    bundle, rootfs = bundles.make(["sleep", "30"])
    runtime.create("sig", bundle, rootfs)
    assert runtime.state("sig").status == Status.CREATED
    runtime.start("sig")
    assert runtime.state("sig").status == Status.RUNNING
    runtime.kill("sig", signal.SIGKILL)
    st = runtime.wait("sig", timeout=10)
    assert st.status == Status.STOPPED and st.exit_signal == signal.SIGKILL and st.exit_code == 137
    assert st.finished_at >= st.started_at > 0


def test_logs_capture_both_streams_with_since(runtime: Any, bundles: Any) -> None:
    run(runtime, bundles, "logs", ["sh", "-c", "echo out1; echo err1 >&2; sleep 0.2; echo out2"])
    assert out(runtime, "logs") == ["out1", "out2"]
    assert out(runtime, "logs", "stderr") == ["err1"]
    lines = list(runtime.logs("logs"))
    later = [line.text for line in runtime.logs("logs", since=lines[-1].time)]
    assert later == ["out2"]
    assert [line.text for line in runtime.logs("logs", follow=True)] == [line.text for line in lines]


def test_exec_joins_the_container(runtime: Any, bundles: Any) -> None:
    bundle, rootfs = bundles.make(["sleep", "30"])
    runtime.create("ex", bundle, rootfs)
    runtime.start("ex")
    res = runtime.exec("ex", ["sh", "-c", "hostname; tr '\\0' ' ' </proc/1/cmdline; echo; echo $FOO; pwd; "
                                           "grep CapEff /proc/self/status; exit 3"],
                       env=["FOO=bar"], cwd="/tmp")
    assert res.exit_code == 3
    lines = res.stdout.decode().splitlines()
    assert lines[:4] == ["ctr", "sleep 30 ", "bar", "/tmp"]
    init_caps = runtime.exec("ex", ["grep", "CapEff", "/proc/1/status"]).stdout.decode().split()[1]
    assert lines[4].split()[1] == init_caps
    with open(f"/proc/{runtime.state('ex').pid}/cgroup") as f:
        init_cgroups = f.read()
    res = runtime.exec("ex", ["cat", "/proc/self/cgroup"])
    assert res.exit_code == 0 and res.stdout.decode().strip()        # cgroup namespace: paths are "/"
    assert f"{runtime.test_cgroup_parent}/ex" in init_cgroups
    with pytest.raises(RuntimeFailure, match="execve"):
        runtime.exec("ex", ["/no/such/binary"])
    runtime.delete("ex", force=True)


def test_delete_leaves_nothing(runtime: Any, bundles: Any, state_root: Path) -> None:
    bundle, rootfs = bundles.make(["sleep", "30"])
    st = runtime.create("gone", bundle, rootfs)
    runtime.start("gone")
    rec = statedir.read_json(state_root / "containers" / "gone" / statedir.STATE)
    assert rec is not None
    with pytest.raises(RuntimeFailure):
        runtime.delete("gone")                # running: refused without force
    runtime.delete("gone", force=True)
    runtime.delete("gone", force=True)        # idempotent
    assert not statedir.alive(st.pid, st.pid_start_time)
    assert not statedir.alive(rec["monitor_pid"], rec["monitor_start_time"])
    assert not (state_root / "containers" / "gone").exists()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{runtime.test_cgroup_parent}/gone"))
    with pytest.raises(ContainerNotFound):
        runtime.state("gone")


def test_failed_init_step_is_reported_and_undone(runtime: Any, bundles: Any, state_root: Path) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["mounts"].append({"destination": "/data", "type": "bind", "source": "/no/such/dir",
                               "options": ["rbind"]})
    bundle, rootfs = bundles.make(["touch", "/ran"], edit)
    with pytest.raises(RuntimeFailure) as err:
        runtime.create("bad", bundle, rootfs)
    assert "mount /data" in str(err.value) and "/no/such/dir" in str(err.value)
    assert not (state_root / "containers" / "bad").exists()
    assert not (bundle / "upper" / "ran").exists()


def test_cgroup_limits_the_kernel_refuses_fail_create_and_leave_nothing(runtime: Any, bundles: Any,
                                                                        state_root: Path) -> None:
    """A limit the kernel refuses (a CPU this host does not have) is a RuntimeFailure naming the
    file; nothing is left (no cgroup, no state dir, nothing ran) and the next create works."""
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["resources"] = {"cpu": {"cpus": "4095"}}
    bundle, rootfs = bundles.make(["touch", "/ran"], edit)
    with pytest.raises(RuntimeFailure) as err:
        runtime.create("nocpu", bundle, rootfs)
    assert err.value.path.endswith("cpuset.cpus") and err.value.errno != 0
    assert not (state_root / "containers" / "nocpu").exists()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{runtime.test_cgroup_parent}/nocpu"))
    assert not (bundle / "upper" / "ran").exists()
    bundle2, rootfs2 = bundles.make(["true"])                  # the next create is not disturbed
    runtime.create("fine", bundle2, rootfs2)
    runtime.start("fine")
    assert runtime.wait("fine", timeout=10).exit_code == 0


def test_symlinked_bind_destination_stays_in_root(runtime: Any, bundles: Any, tmp_path: Path) -> None:
    host_dir = tmp_path / "host-target"
    host_dir.mkdir()
    src = tmp_path / "vol"
    src.mkdir()
    (src / "marker").write_text("volume")
    evil_layer = tmp_path / "evil-layer"
    evil_layer.mkdir()
    os.symlink(str(host_dir), evil_layer / "evil")          # absolute: would point at the host dir

    def edit(spec: dict[str, Any]) -> None:
        spec["mounts"].append({"destination": "/evil/x", "type": "bind", "source": str(src),
                               "options": ["rbind", "ro"]})
    bundle, rootfs = bundles.make(["cat", f"{host_dir}/x/marker"], edit)
    lower = rootfs[0].options[0].removeprefix("lowerdir=")
    overlay = Mount("overlay", "overlay", "", (f"lowerdir={evil_layer}:{lower}", *rootfs[0].options[1:]))
    runtime.create("evil", bundle, [overlay])
    runtime.start("evil")
    assert runtime.wait("evil", timeout=10).exit_code == 0
    assert out(runtime, "evil") == ["volume"]              # mounted at the symlink's target *inside*
    assert list(host_dir.iterdir()) == []                  # and nothing on the host


def no_mkdir(spec: dict[str, Any]) -> None:
    spec["root"]["readonly"] = True
    spec["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                              "errnoRet": 38}]}


def test_exec_gets_the_same_seccomp_filter(runtime: Any, bundles: Any) -> None:
    bundle, rootfs = bundles.make(["sleep", "30"], no_mkdir)
    runtime.create("exsec", bundle, rootfs)
    runtime.start("exsec")
    probe = "mkdir /tmp/x 2>&1; grep -E 'NoNewPrivs|Seccomp:' /proc/self/status"
    res = runtime.exec("exsec", ["sh", "-c", probe])
    text = res.stdout.decode()
    assert "Function not implemented" in text and "Seccomp:\t2" in text and "NoNewPrivs:\t1" in text
    runtime.delete("exsec", force=True)


def test_readonly_rootfs_seccomp_and_capabilities(runtime: Any, bundles: Any) -> None:
    edit = no_mkdir
    st = run(runtime, bundles, "sec", ["sh", "-c", "touch /x 2>&1; mkdir /tmp/d 2>&1; "
                                                   "grep -E 'CapEff|NoNewPrivs|Seccomp:' /proc/self/status"],
             edit)
    assert st.exit_code == 0
    text = "\n".join(out(runtime, "sec"))
    assert "Read-only file system" in text
    assert "Function not implemented" in text
    assert "CapEff:\t0000000020000420" in text           # AUDIT_WRITE, KILL, NET_BIND_SERVICE
    assert "NoNewPrivs:\t1" in text and "Seccomp:\t2" in text


def test_user_namespace_with_maps(runtime: Any, bundles: Any) -> None:
    # container root is host root here: this host's "/" has mode 000, so any other host uid could not
    # even reach the bundle; every other container uid is mapped to an unprivileged host range
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["namespaces"].append({"type": "user"})
        spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1},
                                        {"containerID": 1, "hostID": 200001, "size": 65535}]
        spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1},
                                        {"containerID": 1, "hostID": 200001, "size": 65535}]
    bundle, rootfs = bundles.make(["sh", "-c", "id -u; cat /proc/self/uid_map; readlink /proc/self/ns/user; "
                                               "ls -l /dev/null"], edit)
    runtime.create("userns", bundle, rootfs)
    runtime.start("userns")
    assert runtime.wait("userns", timeout=10).exit_code == 0
    lines = out(runtime, "userns")
    assert lines[0] == "0"
    assert [line.split() for line in lines[1:3]] == [["0", "0", "1"], ["1", "200001", "65535"]]
    assert lines[3] != os.readlink("/proc/self/ns/user")
    assert lines[4].startswith("crw-rw-rw-")            # bind-mounted from the host: no mknod in a userns


def test_join_network_namespace_of_another_container(runtime: Any, bundles: Any) -> None:
    bundle, rootfs = bundles.make(["sleep", "30"])
    first = runtime.create("net-a", bundle, rootfs)
    runtime.start("net-a")

    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["namespaces"] = [ns if ns["type"] != "network" else
                                       {"type": "network", "path": f"/proc/{first.pid}/ns/net"}
                                       for ns in spec["linux"]["namespaces"]]
    run(runtime, bundles, "net-b", ["readlink", "/proc/self/ns/net"], edit)
    assert out(runtime, "net-b") == [os.readlink(f"/proc/{first.pid}/ns/net")]
    runtime.delete("net-a", force=True)


SURVIVOR = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from orchestrator.runtime.base import Mount
    from orchestrator.runtime.linux.native import LinuxRuntime
    state, bundle, opts, mode, parent = sys.argv[1], sys.argv[2], sys.argv[3].split("|"), *sys.argv[4:]
    rt = LinuxRuntime(Path(state), cgroup_parent=parent)
    rt.create("survivor", Path(bundle), [Mount("overlay", "overlay", "", tuple(opts))])
    rt.start("survivor")
    print("started", flush=True)
    if mode == "hang":
        time.sleep(60)
""")


@pytest.mark.parametrize("mode", ["exit", "hang"])
def test_container_survives_its_creator(runtime: Any, bundles: Any, state_root: Path, mode: str) -> None:
    bundle, rootfs = bundles.make(["sh", "-c", "sleep 30"])
    proc = subprocess.Popen([sys.executable, "-c", SURVIVOR, str(state_root / "containers"), str(bundle),
                             "|".join(rootfs[0].options), mode, runtime.test_cgroup_parent],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    if mode == "hang":
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    st = runtime.state("survivor")
    assert st.status == Status.RUNNING
    assert runtime.exec("survivor", ["true"]).exit_code == 0
    runtime.kill("survivor", signal.SIGKILL)
    st = runtime.wait("survivor", timeout=10)
    assert st.exit_signal == signal.SIGKILL                # the monitor, not the dead creator, recorded it


def test_oom_kill_is_recorded(runtime: Any, bundles: Any) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["resources"] = {"memory": {"limit": 32 << 20, "swap": 32 << 20}}
    # a shell variable that keeps growing: the kernel's OOM killer must end it inside the cgroup
    st = run(runtime, bundles, "oom", ["sh", "-c", "x=a; while true; do x=$x$x; done"], edit)
    assert st.status == Status.STOPPED
    assert st.oom_killed and st.exit_signal == signal.SIGKILL


def test_python_supervisor_fallback(state_root: Path, bundles: Any) -> None:
    from orchestrator.runtime.linux.native import LinuxRuntime
    with LinuxRuntime(state_root / "py", cgroup_parent="orchestrator-rt-py", c_supervisor=False) as rt:
        try:
            bundle, rootfs = bundles.make(["sh", "-c", "echo a; echo b >&2; exec sleep 30"])
            rt.create("py", bundle, rootfs)
            rt.start("py")
            rec = statedir.read_json(state_root / "py" / "py" / statedir.STATE)
            assert rec is not None
            with open(f"/proc/{rec['monitor_pid']}/comm") as f:
                assert f.read().strip() == "orch-monitor"       # still the Python monitor
            deadline = time.monotonic() + 5
            while len(list(rt.logs("py"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            rt.kill("py", signal.SIGKILL)
            st = rt.wait("py", timeout=10)
            assert st.exit_signal == signal.SIGKILL and st.exit_code == 137
            assert [(line.stream, line.text) for line in rt.logs("py")] == [("stdout", "a"), ("stderr", "b")]
        finally:
            rt.delete("py", force=True)
            for hierarchy in Path("/sys/fs/cgroup").iterdir():
                if (hierarchy / "orchestrator-rt-py").is_dir():
                    (hierarchy / "orchestrator-rt-py").rmdir()


def test_missing_executable_fails_create(runtime: Any, bundles: Any, state_root: Path) -> None:
    bundle, rootfs = bundles.make(["no-such-command", "x"])
    with pytest.raises(RuntimeFailure, match=r"no-such-command.*not found"):
        runtime.create("noexe", bundle, rootfs)
    assert not (state_root / "containers" / "noexe").exists()


def test_relative_lowerdir_with_mount_cwd(runtime: Any, bundles: Any, busybox_rootfs: Path) -> None:
    bundle, rootfs = bundles.make(["cat", "/etc/passwd"])
    opts = (f"lowerdir={busybox_rootfs.name}", *rootfs[0].options[1:])
    runtime.create("cwd", bundle, [Mount("overlay", "overlay", "", opts, cwd=str(busybox_rootfs.parent))])
    runtime.start("cwd")
    assert runtime.wait("cwd", timeout=10).exit_code == 0
    assert out(runtime, "cwd")[0].startswith("root:x:0:0")


def test_log_is_size_capped(state_root: Path, bundles: Any) -> None:
    from orchestrator.runtime.linux.native import LinuxRuntime
    with LinuxRuntime(state_root / "cap", cgroup_parent="orchestrator-rt-cap", log_max_bytes=4096) as rt:
        try:
            loop = "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done"
            run(rt, bundles, "cap", ["sh", "-c", loop])
            cdir = state_root / "cap" / "cap"
            assert (cdir / "container.log").stat().st_size <= 4096
            assert (cdir / "container.log.1").stat().st_size <= 4096
            texts = [line.text for line in rt.logs("cap")]
            assert texts[-1] == "line 299" and "line 0" not in texts
            assert texts == [f"line {i}" for i in range(300 - len(texts), 300)]
        finally:
            rt.delete("cap", force=True)
            for hierarchy in Path("/sys/fs/cgroup").iterdir():
                if (hierarchy / "orchestrator-rt-cap").is_dir():
                    (hierarchy / "orchestrator-rt-cap").rmdir()
