"""Escape syscalls from a default container: all refused, and the same errno table as runc gives.

The probe (``escape_probe syscalls``) calls each syscall with the arguments an attacker would use
(mount a tmpfs or a cgroup v1 hierarchy, new user/mount namespace, setns, keyrings, ptrace a sibling,
open_by_handle_at "shocker", a BPF map, pivot_root, syslog, init_module, reboot, swapon, perf, userfaultfd)
and prints ``name errno``. ``getpid`` is the control that must succeed.
"""

from __future__ import annotations

import copy
import errno
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from escapekit import PROBE, Escape, errnos

from orchestrator.runtime.runc import RuncRuntime

pytestmark = pytest.mark.root

MASKED = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/acpi", "/proc/scsi",
          "/sys/firmware")

REFUSED = ("mount", "mount_cgroup_v1", "mount_remount_proc_sys", "umount2", "unshare_user",
           "unshare_mount", "setns", "keyctl", "add_key", "ptrace_attach", "open_by_handle_at", "bpf",
           "pivot_root", "syslog", "init_module", "reboot", "swapon", "perf_event_open", "userfaultfd")


def test_escape_syscalls_are_refused(esc: Escape, tmp_path: Path) -> None:
    st, out, err = esc.run(tmp_path, esc.config(esc.service([PROBE, "syscalls"])))
    assert st.exit_code == 0, err
    got = errnos(out)
    assert got["getpid"] == 0
    wrong = {name: errno.errorcode.get(got.get(name, -1), got.get(name)) for name in REFUSED
             if got.get(name) != errno.EPERM}
    assert not wrong, f"not refused with EPERM: {wrong}"


def _differential(esc: Escape, tmp_path: Path, config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Run ``config`` under us and under runc (same config.json, the cgroup put under our test parent
    for runc); both stdouts."""
    st, ours, err = esc.run(tmp_path, config)
    assert st.exit_code == 0, err
    config = copy.deepcopy(config)
    config["linux"]["cgroupsPath"] = f"/{esc.cgroup_parent}/runc-{uuid.uuid4().hex[:8]}"
    runc = RuncRuntime(tmp_path / "runc-state")
    _st, theirs, runc_err = esc.run(tmp_path, config, runtime=runc)
    assert theirs, runc_err
    return ours, theirs


def test_errno_table_matches_runc(esc: Escape, tmp_path: Path) -> None:
    """The same config.json (default caps + default seccomp) under runc and under us: same table."""
    ours, theirs = _differential(esc, tmp_path, esc.config(esc.service([PROBE, "syscalls"])))
    assert len(errnos(theirs)) >= 12
    assert errnos(ours) == errnos(theirs)


@pytest.mark.parametrize("probe", ["ident", "procfs", "mknod", "chroot", "rofs"])
def test_escape_probes_see_what_runc_shows(esc: Escape, tmp_path: Path, probe: str) -> None:
    """Every other probe, same config.json under both runtimes: the container sees the same thing."""
    dev = os.stat("/").st_dev
    args = {"ident": [], "procfs": list(MASKED), "mknod": [str(os.major(dev)), str(os.minor(dev))],
            "chroot": [str(esc.host_marker)], "rofs": []}[probe]
    security = {"readOnlyRootfs": True} if probe == "rofs" else {}
    ours, theirs = _differential(esc, tmp_path, esc.config(esc.service([PROBE, probe, *args],
                                                                       security=security)))
    # by design our /sys/fs/cgroup is the cgroup2 view (runc on this v1 host: a tmpfs of v1 hierarchies)
    def same(lines: list[str]) -> list[str]:
        return [ln for ln in lines if "/sys/fs/cgroup" not in ln]
    assert same(ours) == same(theirs)
