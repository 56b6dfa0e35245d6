"""Security defaults every container starts from, as plain constants (and one pure sysctl check).

Imported by ``runtime.oci`` (service -> OCI config), ``runtime.linux.rootfs`` (masked / read-only paths),
``runtime.linux.capabilities`` (the default capability set) and the manifest checks (sysctl allowlist).
Nothing here touches the kernel. The lists follow Docker/moby (``oci/defaults.go``, ``oci/caps``) and
runc (``libcontainer/configs/validate``) so that a service behaves the same here as under those runtimes.
"""

from __future__ import annotations

from typing import NamedTuple

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

# runc's validation list: these sysctls are namespaced (IPC ns) and therefore safe to set per container.
ALLOWED_SYSCTLS: frozenset[str] = frozenset(
    {
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    }
)
# Prefixes allowed with the IPC namespace (fs.mqueue.*) or only with the container's own net namespace.
ALLOWED_SYSCTL_PREFIXES_IPC: tuple[str, ...] = ("fs.mqueue.",)
ALLOWED_SYSCTL_PREFIXES_NET: tuple[str, ...] = ("net.",)
# Allowed only with the container's own UTS namespace.
ALLOWED_SYSCTLS_UTS: frozenset[str] = frozenset({"kernel.domainname", "kernel.hostname"})


def sysctl_allowed(name: str, *, own_netns: bool, own_utsns: bool = True) -> bool:
    """True when ``name`` may be set for a container, by runc's rules.

    ``net.*`` needs a private network namespace (otherwise it would change the host's network stack);
    ``kernel.hostname``/``kernel.domainname`` need a private UTS namespace. Names may use ``/`` as
    separator, as in /proc/sys paths.
    """
    key = name.replace("/", ".")
    if key in ALLOWED_SYSCTLS or key.startswith(ALLOWED_SYSCTL_PREFIXES_IPC):
        return True
    if key.startswith(ALLOWED_SYSCTL_PREFIXES_NET):
        return own_netns
    if key in ALLOWED_SYSCTLS_UTS:
        return own_utsns
    return False


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
