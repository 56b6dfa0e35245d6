"""Docker/Podman-format seccomp profiles -> OCI linux.seccomp (pure; no root, no kernel)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ManifestError
from orchestrator.runtime.linux import seccomp
from orchestrator.runtime.linux.capabilities import CAPABILITIES, DOCKER_DEFAULT_14
from orchestrator.runtime.linux.seccomp_profiles import kernel_version, validate

HERE = Path(__file__).parent
MOBY = json.loads((HERE / "moby-default-profile.json").read_text())
PODMAN = Path("/usr/share/containers/seccomp.json")
DEFAULT = set(DOCKER_DEFAULT_14)
ALL = set(CAPABILITIES)


def names_of(oci: dict[str, Any], action: str = "SCMP_ACT_ALLOW", with_args: bool = False) -> set[str]:
    return {n for s in oci["syscalls"] if s["action"] == action and bool(s.get("args")) == with_args
            for n in s["names"]}


def entry(names: list[str], **kw: Any) -> dict[str, Any]:
    return {"names": names, "action": kw.pop("action", "SCMP_ACT_ALLOW"), **kw}


def profile(*calls: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": list(calls), **top}


def test_includes_caps_selects_by_bounding_set() -> None:
    p = profile(entry(["open_by_handle_at"], includes={"caps": ["CAP_DAC_READ_SEARCH"]}),
                entry(["bpf"], includes={"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]}))
    assert names_of(seccomp.profile_to_oci(p, DEFAULT, "amd64")) == set()
    assert names_of(seccomp.profile_to_oci(p, DEFAULT | {"CAP_DAC_READ_SEARCH"}, "amd64")) == \
        {"open_by_handle_at"}
    # every included cap must be held
    assert "bpf" not in names_of(seccomp.profile_to_oci(p, {"CAP_SYS_ADMIN"}, "amd64"))
    assert "bpf" in names_of(seccomp.profile_to_oci(p, {"SYS_ADMIN", "bpf"}, "amd64"))


def test_excludes_caps_drops_entry_when_any_cap_is_held() -> None:
    p = profile(entry(["clone3"], action="SCMP_ACT_ERRNO", errnoRet=38,
                      excludes={"caps": ["CAP_SYS_ADMIN"]}))
    assert names_of(seccomp.profile_to_oci(p, DEFAULT, "amd64"), "SCMP_ACT_ERRNO") == {"clone3"}
    assert seccomp.profile_to_oci(p, DEFAULT, "amd64")["syscalls"][0]["errnoRet"] == 38
    assert seccomp.profile_to_oci(p, DEFAULT | {"CAP_SYS_ADMIN"}, "amd64")["syscalls"] == []


def test_includes_and_excludes_by_arch() -> None:
    p = profile(entry(["arch_prctl"], includes={"arches": ["amd64", "x32"]}),
                entry(["set_tls"], includes={"arches": ["arm", "arm64"]}),
                entry(["clone"], args=[{"index": 0, "value": 1, "op": "SCMP_CMP_MASKED_EQ"}],
                      excludes={"arches": ["s390", "s390x"]}))
    assert names_of(seccomp.profile_to_oci(p, DEFAULT, "amd64")) == {"arch_prctl"}
    assert names_of(seccomp.profile_to_oci(p, DEFAULT, "amd64"), with_args=True) == {"clone"}
    assert names_of(seccomp.profile_to_oci(p, DEFAULT, "arm64")) == {"set_tls"}
    assert names_of(seccomp.profile_to_oci(p, DEFAULT, "s390x"), with_args=True) == set()


def test_min_kernel_includes_and_excludes() -> None:
    p = profile(entry(["ptrace"], includes={"minKernel": "4.8"}),
                entry(["old"], excludes={"minKernel": "5.0"}))
    assert names_of(seccomp.profile_to_oci(p, DEFAULT, "amd64", kernel=(4, 19))) == {"ptrace", "old"}
    assert names_of(seccomp.profile_to_oci(p, DEFAULT, "amd64", kernel=(4, 4))) == {"old"}
    assert names_of(seccomp.profile_to_oci(p, DEFAULT, "amd64", kernel=(6, 1))) == {"ptrace"}
    assert kernel_version("6.18.44-fc-v669") == (6, 18)


def test_arch_map_picks_native_and_sub_arches() -> None:
    amd = seccomp.profile_to_oci(MOBY, DEFAULT, "amd64")
    assert amd["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert seccomp.profile_to_oci(MOBY, DEFAULT, "arm64")["architectures"] == \
        ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    explicit = profile(architectures=["SCMP_ARCH_X86_64"])
    assert seccomp.profile_to_oci(explicit, DEFAULT, "amd64")["architectures"] == ["SCMP_ARCH_X86_64"]
    assert "architectures" not in seccomp.profile_to_oci(profile(), DEFAULT, "amd64")


def test_copies_defaults_errno_args_and_single_name() -> None:
    p = profile({"name": "socket", "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
                 "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"}], "comment": "x"},
                defaultErrnoRet=38, flags=["SECCOMP_FILTER_FLAG_LOG"])
    oci = seccomp.profile_to_oci(p, DEFAULT, "amd64")
    assert oci == {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
                   "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                   "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
                                 "args": [{"index": 0, "value": 16, "valueTwo": 0,
                                           "op": "SCMP_CMP_EQ"}]}]}


@pytest.mark.parametrize(("bad", "where"), [
    ({"syscalls": []}, "$.defaultAction"),
    (profile(entry(["read"], action="SCMP_ACT_MAYBE")), "$.syscalls[0].action"),
    (profile(entry(["read"], args=[{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}])),
     "$.syscalls[0].args[0].index"),
    (profile(entry(["read"], args=[{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}])),
     "$.syscalls[0].args[0].value"),
    (profile(entry(["read"], args=[{"index": 0, "value": 1, "op": "SCMP_CMP_LIKE"}])),
     "$.syscalls[0].args[0].op"),
    (profile({"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}), "$.syscalls[0]"),
    (profile(entry([])), "$.syscalls[0].names"),
    (profile(architectures=["SCMP_ARCH_X86_64"], archMap=MOBY["archMap"]), "$"),
    (profile(architectures=["SCMP_ARCH_Z80"]), "$.architectures[0]"),
    (profile(entry(["read"], includes={"minKernel": "new"})), "$.syscalls[0].includes.minKernel"),
    (profile(entry(["read"], errnoRet="EPERM")), "$.syscalls[0].errnoRet"),
    ([1, 2], "$"),
])
def test_malformed_profiles_name_the_json_path(bad: Any, where: str) -> None:
    with pytest.raises(ManifestError) as info:
        seccomp.profile_to_oci(bad, DEFAULT, "amd64")
    assert where in [p.path for p in info.value.problems]


def test_all_problems_are_reported_at_once() -> None:
    bad = profile(entry(["read"], action="X"), entry(["write"], action="Y"))
    with pytest.raises(ManifestError) as info:
        validate(bad, "mine.json")
    assert [p.path for p in info.value.problems] == ["$.syscalls[0].action", "$.syscalls[1].action"]
    assert str(info.value).startswith("mine.json: $.syscalls[0].action: unknown or missing action")


def test_load_profile_refs(tmp_path: Path) -> None:
    assert seccomp.load_profile("unconfined") is None
    default = seccomp.load_profile("default")
    assert default is not None and default["defaultAction"] == "SCMP_ACT_ERRNO"
    good = tmp_path / "p.json"
    good.write_text(json.dumps(profile(entry(["read"]))))
    assert seccomp.load_profile(str(good)) == profile(entry(["read"]))
    broken = tmp_path / "broken.json"
    broken.write_text('{"defaultAction": "SCMP_ACT_ERRNO",\n "syscalls": [}')
    with pytest.raises(ManifestError, match=r"broken\.json:2:.*not valid JSON"):
        seccomp.load_profile(str(broken))
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps(profile(entry(["read"], action="SCMP_ACT_NOPE"))))
    with pytest.raises(ManifestError, match=r"unknown\.json: \$\.syscalls\[0\]\.action"):
        seccomp.load_profile(str(unknown))
    with pytest.raises(ManifestError, match="cannot read seccomp profile"):
        seccomp.load_profile(str(tmp_path / "missing.json"))


def _allowed(oci: dict[str, Any]) -> dict[str, list[Any]]:
    """syscall -> list of arg-condition lists under which it is allowed ([] = always)."""
    out: dict[str, list[Any]] = {}
    for s in oci["syscalls"]:
        if s["action"] == "SCMP_ACT_ALLOW":
            for n in s["names"]:
                out.setdefault(n, []).append(s.get("args") or [])
    return out


@pytest.mark.parametrize("caps", [DEFAULT, DEFAULT | {"CAP_SYS_ADMIN"}, DEFAULT | {"CAP_SYS_PTRACE"}, ALL])
def test_default_profile_at_least_as_protective_as_dockers(caps: set[str]) -> None:
    ours = seccomp.profile_to_oci(seccomp.default_profile(), caps, "amd64")
    theirs = seccomp.profile_to_oci(MOBY, caps, "amd64")
    assert (ours["defaultAction"], ours["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 1)
    assert ours["architectures"] == theirs["architectures"]
    a, b = _allowed(ours), _allowed(theirs)
    for name, conds in a.items():
        assert name in b, f"{name} allowed by our default but not Docker's"
        if [] not in b[name]:
            assert all(c in b[name] for c in conds), name
    # what ours blocks on top of Docker's
    assert not {"io_uring_setup", "io_uring_enter", "io_uring_register"} & set(a)
    if "CAP_SYS_PTRACE" not in caps:
        assert not {"ptrace", "process_vm_readv", "process_vm_writev"} & set(a)
    # the ERRNO overrides (clone3 -> ENOSYS) are kept
    assert [s for s in ours["syscalls"] if s["action"] != "SCMP_ACT_ALLOW"] == \
        [s for s in theirs["syscalls"] if s["action"] != "SCMP_ACT_ALLOW"]


def test_default_profile_blocks_escape_syscalls_without_caps() -> None:
    allowed = _allowed(seccomp.profile_to_oci(seccomp.default_profile(), DEFAULT, "amd64"))
    for name in ("mount", "umount2", "unshare", "setns", "keyctl", "add_key", "request_key", "ptrace",
                 "open_by_handle_at", "bpf", "init_module", "kexec_load", "reboot", "swapon",
                 "pivot_root", "userfaultfd", "perf_event_open", "clone3"):
        assert name not in allowed, name
    # clone only without namespace flags
    assert allowed["clone"] == [[{"index": 0, "value": 2114060288, "valueTwo": 0,
                                  "op": "SCMP_CMP_MASKED_EQ"}]]


@pytest.mark.skipif(not PODMAN.exists(), reason="containers-common's seccomp.json not installed")
def test_podman_profile_converts_verbatim() -> None:
    pod = json.loads(PODMAN.read_text())
    oci = seccomp.profile_to_oci(pod, DEFAULT, "amd64")
    assert oci["defaultErrnoRet"] == 38
    assert oci["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    errno_names = names_of(oci, "SCMP_ACT_ERRNO") | names_of(oci, "SCMP_ACT_ERRNO", with_args=True)
    assert {"userfaultfd", "kexec_load", "bpf", "open_by_handle_at"} <= errno_names
    # the NETLINK_AUDIT socket is refused (EINVAL) only without CAP_AUDIT_WRITE
    assert "socket" not in errno_names
    no_audit = seccomp.profile_to_oci(pod, DEFAULT - {"CAP_AUDIT_WRITE"}, "amd64")
    assert [s.get("errnoRet") for s in no_audit["syscalls"]
            if s["names"] == ["socket"] and s["action"] == "SCMP_ACT_ERRNO"] == [22]
    full = seccomp.profile_to_oci(pod, ALL, "amd64")
    assert {"bpf", "open_by_handle_at"} <= names_of(full) and "bpf" not in names_of(full, "SCMP_ACT_ERRNO")
    assert pod == json.loads(PODMAN.read_text()), "conversion must not modify its input"
    assert copy.deepcopy(oci) == seccomp.profile_to_oci(pod, DEFAULT, "amd64")
