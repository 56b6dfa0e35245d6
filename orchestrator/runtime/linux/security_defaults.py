"""Security defaults every container starts from, as plain constants (and one pure sysctl check).

Imported by ``runtime.oci`` (service -> OCI config), ``runtime.linux.rootfs`` (masked / read-only paths),
``runtime.linux.capabilities`` (the default capability set) and ``runtime.linux.spec`` (sysctl allowlist).
Nothing here touches the kernel; the sysctl allowlist is re-exported from the neutral
``orchestrator.policy`` (the manifest checks use it too). The lists follow Docker/moby
(``oci/defaults.go``, ``oci/caps``) and runc (``libcontainer/configs/validate``) so that a service
behaves the same here as under those runtimes.
"""

from __future__ import annotations

from typing import NamedTuple

from orchestrator.policy import (
    ALLOWED_SYSCTL_PREFIXES_IPC,
    ALLOWED_SYSCTL_PREFIXES_NET,
    ALLOWED_SYSCTLS,
    ALLOWED_SYSCTLS_UTS,
    sysctl_allowed,
    sysctl_refusal,
)

__all__ = [
    "ALLOWED_SYSCTLS", "ALLOWED_SYSCTLS_UTS", "ALLOWED_SYSCTL_PREFIXES_IPC", "ALLOWED_SYSCTL_PREFIXES_NET",
    "DEFAULT_CAPABILITIES", "DEFAULT_NO_NEW_PRIVILEGES", "DEFAULT_RLIMITS", "DEFAULT_SECCOMP_PROFILE",
    "MASKED_PATHS", "READONLY_PATHS", "Rlimit", "sysctl_allowed", "sysctl_refusal",
]

# Docker's default 14. Everything else (SYS_ADMIN, NET_ADMIN, SYS_PTRACE, SYS_MODULE, ...) must be added
# explicitly with ``cap_add``.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

# Paths under /proc and /sys that leak host information or give host control: bind-mounted over with
# /dev/null (files) or an empty read-only tmpfs (directories). Docker's list plus powercap (RAPL energy
# counters are a side channel, CVE-2020-8694).
MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

# Remounted read-only inside the container: writable kernel knobs that are not namespaced.
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

class Rlimit(NamedTuple):
    """One OCI ``process.rlimits`` entry."""

    type: str
    soft: int
    hard: int


# Applied unless the manifest overrides them. NOFILE: a soft limit of 1024 keeps select()-based programs
# safe, the hard limit lets servers raise it themselves (systemd's choice since v240). NPROC is left to
# the pids cgroup, which counts per container rather than per uid across the host.
DEFAULT_RLIMITS: tuple[Rlimit, ...] = (Rlimit("RLIMIT_NOFILE", 1024, 524288),)

# The seccomp profile used when a service says nothing (see ``seccomp.load_profile``).
DEFAULT_SECCOMP_PROFILE = "default"
# no_new_privs is on unless a service explicitly opts out.
DEFAULT_NO_NEW_PRIVILEGES = True
