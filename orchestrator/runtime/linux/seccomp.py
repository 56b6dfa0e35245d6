"""Seccomp: OCI ``linux.seccomp`` -> raw BPF program (libseccomp, in the parent) -> kernel (in the child).

Two halves, split by process on purpose:
  * ``compile_oci`` runs in the orchestrator (or the fork server) and uses libseccomp through ctypes to
    build the filter and export it as classic BPF. Results are cached by a hash of the OCI object
    (in memory, and optionally in a directory). For deny-by-default profiles a short prefix returns
    ENOSYS for syscall numbers newer than any the profile names, as runc's patchbpf does.
  * ``install`` runs in the container init child after no_new_privs, as late as possible before execve;
    it only hands the bytes to the kernel with seccomp(2). No libseccomp code (no allocation, no locks)
    runs in the child.

Why ctypes on libseccomp.so.2 rather than the installed ``pyseccomp``: we need ``seccomp_export_bpf``
into our own fd, ``seccomp_rule_add_array`` with arbitrary condition lists and precise errno reporting;
pyseccomp wraps the same library with a different (untyped) API and would add a dependency for no gain.

Profiles in the Docker/Podman format are loaded and converted by ``seccomp_profiles`` (re-exported here
as ``load_profile`` and ``profile_to_oci``). Neighbours: ``capabilities`` (no_new_privs, caps; its
bounding set feeds ``profile_to_oci``), ``init`` (calls ``install``), ``runtime.oci`` (builds the object).
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import hashlib
import json
import os
import platform
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from orchestrator.errors import RuntimeFailure
from orchestrator.fsutil import write_atomic
from orchestrator.runtime.linux.seccomp_profiles import (
    ACTIONS,
    OPERATORS,
    default_profile,
    load_profile,
    profile_to_oci,
)

__all__ = ["compile_oci", "default_profile", "flags_value", "install", "load_profile", "oci_for",
           "profile_to_oci"]

_ACT_BASE = {
    "SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000, "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000, "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_CMP = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
        "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2,
          "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4, "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32}
_SCMP_FLTATR_CTL_OPTIMIZE = 8
_SECCOMP_SET_MODE_FILTER = 1
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277, "i686": 354, "ppc64le": 358, "s390x": 348, "riscv64": 277}
_CACHE_MAX = 64
_cache: OrderedDict[str, bytes] = OrderedDict()
# one compile at a time: an apply's worker threads all want the same profile at once, and each would
# otherwise compile it (~13 ms of CPU, under the GIL) before the first result is cached
_cache_lock = threading.Lock()


class _ArgCmp(ctypes.Structure):
    # struct scmp_arg_cmp from seccomp.h
    _fields_ = (("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64))


class _SockFilter(ctypes.Structure):
    _fields_ = (("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32))


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


_lib: ctypes.CDLL | None = None


def _libseccomp() -> ctypes.CDLL:
    """libseccomp.so.2, loaded on first use (the child never calls this)."""
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as exc:
            raise RuntimeFailure("libseccomp.so.2 not found (install libseccomp2)", op="dlopen") from exc
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = (ctypes.c_uint32,)
        lib.seccomp_release.argtypes = (ctypes.c_void_p,)
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = (ctypes.c_char_p,)
        lib.seccomp_arch_add.argtypes = (ctypes.c_void_p, ctypes.c_uint32)
        lib.seccomp_attr_set.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32)
        lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
        lib.seccomp_rule_add_array.argtypes = (ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ArgCmp))
        lib.seccomp_export_bpf.argtypes = (ctypes.c_void_p, ctypes.c_int)
        lib.seccomp_arch_native.restype = ctypes.c_uint32
        lib.seccomp_syscall_resolve_name_arch.argtypes = (ctypes.c_uint32, ctypes.c_char_p)
        _lib = lib
    return _lib


def _action(name: str, errno_ret: Any, op: str) -> int:
    """libseccomp action value. ERRNO and TRACE default to EPERM as in runc; NOTIFY needs a listener we
    do not have, so it is refused rather than silently weakened."""
    if name in _ACT_BASE:
        return _ACT_BASE[name]
    ret = errno_ret if isinstance(errno_ret, int) and not isinstance(errno_ret, bool) else errno_mod.EPERM
    if name == "SCMP_ACT_ERRNO":
        return 0x00050000 | (ret & 0xFFFF)
    if name == "SCMP_ACT_TRACE":
        return 0x7FF00000 | (ret & 0xFFFF)
    if name == "SCMP_ACT_NOTIFY":
        raise RuntimeFailure("seccomp action SCMP_ACT_NOTIFY is not supported", op=op)
    raise RuntimeFailure(f"unknown seccomp action {name!r}", op=op)


def _conditions(args: Sequence[Mapping[str, Any]], op: str) -> list[list[_ArgCmp]]:
    """Condition lists, one per rule. Several conditions on the same argument index cannot be ANDed by
    libseccomp, so (as runc) each then becomes its own rule, i.e. they are ORed."""
    conds = []
    for a in args:
        if a.get("op") not in OPERATORS or not 0 <= int(a.get("index", -1)) <= 5:
            raise RuntimeFailure(f"bad seccomp argument condition {dict(a)!r}", op=op)
        conds.append(_ArgCmp(int(a["index"]), _CMP[a["op"]], int(a.get("value", 0)),
                             int(a.get("valueTwo", 0))))
    indexes = [c.arg for c in conds]
    if len(set(indexes)) != len(indexes):
        return [[c] for c in conds]
    return [conds]


def _cache_key(linux_seccomp: Mapping[str, Any]) -> str:
    # the libseccomp version is part of the key: another version may know more syscall names
    blob = json.dumps(linux_seccomp, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob + platform.machine().encode() + _lib_version().encode()).hexdigest()


def _lib_version() -> str:
    lib = _libseccomp()
    lib.seccomp_version.restype = ctypes.POINTER(ctypes.c_uint * 3)
    return ".".join(str(v) for v in lib.seccomp_version().contents)


def compile_oci(linux_seccomp: Mapping[str, Any], cache_dir: str | os.PathLike[str] | None = None) -> bytes:
    """Compile an OCI ``linux.seccomp`` object to a raw classic-BPF program (8 bytes per instruction).

    Unknown syscall names (too new for this libseccomp) are skipped; rules whose action equals the
    default action are skipped (libseccomp refuses them and they change nothing). Results are cached
    in memory by a hash of the object, and in ``cache_dir`` (``<sha256>.bpf``) when given, so short-lived
    CLI processes do not recompile.
    """
    key = _cache_key(linux_seccomp)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
        path = os.path.join(cache_dir, key + ".bpf") if cache_dir is not None else None
        prog = _read_cached(path) if path else None
        if prog is None:
            prog = _compile(linux_seccomp)
            if path:
                _write_cached(path, prog)
        _cache[key] = prog
        if len(_cache) > _CACHE_MAX:
            _cache.popitem(last=False)
        return prog


def _read_cached(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RuntimeFailure(f"cannot read seccomp cache: {exc.strerror}", op="read", path=path,
                             errno=exc.errno or 0) from exc
    return data if data and len(data) % 8 == 0 else None     # a torn file: recompile


def _write_cached(path: str, prog: bytes) -> None:
    # write then rename: a concurrent reader sees the old state or the whole program, never half
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, prog)
    except OSError as exc:
        raise RuntimeFailure(f"cannot write seccomp cache: {exc.strerror}", op="write", path=path,
                             errno=exc.errno or 0) from exc


def oci_for(ref: str, capabilities: Collection[str], arch: str | None = None) -> dict[str, Any] | None:
    """``seccomp: default | unconfined | <file>`` plus the container's bounding capabilities -> the OCI
    ``linux.seccomp`` object, or None for unconfined."""
    profile = load_profile(ref)
    return None if profile is None else profile_to_oci(profile, capabilities, arch)


def _compile(cfg: Mapping[str, Any]) -> bytes:
    lib = _libseccomp()
    default_name = cfg.get("defaultAction")
    if default_name not in ACTIONS:
        raise RuntimeFailure(f"unknown seccomp default action {default_name!r}", op="seccomp_init")
    default = _action(str(default_name), cfg.get("defaultErrnoRet"), "seccomp_init")
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise RuntimeFailure("seccomp_init failed", op="seccomp_init")
    try:
        # optimize=2: a binary tree over syscall numbers instead of a linear list; same semantics, and
        # a filter runs on every syscall of the container
        lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_OPTIMIZE, 2)
        for arch in cfg.get("architectures") or []:
            token = _arch_token(lib, str(arch))
            rc = lib.seccomp_arch_add(ctx, token)
            if rc < 0 and rc != -errno_mod.EEXIST:     # the native arch is already in a new filter
                raise RuntimeFailure(f"seccomp_arch_add {arch} failed", op="seccomp_arch_add", errno=-rc)
        for i, call in enumerate(cfg.get("syscalls") or []):
            _add_rules(lib, ctx, call, default, f"syscalls[{i}]")
        filter_prog = _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)
    if default_name in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"):
        return filter_prog
    return _enosys_stub(lib, cfg) + filter_prog


def _arch_token(lib: ctypes.CDLL, arch: str) -> int:
    """libseccomp's token for ``SCMP_ARCH_X86_64`` etc. (its names are the lowercase suffix)."""
    name = arch.removeprefix("SCMP_ARCH_").lower()
    token: int = lib.seccomp_arch_native() if name == "native" else \
        lib.seccomp_arch_resolve_name(name.encode())
    if token == 0:
        raise RuntimeFailure(f"unknown seccomp architecture {arch!r}", op="seccomp_arch_add")
    return token


def _add_rules(lib: ctypes.CDLL, ctx: int, call: Mapping[str, Any], default: int, where: str) -> None:
    action = _action(str(call.get("action")), call.get("errnoRet"), where)
    if action == default:
        return
    for conds in _conditions(call.get("args") or [], where):
        array = (_ArgCmp * len(conds))(*conds)
        for name in call.get("names") or []:
            nr = lib.seccomp_syscall_resolve_name(str(name).encode())
            if nr == -1:          # __NR_SCMP_ERROR: unknown to this libseccomp; skipped by design
                continue
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(conds), array)
            if rc < 0:
                raise RuntimeFailure(f"seccomp rule for {name} failed: {os.strerror(-rc)}",
                                     op=f"seccomp_rule_add({where})", errno=-rc)


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    # a memfd rather than a pipe: a large multi-arch filter can exceed the pipe buffer and block
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    try:
        rc = lib.seccomp_export_bpf(ctx, fd)
        if rc < 0:
            raise RuntimeFailure("seccomp_export_bpf failed", op="seccomp_export_bpf", errno=-rc)
        size = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while len(data) < size:
            chunk = os.read(fd, size - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if not data or len(data) % 8:
        raise RuntimeFailure(f"seccomp_export_bpf produced {len(data)} bytes", op="seccomp_export_bpf")
    return data


# classic BPF opcodes and the seccomp_data offsets the stub reads
_LD_ABS, _JEQ, _JGT, _JSET, _JA, _RET = 0x20, 0x15, 0x25, 0x45, 0x05, 0x06
_OFF_NR, _OFF_ARCH = 0, 4
_AUDIT_X86_64, _SCMP_X32, _X32_BIT = 0xC000003E, 0x4000003E, 0x40000000
_Insn = tuple[str, int, str | int, str | int, int]


def _max_syscalls(lib: ctypes.CDLL, cfg: Mapping[str, Any]) -> dict[int, int]:
    """Largest syscall number named anywhere in the profile, per architecture token."""
    tokens = [_arch_token(lib, str(a)) for a in cfg.get("architectures") or []] \
        or [lib.seccomp_arch_native()]
    names = {str(n).encode() for call in cfg.get("syscalls") or [] for n in call.get("names") or []}
    out: dict[int, int] = {}
    for token in tokens:
        nrs = [lib.seccomp_syscall_resolve_name_arch(ctypes.c_uint32(token), n) for n in names]
        best = max((nr for nr in nrs if nr >= 0), default=-1)   # negative: pseudo number, absent here
        if best > 0:
            out[token] = best
    return out


def _enosys_stub(lib: ctypes.CDLL, cfg: Mapping[str, Any]) -> bytes:
    """A BPF prefix returning ENOSYS for syscall numbers above the largest one the profile names.

    Why: with a deny-by-default profile a syscall newer than the profile (say fchmodat2 under an old
    profile) would get EPERM, and libc treats EPERM as a real failure; ENOSYS makes it fall back to the
    older call, as on an older kernel. runc does the same (libcontainer/seccomp/patchbpf); keeping it
    makes our errno table match runc's. On x86_64 the x32 ABI shares the audit arch and is told apart by
    bit 30 of the syscall number.
    """
    maxima = _max_syscalls(lib, cfg)
    x32_max = maxima.pop(_SCMP_X32, None)
    # instructions as (label, opcode, jt, jf, k); jt/jf are labels or literal offsets, and for the
    # unconditional jump the target label sits in jt. "filter" is the first libseccomp instruction.
    head: list[_Insn] = [("", _LD_ABS, 0, 0, _OFF_ARCH)]
    tail: list[_Insn] = []
    for token, top in maxima.items():
        name = f"arch{token:x}"
        head.append(("", _JEQ, name, 0, token))
        tail.append((name, _LD_ABS, 0, 0, _OFF_NR))
        if token == _AUDIT_X86_64:
            # bit 30 set: an x32 syscall, checked against x32's maximum (or left to the filter, whose
            # bad-arch action applies, when x32 is not in the profile)
            tail.append(("", _JSET, 0, 1, _X32_BIT))
            tail.append(("", _JGT, "enosys", "filter", x32_max) if x32_max else ("", _JA, "filter", 0, 0))
        tail.append(("", _JGT, "enosys", "filter", top))
    head.append(("", _JA, "filter", 0, 0))
    code = [*head, *tail, ("enosys", _RET, 0, 0, 0x00050000 | errno_mod.ENOSYS)]
    labels = {lbl: i for i, (lbl, *_rest) in enumerate(code) if lbl}
    labels["filter"] = len(code)
    out = bytearray()
    for pc, (_lbl, op, jt, jf, k) in enumerate(code):
        # jumps are relative to the next instruction
        jt_off, jf_off = (labels[t] - pc - 1 if isinstance(t, str) else t for t in (jt, jf))
        if op == _JA:
            out += _SockFilter(op, 0, 0, jt_off)       # unconditional: the offset lives in k
        else:
            out += _SockFilter(op, jt_off, jf_off, k)
    return bytes(out)


def flags_value(linux_seccomp: Mapping[str, Any] | None) -> int:
    """seccomp(2) flags for the OCI ``flags`` list (unknown names refused)."""
    value = 0
    for name in (linux_seccomp or {}).get("flags") or []:
        if name not in _FLAGS:
            raise RuntimeFailure(f"unsupported seccomp flag {name!r}", op="seccomp")
        value |= _FLAGS[name]
    return value


_libc = ctypes.CDLL(None, use_errno=True)


def install(prog: bytes, flags: int = 0) -> None:
    """Load a compiled program into the kernel for this process (and its future children).

    Call in the single-threaded container init after ``capabilities.set_no_new_privs()`` (without it the
    kernel requires CAP_SYS_ADMIN). Irreversible.
    """
    count = len(prog) // 8
    if not count or len(prog) % 8 or count > 4096:
        raise RuntimeFailure(f"bad seccomp program of {len(prog)} bytes", op="seccomp")
    buf = (_SockFilter * count).from_buffer_copy(prog)
    fprog = _SockFprog(count, ctypes.cast(buf, ctypes.POINTER(_SockFilter)))
    nr = _SYS_SECCOMP.get(platform.machine())
    ret = -1
    err = errno_mod.ENOSYS
    if nr is not None:
        ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_uint(_SECCOMP_SET_MODE_FILTER),
                            ctypes.c_uint(flags), ctypes.byref(fprog))
        err = ctypes.get_errno() if ret < 0 else 0
    if ret < 0 and err == errno_mod.ENOSYS and flags == 0:
        # pre-3.17 kernels, or an arch missing from the table: prctl takes no flags but works
        ret = _libc.prctl(ctypes.c_int(_PR_SET_SECCOMP), ctypes.c_ulong(_SECCOMP_MODE_FILTER),
                          ctypes.byref(fprog), ctypes.c_ulong(0), ctypes.c_ulong(0))
        err = ctypes.get_errno() if ret < 0 else 0
    if ret < 0:
        raise RuntimeFailure(f"installing seccomp filter failed: {os.strerror(err)}", op="seccomp",
                             errno=err)
