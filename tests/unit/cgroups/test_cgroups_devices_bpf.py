"""The v2 device filter program, run in a small interpreter of the BPF instructions it uses.

The interpreter is test-only and covers exactly the opcodes ``devices_bpf.assemble`` emits; it also
checks what the kernel verifier would reject (backward or out-of-range jumps, dead code, no exit).
The real kernel runs the same bytes in tests/integration/cgroups.
"""

from __future__ import annotations

import struct

import pytest

from orchestrator.runtime.linux.cgroups import devices_bpf as bpf
from orchestrator.runtime.linux.cgroups.convert import device_rules

U64 = (1 << 64) - 1
TYPES = {"b": bpf.DEV_BLOCK, "c": bpf.DEV_CHAR}


def decode(code: bytes) -> list[tuple[int, int, int, int, int]]:
    out = []
    for i in range(0, len(code), 8):
        op, regs, off, imm = struct.unpack_from("<BBhi", code, i)
        out.append((op, regs & 0xF, regs >> 4, off, imm))
    return out


def check_verifiable(insns: list[tuple[int, int, int, int, int]]) -> None:
    reachable, todo = set(), [0]
    while todo:
        pc = todo.pop()
        if pc in reachable:
            continue
        assert 0 <= pc < len(insns), "falls off the end"
        reachable.add(pc)
        op, _d, _s, off, _imm = insns[pc]
        if op == bpf.EXIT:
            continue
        if op in (bpf.JEQ_K, bpf.JNE_K, bpf.JSET_K):
            assert off >= 0
            todo.append(pc + 1 + off)
        todo.append(pc + 1)
    assert reachable == set(range(len(insns))), "dead code"


def run(code: bytes, kind: str, major: int, minor: int, access: str) -> bool:
    insns = decode(code)
    check_verifiable(insns)
    ctx = [(sum(bpf.ACC[c] for c in access) << 16) | TYPES[kind], major, minor]
    reg = [0] * 11
    pc = 0
    while True:
        op, dst, src, off, imm = insns[pc]
        pc += 1
        k = imm & U64
        if op == bpf.LDX_W:
            assert src == 1 and off % 4 == 0
            reg[dst] = ctx[off // 4]
        elif op == bpf.AND_K:
            reg[dst] &= k
        elif op == bpf.RSH_K:
            reg[dst] >>= imm
        elif op == bpf.MOV_K:
            reg[dst] = k
        elif op == bpf.MOV_X:
            reg[dst] = reg[src]
        elif op == bpf.JEQ_K:
            pc += off if reg[dst] == k else 0
        elif op == bpf.JNE_K:
            pc += off if reg[dst] != k else 0
        elif op == bpf.JSET_K:
            pc += off if reg[dst] & k else 0
        elif op == bpf.EXIT:
            return reg[0] == 1
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")


def program(rules: list[dict[str, object]]) -> bytes:
    parsed = device_rules({"devices": rules})
    assert parsed is not None
    return bpf.assemble(parsed)


RULES: list[dict[str, object]] = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"},
    {"allow": True, "type": "c", "major": 136, "access": "rw"},
    {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"},
]


@pytest.mark.parametrize(("kind", "major", "minor", "access", "allowed"), [
    ("c", 1, 3, "r", True), ("c", 1, 3, "m", True),
    ("c", 1, 3, "w", False), ("c", 1, 3, "rw", False),        # the later deny-w wins
    ("c", 1, 5, "r", True), ("c", 1, 5, "w", False), ("c", 1, 5, "rw", False),
    ("c", 136, 7, "rw", True), ("c", 136, 0, "m", False),     # wildcard minor, but no mknod
    ("b", 1, 3, "r", False), ("c", 1, 9, "r", False), ("b", 8, 0, "rwm", False),
])
def test_last_matching_rule_decides(kind: str, major: int, minor: int, access: str, allowed: bool) -> None:
    assert run(program(RULES), kind, major, minor, access) is allowed


def test_empty_list_denies_and_allow_all_allows() -> None:
    assert not run(program([]), "c", 1, 3, "r")
    assert run(program([{"allow": True, "access": "rwm"}]), "b", 8, 0, "rwm")
    # an all-devices rule last makes every earlier rule unreachable: they are not emitted
    code = program([{"allow": True, "type": "c", "major": 1, "minor": 3}, {"allow": False}])
    assert len(code) == 16 + 6 * 8 and not run(code, "c", 1, 3, "r")
