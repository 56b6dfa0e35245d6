"""Linux capabilities and no_new_privs for the container init process.

Pure part: ``resolve`` (cap_add / cap_drop over a base set -> OCI capability list) and ``to_mask``.
Apply part (``apply``, ``set_no_new_privs``): called in the freshly forked, single-threaded container
init by ``runtime.linux.init``, after namespaces and the root switch and before ``seccomp.install``.
Kernel calls go through ctypes (prctl, capset, setgroups/setresgid/setresuid) with errors raised as
``RuntimeFailure`` naming the operation.

Order of operations (as runc's ``finalizeNamespace``), each step needing the one before:
  1. drop the bounding set        needs CAP_SETPCAP in the effective set, so it comes first
  2. PR_SET_KEEPCAPS=1            so the permitted set survives the uid change
  3. setgroups, setresgid, setresuid   needs CAP_SETGID/CAP_SETUID, still effective here
  4. PR_SET_KEEPCAPS=0
  5. capset v3 (eff, perm, inh)   the uid change cleared the effective set; this restores what we want
  6. ambient: clear all, raise each  needs the cap in both permitted and inheritable (step 5)
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import functools
import os
from collections.abc import Iterable, Mapping, Sequence

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.linux.security_defaults import DEFAULT_CAPABILITIES

# Numbers from include/uapi/linux/capability.h.
CAPABILITIES: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
DOCKER_DEFAULT_14: tuple[str, ...] = DEFAULT_CAPABILITIES

PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


@functools.cache
@functools.cache
def last_cap() -> int:
    """Highest capability number the running kernel knows (newer names than that are skipped).

    Cached: it cannot change while we run (the fork server reads it once, for every container init
    it forks), and ``apply`` must not need to open files once it has dropped CAP_DAC_OVERRIDE (a
    rootfs whose ``/`` is mode 0700 would then refuse the lookup).
    """
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return max(CAPABILITIES.values())


def canonical(name: str) -> str:
    """``net_raw`` / ``NET_RAW`` / ``CAP_NET_RAW`` -> ``CAP_NET_RAW``; ``all`` -> ``ALL``.

    Raises ValueError for a name that is not a capability, so the manifest layer can report it.
    """
    upper = name.strip().upper()
    if upper == "ALL":
        return "ALL"
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in CAPABILITIES:
        raise ValueError(f"unknown capability {name!r}")
    return full


def resolve(add: Iterable[str] = (), drop: Iterable[str] = (),
            base: Sequence[str] = DOCKER_DEFAULT_14) -> list[str]:
    """The capability list a container gets: ``base`` plus ``add`` minus ``drop``, sorted by number.

    Docker semantics: ``drop: [ALL]`` empties the base before the adds apply (so ``drop ALL, add
    NET_BIND_SERVICE`` gives just that one); ``add: [ALL]`` gives every capability the kernel knows,
    then the drops apply. A name both added and dropped (other than ALL) is dropped.
    """
    adds = {canonical(n) for n in add}
    drops = {canonical(n) for n in drop}
    everything = {n for n, v in CAPABILITIES.items() if v <= last_cap()}
    caps = set() if "ALL" in drops else {canonical(n) for n in base}
    caps |= everything if "ALL" in adds else adds - {"ALL"}
    caps -= drops - {"ALL"}
    return sorted(caps, key=CAPABILITIES.__getitem__)


def to_mask(names: Iterable[str]) -> int:
    """A 64-bit capability mask, as shown in /proc/PID/status. Names the kernel lacks are skipped."""
    top = last_cap()
    mask = 0
    for name in names:
        num = CAPABILITIES[canonical(name)]
        if num <= top:
            mask |= 1 << num
    return mask


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32))


_libc = ctypes.CDLL(None, use_errno=True)


# argument types bound once: converting five ctypes objects per call was most of the ~80 prctl calls
# a container init makes here
_raw_prctl = _libc.prctl
_raw_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_raw_prctl.restype = ctypes.c_int


def _prctl(op: str, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    ret: int = _raw_prctl(option, arg2, arg3, arg4, arg5)
    if ret < 0:
        err = ctypes.get_errno()
        raise RuntimeFailure(f"{op} failed: {os.strerror(err)}", op=op, errno=err)
    return ret


def set_no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS: execve can never again grant privileges (setuid bits, file caps).

    Also what lets an unprivileged process install a seccomp filter.
    """
    _prctl("prctl(PR_SET_NO_NEW_PRIVS)", PR_SET_NO_NEW_PRIVS, 1)


def masks(process_capabilities: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each set of OCI ``process.capabilities`` as a bit mask (what ``apply`` sets; ``initplan`` sends
    them to the C init)."""
    unknown = set(process_capabilities) - set(_SETS)
    if unknown:
        raise RuntimeFailure(f"unknown capability set(s) {sorted(unknown)}", op="capabilities")
    try:
        return {s: to_mask(process_capabilities.get(s, ())) for s in _SETS}
    except ValueError as exc:
        raise RuntimeFailure(str(exc), op="capabilities") from exc


def drop_bounding(keep_mask: int) -> None:
    """Drop every capability not in ``keep_mask`` from the bounding set (irreversible)."""
    for num in range(last_cap() + 1):
        if keep_mask & (1 << num):
            continue
        # PR_CAPBSET_READ first: dropping an already-dropped cap is fine, but skipping it saves a syscall
        # and keeps EINVAL (cap unknown to this kernel) from ever surfacing.
        if _prctl("prctl(PR_CAPBSET_READ)", PR_CAPBSET_READ, num) == 1 and \
                _raw_prctl(PR_CAPBSET_DROP, num, 0, 0, 0) < 0:
            _prctl(f"prctl(PR_CAPBSET_DROP, {num})", PR_CAPBSET_DROP, num)     # raises, naming it


def _capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)(
        _CapData(effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF),
        _CapData(effective >> 32, permitted >> 32, inheritable >> 32),
    )
    if _libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise RuntimeFailure(f"capset failed: {os.strerror(err)}", op="capset", errno=err)


def _set_user(uid: int, gid: int, additional_gids: Sequence[int]) -> None:
    try:
        # setgroups before setgid/setuid: afterwards we would lack CAP_SETGID's effective bit.
        os.setgroups(list(additional_gids))
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise RuntimeFailure(f"switching to user {uid}:{gid} failed: {exc.strerror}",
                             op="setresuid", errno=exc.errno or errno_mod.EPERM) from exc


def apply(process_capabilities: Mapping[str, Sequence[str]], *, uid: int | None = None,
          gid: int | None = None, additional_gids: Sequence[int] = ()) -> None:
    """Make this process's capability sets exactly OCI ``process.capabilities``.

    ``process_capabilities`` maps ``bounding``/``effective``/``permitted``/``inheritable``/``ambient``
    to lists of ``CAP_X`` names; a missing set means empty. With ``uid`` and/or ``gid`` the process
    switches to that user/group (the other one kept) with exactly ``additional_gids`` as supplementary
    groups, in the middle of the sequence (see the module docstring for the order and why). Must run in
    a single-threaded process: capabilities and credentials are per thread.
    """
    sets = masks(process_capabilities)
    top = last_cap()               # read now, while we can still open any file
    drop_bounding(sets["bounding"])
    if uid is not None or gid is not None:
        _prctl("prctl(PR_SET_KEEPCAPS, 1)", PR_SET_KEEPCAPS, 1)
        _set_user(os.getuid() if uid is None else uid, os.getgid() if gid is None else gid,
                  additional_gids)
        _prctl("prctl(PR_SET_KEEPCAPS, 0)", PR_SET_KEEPCAPS, 0)
    _capset(sets["effective"], sets["permitted"], sets["inheritable"])
    _prctl("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for num in range(top + 1):
        if sets["ambient"] & (1 << num):
            _prctl(f"prctl(PR_CAP_AMBIENT_RAISE, {num})", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, num)


def oci_capabilities(names: Sequence[str], *, ambient: bool = False) -> dict[str, list[str]]:
    """The OCI ``process.capabilities`` object runc/Docker build for a capability list: the same list in
    bounding, effective and permitted; inheritable and ambient empty unless ``ambient`` (for a non-root
    user that must keep the caps across execve)."""
    caps = [canonical(n) for n in names]
    return {"bounding": caps, "effective": caps, "permitted": caps,
            "inheritable": caps if ambient else [], "ambient": caps if ambient else []}


def status_masks(pid: int | str = "self") -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of a process, from /proc (what tests compare against)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Cap"):
                out[key] = int(value.strip(), 16)
    return out
