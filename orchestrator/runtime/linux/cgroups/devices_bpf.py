"""cgroup v2 device allowlist: OCI device rules -> a BPF_PROG_TYPE_CGROUP_DEVICE program, attached.

cgroup v2 has no ``devices.allow``; the kernel instead runs a BPF program on every device open/mknod
(``struct bpf_cgroup_dev_ctx {u32 access_type = access << 16 | type; u32 major; u32 minor}``) and
allows the access when it returns 1. ``assemble`` (pure, unit-tested by running the bytes in a tiny
interpreter) compiles the rules; ``attach`` loads it with bpf(2) and attaches it to the cgroup directory.
Used by ``v2.V2Cgroup``; the v1 driver writes devices.allow/deny instead (``compute.compute_v1``).

Semantics (the v1 controller's, as runc and crun give them): rules are applied in order, so the LAST
matching rule decides; no match means deny. An allow rule matches when every requested access bit is
in its access set; a deny rule matches when any requested bit is in its set.
The program is attached without BPF_F_ALLOW_MULTI, so attaching again (``update``) replaces it
atomically and a container cannot stack its own filter under ours.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import struct
from pathlib import Path

from orchestrator.errors import RuntimeFailure

from .convert import DeviceRule

DEV_BLOCK, DEV_CHAR = 1, 2                                   # BPF_DEVCG_DEV_*
ACC = {"m": 1, "r": 2, "w": 4}                               # BPF_DEVCG_ACC_*
ALL_ACCESS = 7

# instruction encodings (linux/bpf.h, bpf_common.h)
LDX_W = 0x61          # BPF_LDX | BPF_MEM | BPF_W
AND_K = 0x57          # BPF_ALU64 | BPF_AND | BPF_K
RSH_K = 0x77          # BPF_ALU64 | BPF_RSH | BPF_K
MOV_K = 0xB7          # BPF_ALU64 | BPF_MOV | BPF_K
MOV_X = 0xBF          # BPF_ALU64 | BPF_MOV | BPF_X
JEQ_K = 0x15          # BPF_JMP | BPF_JEQ | BPF_K
JNE_K = 0x55          # BPF_JMP | BPF_JNE | BPF_K
JSET_K = 0x45         # BPF_JMP | BPF_JSET | BPF_K
EXIT = 0x95           # BPF_JMP | BPF_EXIT

Insn = tuple[int, int, int, int, int]                         # code, dst, src, off, imm


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> Insn:
    return (code, dst, src, off, imm)


def _rule_block(rule: DeviceRule) -> list[Insn]:
    """Instructions that return the rule's verdict when it matches, else fall through. Jumps to
    "next" are written with off=-1 and patched to the end of the block."""
    skip: list[Insn] = []
    if rule.kind != "a":
        skip.append(_insn(JNE_K, 2, imm=DEV_BLOCK if rule.kind == "b" else DEV_CHAR, off=-1))
        mask = sum(ACC[c] for c in rule.access)
        if rule.allow and mask != ALL_ACCESS:
            skip.append(_insn(JSET_K, 3, imm=ALL_ACCESS & ~mask, off=-1))   # asks for more than allowed
        elif not rule.allow and mask != ALL_ACCESS:
            skip.append(_insn(MOV_X, 6, 3))
            skip.append(_insn(AND_K, 6, imm=mask))
            skip.append(_insn(JEQ_K, 6, imm=0, off=-1))                      # asks for none of these
        if rule.major is not None:
            skip.append(_insn(JNE_K, 4, imm=rule.major, off=-1))
        if rule.minor is not None:
            skip.append(_insn(JNE_K, 5, imm=rule.minor, off=-1))
    block = [*skip, _insn(MOV_K, 0, imm=1 if rule.allow else 0), _insn(EXIT)]
    return [(c, d, s, len(block) - i - 1 if o == -1 else o, imm) for i, (c, d, s, o, imm) in enumerate(block)]


def assemble(rules: list[DeviceRule]) -> bytes:
    """The program for ``rules`` as raw ``struct bpf_insn`` bytes."""
    insns: list[Insn] = [
        _insn(LDX_W, 2, 1, 0), _insn(AND_K, 2, imm=0xFFFF),      # r2 = type
        _insn(LDX_W, 3, 1, 0), _insn(RSH_K, 3, imm=16),          # r3 = access bits
        _insn(LDX_W, 4, 1, 4),                                   # r4 = major
        _insn(LDX_W, 5, 1, 8),                                   # r5 = minor
    ]
    for rule in reversed(rules):          # last matching rule wins: test it first
        insns.extend(_rule_block(rule))
        if rule.kind == "a":
            # matches everything: earlier rules could never run, and the verifier rejects dead code
            break
    else:
        insns += [_insn(MOV_K, 0, imm=0), _insn(EXIT)]            # no rule matched: deny
    return b"".join(struct.pack("<BBhi", c, d | (s << 4), o, imm) for c, d, s, o, imm in insns)


# -- loading and attaching (bpf(2) through libc's syscall(); no Python binding is needed) -------------

_NR_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_TYPE_CGROUP_DEVICE, BPF_CGROUP_DEVICE = 15, 6
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise RuntimeFailure(f"bpf(2) syscall number unknown on {platform.machine()}", op="bpf")
    ret = int(_libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr))))
    if ret < 0:
        return -ctypes.get_errno()
    return ret


def attach(cgroup_dir: Path, rules: list[DeviceRule]) -> None:
    """Load the filter for ``rules`` and attach it to ``cgroup_dir`` (replacing any earlier one)."""
    code = assemble(rules)
    prog = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(1 << 16)
    attr = ctypes.create_string_buffer(128)
    # union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size, log_buf
    struct.pack_into("<IIQQIIQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
                     ctypes.addressof(prog), ctypes.addressof(license_), 1, len(log), ctypes.addressof(log))
    struct.pack_into("16s", attr, 48, b"orch_devices")
    prog_fd = _bpf(BPF_PROG_LOAD, attr)
    if prog_fd < 0:
        verifier = log.value.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeFailure(f"cannot load the device filter for {cgroup_dir}: {os.strerror(-prog_fd)}"
                             f" {' / '.join(verifier)}", op="bpf prog load", path=str(cgroup_dir),
                             errno=-prog_fd)
    try:
        try:
            dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise RuntimeFailure(f"cannot open cgroup {cgroup_dir}: {exc.strerror}", op="open",
                                 path=str(cgroup_dir), errno=exc.errno or 0) from exc
        try:
            attach_attr = ctypes.create_string_buffer(128)
            # BPF_PROG_ATTACH: target_fd, attach_bpf_fd, attach_type, attach_flags (0: single, replaceable)
            struct.pack_into("<IIII", attach_attr, 0, dir_fd, prog_fd, BPF_CGROUP_DEVICE, 0)
            err = _bpf(BPF_PROG_ATTACH, attach_attr)
            if err < 0:
                raise RuntimeFailure(f"cannot attach the device filter to {cgroup_dir}: "
                                     f"{os.strerror(-err)}", op="bpf prog attach", path=str(cgroup_dir),
                                     errno=-err)
        finally:
            os.close(dir_fd)
    finally:
        os.close(prog_fd)       # the attachment keeps the program alive until the cgroup goes
