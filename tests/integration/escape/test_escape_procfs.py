"""/proc and /sys from a default container: read-only knobs, masked paths, exact capability sets and
seccomp mode, no cgroup v1 hierarchy to plant a release_agent in, host processes out of reach."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from escapekit import PROBE, Escape, parse

from orchestrator.runtime.linux import capabilities
from orchestrator.runtime.linux.security_defaults import DEFAULT_CAPABILITIES

pytestmark = pytest.mark.root

MASKED = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/acpi", "/proc/scsi",
          "/sys/firmware")


KNOBS = ("/proc/sys/vm/swappiness", "/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger",
         "/proc/sys/kernel/modprobe", "/proc/irq/default_smp_affinity", "/sys/kernel/uevent_helper",
         "/sys/power/state", "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/fs/cgroup/cgroup.procs")


def test_proc_sys_and_sysrq_trigger_are_read_only(esc: Escape, tmp_path: Path) -> None:
    st, out, err = esc.run(tmp_path, esc.config(esc.service([PROBE, "procfs"])))
    assert st.exit_code == 0, err
    got = {k.removeprefix("write "): int(v) for k, _, v in (ln.rpartition(" ") for ln in out)
           if k.startswith("write ")}
    assert set(got) == set(KNOBS)
    # this host's kernel may lack some (no sysrq, no modules): absent there, absent here. The container's
    # /sys/fs/cgroup is its own cgroup2 view, read-only: EROFS if it is mounted at all
    expected = {p: errno.EROFS if os.path.exists(p) else errno.ENOENT for p in got}
    if got["/sys/fs/cgroup/cgroup.procs"] == errno.EROFS:
        expected["/sys/fs/cgroup/cgroup.procs"] = errno.EROFS
    assert got == expected
    assert list(expected.values()).count(errno.EROFS) >= 5


def test_masked_paths_are_empty(esc: Escape, tmp_path: Path) -> None:
    st, out, err = esc.run(tmp_path, esc.config(esc.service([PROBE, "procfs", *MASKED])))
    assert st.exit_code == 0, err
    got = {k.removeprefix("masked "): v for k, _, v in (ln.rpartition(" ") for ln in out)
           if k.startswith("masked ")}
    assert set(got) == set(MASKED)
    for path, value in got.items():
        on_host = os.path.exists(path)
        if on_host:
            assert value == "0", f"{path} is readable in the container ({value} bytes/entries)"
        else:           # absent on this kernel: absent (or empty) in the container too
            assert value in ("missing", "0"), (path, value)
    assert any(os.path.exists(p) for p in MASKED)     # at least something was really masked here


def test_no_cgroup_v1_hierarchy_or_release_agent_reachable(esc: Escape, tmp_path: Path) -> None:
    """The release_agent escape needs a writable cgroup v1 hierarchy: mounting one is refused (see the
    syscall table) and none is visible, writable or not."""
    script = ("grep -c ' cgroup ' /proc/self/mounts; find / -xdev -name release_agent 2>/dev/null | wc -l;"
              " find /sys -name release_agent 2>/dev/null | wc -l; mkdir -p /tmp/cg;"
              " mount -t cgroup -o memory cgroup /tmp/cg 2>/dev/null; echo mount=$?")
    st, out, err = esc.run(tmp_path, esc.config(esc.service(["sh", "-c", script])))
    assert st.exit_code == 0, err
    assert out[:3] == ["0", "0", "0"], out
    assert out[3] != "mount=0", out


def test_proc_self_status_shows_configured_caps_nnp_and_seccomp(esc: Escape, tmp_path: Path) -> None:
    config = esc.config(esc.service([PROBE, "ident"]))
    caps = config["process"]["capabilities"]
    assert sorted(caps["bounding"]) == sorted(DEFAULT_CAPABILITIES)
    st, out, err = esc.run(tmp_path, config)
    assert st.exit_code == 0, err
    got = {k.rstrip(":"): v.strip() for k, v in parse([ln.replace("\t", " ") for ln in out]).items()}
    mask = {name: capabilities.to_mask(caps.get(name, [])) for name in
            ("effective", "permitted", "bounding", "inheritable", "ambient")}
    assert int(got["CapEff"], 16) == mask["effective"] == capabilities.to_mask(DEFAULT_CAPABILITIES)
    assert int(got["CapPrm"], 16) == mask["permitted"]
    assert int(got["CapBnd"], 16) == mask["bounding"]
    assert int(got["CapInh"], 16) == mask["inheritable"] == 0
    assert int(got["CapAmb"], 16) == mask["ambient"] == 0
    assert got["NoNewPrivs"] == "1"
    assert got["Seccomp"] == "2"
    assert got["uids"] == "0 0 0"


def test_host_processes_are_invisible_and_unreachable(esc: Escape, tmp_path: Path) -> None:
    host_pids = [str(os.getpid()), "1", str(os.getppid())]
    st, out, err = esc.run(tmp_path, esc.config(esc.service(
        ["sh", "-c", f"ls /proc | grep -c '^[0-9]'; {PROBE} pids {' '.join(host_pids)}"])))
    assert st.exit_code == 0, err
    assert int(out[0]) <= 3                      # sh, ls, grep
    kills = {k: int(v) for k, _, v in (ln.rpartition(" ") for ln in out[1:])}
    assert kills[f"kill {os.getpid()}"] == errno.ESRCH
    assert kills[f"kill {os.getppid()}"] == errno.ESRCH
    assert kills["kill 1"] == 0                  # its own pid 1 (the shell), not the host's init


def test_every_configured_namespace_differs_from_the_host(esc: Escape, tmp_path: Path) -> None:
    config = esc.config(esc.service(["sh", "-c", "for n in mnt pid net ipc uts cgroup user; do "
                                     "echo $n $(readlink /proc/self/ns/$n); done"]))
    kinds = {ns["type"] for ns in config["linux"]["namespaces"]}
    assert {"mount", "pid", "network", "ipc", "uts"} <= kinds
    st, out, err = esc.run(tmp_path, config)
    assert st.exit_code == 0, err
    inside = parse(out)
    oci = {"mnt": "mount", "pid": "pid", "net": "network", "ipc": "ipc", "uts": "uts", "cgroup": "cgroup",
           "user": "user"}
    for short, kind in oci.items():
        host = os.readlink(f"/proc/self/ns/{short}")
        if kind in kinds:
            assert inside[short] != host, f"{short} namespace is the host's"
        else:
            assert inside[short] == host, f"{short}: not configured, yet private"


def test_exec_process_gets_the_same_confinement(esc: Escape, tmp_path: Path) -> None:
    config = esc.config(esc.service(["sleep", "60"]))
    cid = esc.create(tmp_path, config)
    esc.runtime.start(cid)
    res = esc.runtime.exec(cid, [PROBE, "ident"])
    assert res.exit_code == 0, res.stderr
    got = {k.rstrip(":"): v.strip()
           for k, v in parse([ln.replace("\t", " ") for ln in res.stdout.decode().splitlines()]).items()}
    caps = config["process"]["capabilities"]
    assert int(got["CapEff"], 16) == capabilities.to_mask(caps["effective"])
    assert int(got["CapBnd"], 16) == capabilities.to_mask(caps["bounding"])
    assert int(got["CapInh"], 16) == int(got["CapAmb"], 16) == 0
    assert got["NoNewPrivs"] == "1" and got["Seccomp"] == "2"
    res = esc.runtime.exec(cid, [PROBE, "syscalls"])
    table = {k: int(v) for k, v in parse(res.stdout.decode().splitlines()).items()}
    assert {k for k, v in table.items() if v != errno.EPERM} == {"getpid"}, table
    res = esc.runtime.exec(cid, [PROBE, "procfs", *MASKED])
    assert all(line.endswith((" 0", " missing", f" {errno.EROFS}", f" {errno.ENOENT}"))
               for line in res.stdout.decode().splitlines()), res.stdout


def test_image_with_proc_as_a_symlink_still_gets_masked_and_read_only_proc(
        esc: Escape, tmp_path: Path) -> None:
    """An image whose /proc (and /sys) is a symlink elsewhere (the runc CVE-2019-16884/19921 family):
    procfs lands where the symlink points inside the root, and the masks and read-only binds follow it."""
    top = tmp_path / "image-top"
    top.mkdir()
    os.symlink("/fakeproc", top / "proc")
    os.symlink("fakesys", top / "sys")
    masked = [*MASKED, *(p.replace("/proc/", "/fakeproc/", 1) for p in MASKED if p.startswith("/proc/"))]
    script = f"readlink /proc; test -e /fakeproc/self/status && echo procfs-there; exec {PROBE} procfs " + \
        " ".join(masked)
    st, out, err = esc.run(tmp_path, esc.config(esc.service(["sh", "-c", script])), top=top)
    assert st.exit_code == 0, err
    assert out[:2] == ["/fakeproc", "procfs-there"], out
    for line in out[2:]:
        key, _, value = line.rpartition(" ")
        path = key.split(" ", 1)[1]
        host_path = path.replace("/fakeproc/", "/proc/", 1)
        if key.startswith("write "):
            assert int(value) == (errno.EROFS if os.path.exists(path) else errno.ENOENT) or \
                path.startswith("/sys/fs/cgroup"), line
        elif os.path.exists(host_path):
            assert value == "0", line


def test_cgroup_view_is_rooted_at_the_container(esc: Escape, tmp_path: Path) -> None:
    """With the cgroup namespace the container sees its own cgroup as "/" in every hierarchy, and the
    cgroupfs it has (read-only) holds nothing of the host's tree."""
    script = ("cat /proc/self/cgroup; echo ---; ls /sys/fs/cgroup | grep -v '^cgroup\\.\\|\\.' | wc -l;"
              " grep ' /sys/fs/cgroup ' /proc/self/mounts")
    st, out, err = esc.run(tmp_path, esc.config(esc.service(["sh", "-c", script])))
    assert st.exit_code == 0, err
    sep = out.index("---")
    assert out[:sep] and all(line.rsplit(":", 1)[1] == "/" for line in out[:sep]), out[:sep]
    assert out[sep + 1] == "0", out                  # no child cgroups: no host tree above or beside it
    for line in out[sep + 2:]:
        assert "ro" in line.split()[3].split(","), line
