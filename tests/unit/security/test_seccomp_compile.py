"""OCI linux.seccomp -> BPF with libseccomp, checked by running the program in a small classic-BPF
interpreter (no kernel, no root): what the kernel would return for a given arch, syscall and args."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.linux import seccomp
from orchestrator.runtime.linux.capabilities import DOCKER_DEFAULT_14

X86_64, I386 = 0xC000003E, 0x40000003
X32_BIT = 0x40000000
ALLOW, KILL_PROCESS, TRAP, LOG = 0x7FFF0000, 0x80000000, 0x00030000, 0x7FFC0000
NR = {"read": 0, "write": 1, "mount": 165, "getpid": 39, "personality": 135, "socket": 41,
      "keyctl": 250, "clone3": 435, "fchmodat2": 452, "ptrace": 101}
NR_I386 = {"mount": 21, "getpid": 20}


def errno_(e: int) -> int:
    return 0x00050000 | e


def run_bpf(prog: bytes, nr: int, arch: int = X86_64, args: tuple[int, ...] = ()) -> int:
    """Evaluate a seccomp classic-BPF program on one seccomp_data; returns the action value."""
    full = (*args, *([0] * (6 - len(args))))
    data = struct.pack("<iIQ6Q", nr, arch, 0, *full)
    insns = [struct.unpack("<HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    a = x = 0
    mem = [0] * 16
    pc = 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:                     # ld [k]
            a = struct.unpack_from("<I", data, k)[0]
        elif code == 0x00:                   # ld #k
            a = k
        elif code == 0x60:                   # ld M[k]
            a = mem[k]
        elif code == 0x02:                   # st M[k]
            mem[k] = a
        elif code == 0x54:                   # and #k
            a &= k
        elif code == 0x07:                   # tax
            x = a
        elif code == 0x87:                   # txa
            a = x
        elif code == 0x05:                   # ja k
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):
            cond = {0x15: a == k, 0x25: a > k, 0x35: a >= k, 0x45: bool(a & k)}[code]
            pc += jt if cond else jf
        elif code == 0x06:                   # ret #k
            return int(k)
        else:
            raise AssertionError(f"opcode {code:#x} not handled by the test interpreter")


def compile_profile(profile: dict[str, Any], caps: set[str] | None = None) -> bytes:
    return seccomp.compile_oci(seccomp.profile_to_oci(profile, caps or set(DOCKER_DEFAULT_14), "amd64"))


def test_default_profile_decisions() -> None:
    prog = compile_profile(seccomp.default_profile())
    assert run_bpf(prog, NR["read"]) == ALLOW
    assert run_bpf(prog, NR["mount"]) == errno_(1)
    assert run_bpf(prog, NR["keyctl"]) == errno_(1)
    assert run_bpf(prog, NR["ptrace"]) == errno_(1)
    assert run_bpf(prog, NR["clone3"]) == errno_(38)
    # personality: only the listed persona values
    assert run_bpf(prog, NR["personality"], args=(0xFFFFFFFF,)) == ALLOW
    assert run_bpf(prog, NR["personality"], args=(0x0040000,)) == errno_(1)
    # socket: anything but AF_VSOCK (40)
    assert run_bpf(prog, NR["socket"], args=(2, 1, 0)) == ALLOW
    assert run_bpf(prog, NR["socket"], args=(40, 1, 0)) == errno_(1)
    # i386 ABI is filtered too, with its own numbers
    assert run_bpf(prog, NR_I386["getpid"], arch=I386) == ALLOW
    assert run_bpf(prog, NR_I386["mount"], arch=I386) == errno_(1)
    # x32 ABI: same audit arch, bit 30 set
    assert run_bpf(prog, X32_BIT | NR["read"]) == ALLOW
    assert run_bpf(prog, X32_BIT | NR["mount"]) == errno_(1)
    assert run_bpf(prog, X32_BIT | 999) == errno_(38)          # x32 has its own ENOSYS bound


def test_syscalls_newer_than_the_profile_get_enosys_like_runc() -> None:
    prog = compile_profile(seccomp.default_profile())
    assert run_bpf(prog, NR["fchmodat2"]) == errno_(38)
    assert run_bpf(prog, 999) == errno_(38)
    assert run_bpf(prog, 999, arch=I386) == errno_(38)
    # an allow-by-default profile has no stub: unknown numbers are allowed
    allow = seccomp.compile_oci({"defaultAction": "SCMP_ACT_ALLOW",
                                 "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]})
    assert run_bpf(allow, 999) == ALLOW and run_bpf(allow, NR["mount"]) == errno_(1)


def test_unknown_names_are_skipped_not_fatal() -> None:
    base = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}
    with_unknown = json.loads(json.dumps(base))
    with_unknown["syscalls"][0]["names"] += ["no_such_syscall_2099"]
    assert seccomp.compile_oci(with_unknown) == seccomp.compile_oci(base)


@pytest.mark.parametrize(("action", "expected"), [
    ({"action": "SCMP_ACT_ERRNO", "errnoRet": 13}, errno_(13)),
    ({"action": "SCMP_ACT_ERRNO"}, errno_(1)),
    ({"action": "SCMP_ACT_KILL"}, 0),
    ({"action": "SCMP_ACT_KILL_THREAD"}, 0),
    ({"action": "SCMP_ACT_KILL_PROCESS"}, KILL_PROCESS),
    ({"action": "SCMP_ACT_TRAP"}, TRAP),
    ({"action": "SCMP_ACT_TRACE", "errnoRet": 7}, 0x7FF00007),
    ({"action": "SCMP_ACT_LOG"}, LOG),
])
def test_actions(action: dict[str, Any], expected: int) -> None:
    prog = seccomp.compile_oci({"defaultAction": "SCMP_ACT_ALLOW",
                                "syscalls": [{"names": ["getpid"], **action}]})
    assert run_bpf(prog, NR["getpid"]) == expected
    assert run_bpf(prog, NR["read"]) == ALLOW


def test_notify_and_unknown_actions_are_refused() -> None:
    with pytest.raises(RuntimeFailure, match="NOTIFY"):
        seccomp.compile_oci({"defaultAction": "SCMP_ACT_ALLOW",
                             "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_NOTIFY"}]})
    with pytest.raises(RuntimeFailure, match="default action"):
        seccomp.compile_oci({"defaultAction": "SCMP_ACT_NOPE"})


def test_arg_conditions_and_same_index_conditions_are_ored() -> None:
    # two conditions on different args: ANDed
    anded = seccomp.compile_oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
         "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"},
                  {"index": 2, "value": 9, "op": "SCMP_CMP_EQ"}]}]})
    assert run_bpf(anded, NR["socket"], args=(16, 3, 9)) == errno_(22)
    assert run_bpf(anded, NR["socket"], args=(16, 3, 0)) == ALLOW
    # two conditions on the same arg: separate rules, as runc does
    ored = seccomp.compile_oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}]})
    assert [run_bpf(ored, NR["personality"], args=(v,)) for v in (1, 2, 3)] == [errno_(1), errno_(1), ALLOW]
    # masked equality and 64-bit values
    masked = seccomp.compile_oci({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["write"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 1, "value": 0xF0, "valueTwo": 0x10, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["read"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 1 << 40, "op": "SCMP_CMP_GE"}]}]})
    assert run_bpf(masked, NR["write"], args=(0, 0x1F)) == ALLOW
    assert run_bpf(masked, NR["write"], args=(0, 0x2F)) == errno_(1)
    assert run_bpf(masked, NR["read"], args=(1 << 41,)) == ALLOW
    assert run_bpf(masked, NR["read"], args=((1 << 40) - 1,)) == errno_(1)


def test_architectures_and_cache() -> None:
    one = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
           "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]}
    three = dict(one, architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    p1, p3 = seccomp.compile_oci(one), seccomp.compile_oci(three)
    assert run_bpf(p3, NR_I386["getpid"], arch=I386) == ALLOW
    # i386 not in the filter: libseccomp's bad-arch action (kill)
    assert run_bpf(p1, NR_I386["getpid"], arch=I386) in (0, KILL_PROCESS)
    assert run_bpf(p1, X32_BIT | NR["getpid"]) in (0, KILL_PROCESS)    # x32 not in it either
    assert seccomp.compile_oci(dict(one)) is p1          # cached by content, not identity
    with pytest.raises(RuntimeFailure, match="architecture"):
        seccomp.compile_oci(dict(one, architectures=["SCMP_ARCH_Z80"]))


def test_podman_profile_compiles_for_every_cap_set() -> None:
    path = Path("/usr/share/containers/seccomp.json")
    if not path.exists():
        pytest.skip("containers-common's seccomp.json not installed")
    pod = json.loads(path.read_text())
    prog = compile_profile(pod)
    assert run_bpf(prog, 323) == errno_(1)            # userfaultfd: explicit EPERM list
    assert run_bpf(prog, 248) == errno_(38)           # add_key: not listed -> defaultErrnoRet ENOSYS
    assert run_bpf(prog, NR["keyctl"]) == ALLOW
    assert run_bpf(prog, 321) == errno_(1)            # bpf without CAP_SYS_ADMIN


def test_flags_value() -> None:
    assert seccomp.flags_value(None) == 0
    assert seccomp.flags_value({"flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}) == 6
    with pytest.raises(RuntimeFailure):
        seccomp.flags_value({"flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]})


def test_disk_cache(tmp_path: Path) -> None:
    cfg = {"defaultAction": "SCMP_ACT_ERRNO",
           "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ALLOW"}]}
    prog = seccomp.compile_oci(cfg, cache_dir=tmp_path / "bpf")
    files = list((tmp_path / "bpf").iterdir())
    assert len(files) == 1 and files[0].read_bytes() == prog and files[0].suffix == ".bpf"
    seccomp._cache.clear()
    assert seccomp.compile_oci(cfg, cache_dir=tmp_path / "bpf") == prog
    files[0].write_bytes(b"torn")                     # not a whole program: recompiled
    seccomp._cache.clear()
    assert seccomp.compile_oci(cfg, cache_dir=tmp_path / "bpf") == prog


def test_oci_for_refs() -> None:
    assert seccomp.oci_for("unconfined", DOCKER_DEFAULT_14) is None
    oci = seccomp.oci_for("default", DOCKER_DEFAULT_14, "amd64")
    assert oci is not None and oci["defaultAction"] == "SCMP_ACT_ERRNO"
