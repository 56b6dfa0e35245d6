"""Capability list resolution (cap_add / cap_drop) and the security default constants (pure)."""

from __future__ import annotations

import pytest

from orchestrator.runtime.linux import capabilities as caps
from orchestrator.runtime.linux import security_defaults as sd


def test_default_is_dockers_14() -> None:
    assert len(sd.DEFAULT_CAPABILITIES) == 14
    assert caps.resolve() == sorted(sd.DEFAULT_CAPABILITIES, key=caps.CAPABILITIES.__getitem__)
    assert "CAP_SYS_ADMIN" not in caps.resolve() and "CAP_NET_ADMIN" not in caps.resolve()


def test_add_and_drop_accept_short_and_long_names() -> None:
    got = caps.resolve(add=["NET_ADMIN", "cap_sys_ptrace"], drop=["CAP_NET_RAW", "mknod"])
    assert "CAP_NET_ADMIN" in got and "CAP_SYS_PTRACE" in got
    assert "CAP_NET_RAW" not in got and "CAP_MKNOD" not in got
    assert len(got) == 14
    assert got == sorted(got, key=caps.CAPABILITIES.__getitem__)


def test_drop_all_then_add() -> None:
    assert caps.resolve(add=["NET_BIND_SERVICE"], drop=["ALL"]) == ["CAP_NET_BIND_SERVICE"]
    assert caps.resolve(drop=["all"]) == []


def test_add_all_then_drop() -> None:
    got = caps.resolve(add=["ALL"], drop=["SYS_ADMIN"])
    assert "CAP_SYS_ADMIN" not in got
    assert len(got) == caps.last_cap()              # every known cap but one


def test_drop_wins_over_add_and_unknown_names_fail() -> None:
    assert "CAP_SYS_TIME" not in caps.resolve(add=["SYS_TIME"], drop=["SYS_TIME"])
    with pytest.raises(ValueError, match="unknown capability 'FLY'"):
        caps.resolve(add=["FLY"])


def test_masks_and_oci_object() -> None:
    assert caps.to_mask(["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]) == (1 << 0) | (1 << 10)
    assert caps.to_mask(sd.DEFAULT_CAPABILITIES) == 0xA80425FB      # Docker's well-known CapEff
    oci = caps.oci_capabilities(["NET_BIND_SERVICE"])
    assert oci == {"bounding": ["CAP_NET_BIND_SERVICE"], "effective": ["CAP_NET_BIND_SERVICE"],
                   "permitted": ["CAP_NET_BIND_SERVICE"], "inheritable": [], "ambient": []}
    assert caps.oci_capabilities(["KILL"], ambient=True)["ambient"] == ["CAP_KILL"]


@pytest.mark.parametrize(("name", "netns", "uts", "ok"), [
    ("kernel.shmmax", False, False, True),
    ("kernel.msgmnb", False, False, True),
    ("fs.mqueue.msg_max", False, False, True),
    ("net.ipv4.ip_forward", True, False, True),
    ("net.ipv4.ip_forward", False, False, False),
    ("net/ipv4/ip_unprivileged_port_start", True, False, True),
    ("kernel.hostname", False, True, True),
    ("kernel.hostname", False, False, False),
    ("kernel.panic", True, True, False),
    ("vm.overcommit_memory", True, True, False),
    ("kernel.shm", True, True, False),
])
def test_sysctl_allowlist_follows_runc(name: str, netns: bool, uts: bool, ok: bool) -> None:
    assert sd.sysctl_allowed(name, own_netns=netns, own_utsns=uts) is ok


def test_masked_and_readonly_paths() -> None:
    for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/acpi",
              "/proc/scsi", "/sys/firmware"):
        assert p in sd.MASKED_PATHS
    assert set(sd.READONLY_PATHS) == {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                      "/proc/sysrq-trigger"}
    assert sd.DEFAULT_RLIMITS[0].type == "RLIMIT_NOFILE"
