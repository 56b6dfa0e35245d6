"""Seccomp profiles in the Docker/Podman JSON format: loading, validation, conversion to OCI (pure).

A profile (``defaultAction``, ``defaultErrnoRet``, ``architectures`` or ``archMap``, ``syscalls`` with
``names``/``name``, ``action``, ``errnoRet``, ``args``, ``includes``/``excludes`` by ``caps``,
``arches`` and ``minKernel``) is turned into the OCI runtime-spec ``linux.seccomp`` object the way
moby's ``profiles/seccomp`` does: entries whose includes/excludes do not match the container's bounding
capabilities, the native architecture or the running kernel are left out; the rest are copied.
``runtime.linux.seccomp`` compiles the OCI object to BPF; ``runtime.oci`` calls ``profile_to_oci``.

Bad profiles raise ``ManifestError`` listing every problem with its JSON path, since a profile is user
input referenced from a manifest.
"""

from __future__ import annotations

import json
import os
import platform
import re
from collections.abc import Collection, Mapping
from importlib import resources
from typing import Any

from orchestrator.errors import ManifestError, Problem

ACTIONS = frozenset({
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
})
OPERATORS = frozenset({
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
})
ARCHES = frozenset({
    "SCMP_ARCH_NATIVE", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
})
FLAGS = frozenset({
    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
})
# Docker's architecture words (used in includes/excludes.arches) -> libseccomp's names.
DOCKER_ARCH_TO_SCMP: dict[str, str] = {
    "x86": "SCMP_ARCH_X86", "amd64": "SCMP_ARCH_X86_64", "x32": "SCMP_ARCH_X32", "arm": "SCMP_ARCH_ARM",
    "arm64": "SCMP_ARCH_AARCH64", "mips64": "SCMP_ARCH_MIPS64", "mips64n32": "SCMP_ARCH_MIPS64N32",
    "mipsel64": "SCMP_ARCH_MIPSEL64", "mips3l64n32": "SCMP_ARCH_MIPSEL64N32",
    "mipsle": "SCMP_ARCH_MIPSEL", "ppc": "SCMP_ARCH_PPC", "ppc64": "SCMP_ARCH_PPC64",
    "ppc64le": "SCMP_ARCH_PPC64LE", "s390": "SCMP_ARCH_S390", "s390x": "SCMP_ARCH_S390X",
    "riscv64": "SCMP_ARCH_RISCV64",
}
_MACHINE_TO_DOCKER = {"x86_64": "amd64", "aarch64": "arm64", "i686": "x86", "i386": "x86",
                      "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
_U64 = (1 << 64) - 1


def native_arch() -> str:
    """The host architecture in Docker's words (``amd64`` on x86_64)."""
    machine = platform.machine()
    return _MACHINE_TO_DOCKER.get(machine, machine)


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of ``release`` (default: the running kernel), e.g. ``6.1.0-13-amd64`` -> (6, 1)."""
    m = re.match(r"(\d+)\.(\d+)", release if release is not None else os.uname().release)
    if not m:
        raise ValueError(f"cannot parse kernel version {release!r}")
    return int(m.group(1)), int(m.group(2))


def _problems(profile: Any, source: str) -> list[Problem]:
    """Every problem in a Docker-format profile; empty when it is usable."""
    out: list[Problem] = []

    def bad(path: str, message: str) -> None:
        out.append(Problem(source, 0, 0, path, message))

    if not isinstance(profile, Mapping):
        bad("$", "a seccomp profile must be a JSON object")
        return out
    default = profile.get("defaultAction")
    if default not in ACTIONS:
        bad("$.defaultAction", f"unknown or missing action {default!r}")
    for key in ("defaultErrnoRet",):
        if key in profile and not _is_int(profile[key]):
            bad(f"$.{key}", "must be an integer")
    if profile.get("architectures") and profile.get("archMap"):
        bad("$", "'architectures' and 'archMap' were both given; use one")
    for i, a in enumerate(profile.get("architectures") or []):
        if a not in ARCHES:
            bad(f"$.architectures[{i}]", f"unknown architecture {a!r}")
    for i, entry in enumerate(profile.get("archMap") or []):
        if not isinstance(entry, Mapping) or entry.get("architecture") not in ARCHES:
            bad(f"$.archMap[{i}].architecture", "unknown or missing architecture")
            continue
        for j, a in enumerate(entry.get("subArchitectures") or []):
            if a not in ARCHES:
                bad(f"$.archMap[{i}].subArchitectures[{j}]", f"unknown architecture {a!r}")
    for i, f in enumerate(profile.get("flags") or []):
        if f not in FLAGS:
            bad(f"$.flags[{i}]", f"unknown flag {f!r}")
    syscalls = profile.get("syscalls") or []
    if not isinstance(syscalls, list):
        bad("$.syscalls", "must be a list")
        return out
    for i, call in enumerate(syscalls):
        _call_problems(call, f"$.syscalls[{i}]", bad)
    return out


def _call_problems(call: Any, where: str, bad: Any) -> None:
    if not isinstance(call, Mapping):
        bad(where, "must be an object")
        return
    if call.get("name") and call.get("names"):
        bad(where, "'name' and 'names' were both given; use one")
    names = call.get("names") or ([call["name"]] if call.get("name") else [])
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        bad(f"{where}.names", "must be a non-empty list of syscall names")
    if call.get("action") not in ACTIONS:
        bad(f"{where}.action", f"unknown or missing action {call.get('action')!r}")
    if "errnoRet" in call and call["errnoRet"] is not None and not _is_int(call["errnoRet"]):
        bad(f"{where}.errnoRet", "must be an integer")
    for j, arg in enumerate(call.get("args") or []):
        at = f"{where}.args[{j}]"
        if not isinstance(arg, Mapping):
            bad(at, "must be an object")
            continue
        if not _is_int(arg.get("index")) or not 0 <= arg["index"] <= 5:
            bad(f"{at}.index", "must be an integer 0..5")
        for key in ("value", "valueTwo"):
            if key in arg and not (_is_int(arg[key]) and 0 <= arg[key] <= _U64):
                bad(f"{at}.{key}", "must be an unsigned 64-bit integer")
        if arg.get("op") not in OPERATORS:
            bad(f"{at}.op", f"unknown or missing operator {arg.get('op')!r}")
    for side in ("includes", "excludes"):
        cond = call.get(side) or {}
        if not isinstance(cond, Mapping):
            bad(f"{where}.{side}", "must be an object")
            continue
        if cond.get("minKernel"):
            try:
                kernel_version(str(cond["minKernel"]))
            except ValueError:
                bad(f"{where}.{side}.minKernel", f"bad kernel version {cond['minKernel']!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(profile: Any, source: str = "<seccomp profile>") -> None:
    """Raise ManifestError listing every problem in a Docker-format profile."""
    problems = _problems(profile, source)
    if problems:
        raise ManifestError(problems)


def profile_to_oci(profile: Mapping[str, Any], capabilities: Collection[str], arch: str | None = None,
                   *, kernel: tuple[int, int] | None = None) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object for a Docker-format ``profile``.

    ``capabilities`` is the container's bounding set (``CAP_X`` names); ``arch`` the native architecture
    in Docker's words (default: this host); ``kernel`` (major, minor) for ``minKernel`` (default: the
    running kernel). Filtering follows moby: an entry is dropped if any excluded cap is held, the native
    arch is excluded, the kernel is at least an excluded minKernel, the arch is not among included
    arches, any included cap is missing, or the kernel is older than an included minKernel.
    """
    validate(profile)
    arch = arch or native_arch()
    kern = kernel or kernel_version()
    caps = {c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper() for c in capabilities}
    out: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    if _is_int(profile.get("defaultErrnoRet")):
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    arches = list(profile.get("architectures") or [])
    scmp_native = DOCKER_ARCH_TO_SCMP.get(arch)
    for entry in profile.get("archMap") or []:
        if entry["architecture"] == scmp_native:
            arches += [entry["architecture"], *(entry.get("subArchitectures") or [])]
            break
    if arches:
        out["architectures"] = arches
    if profile.get("flags"):
        out["flags"] = list(profile["flags"])
    syscalls: list[dict[str, Any]] = []
    for call in profile.get("syscalls") or []:
        if not _selected(call, caps, arch, kern):
            continue
        names = list(call.get("names") or [call["name"]])
        new: dict[str, Any] = {"names": names, "action": call["action"]}
        if _is_int(call.get("errnoRet")):
            new["errnoRet"] = call["errnoRet"]
        if call.get("args"):
            new["args"] = [{"index": a["index"], "value": a.get("value", 0),
                            "valueTwo": a.get("valueTwo", 0), "op": a["op"]} for a in call["args"]]
        syscalls.append(new)
    out["syscalls"] = syscalls
    return out


def _selected(call: Mapping[str, Any], caps: set[str], arch: str, kern: tuple[int, int]) -> bool:
    exc = call.get("excludes") or {}
    inc = call.get("includes") or {}
    if arch in (exc.get("arches") or []):
        return False
    if any(c in caps for c in exc.get("caps") or []):
        return False
    if exc.get("minKernel") and kern >= kernel_version(str(exc["minKernel"])):
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if any(c not in caps for c in inc.get("caps") or []):
        return False
    return not (inc.get("minKernel") and kern < kernel_version(str(inc["minKernel"])))


def default_profile() -> dict[str, Any]:
    """Our shipped default profile (orchestrator/data/seccomp-default.json), as a fresh dict."""
    text = resources.files("orchestrator").joinpath("data/seccomp-default.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def load_profile(ref: str) -> dict[str, Any] | None:
    """``default`` -> our shipped profile; ``unconfined`` -> None (no filter); otherwise a file path.

    The result is a validated Docker-format profile, ready for ``profile_to_oci``.
    """
    if ref == "unconfined":
        return None
    if ref == "default":
        profile = default_profile()
        validate(profile, "seccomp-default.json")
        return profile
    try:
        with open(ref) as f:
            profile = json.load(f)
    except OSError as exc:
        raise ManifestError([Problem(ref, 0, 0, "", f"cannot read seccomp profile: {exc.strerror}")]) \
            from exc
    except json.JSONDecodeError as exc:
        raise ManifestError([Problem(ref, exc.lineno, exc.colno, "",
                                     f"seccomp profile is not valid JSON: {exc.msg}")]) from exc
    validate(profile, ref)
    return dict(profile)
