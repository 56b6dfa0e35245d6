"""Security policy data shared by the manifest checks and the runtime: which sysctls a container may set.

A neutral module (it imports no other ``orchestrator`` package) so that both the pure ``manifest``
layer (``manifest.checks``: a problem at file:line:col) and the kernel layer (``runtime.linux.spec``:
the last check before an init writes ``/proc/sys``) apply the very same rule without the manifest
importing the runtime. ``runtime.linux.security_defaults`` re-exports it.

The rule is runc's ``libcontainer/configs/validate`` (``sysctl``): only sysctls that are namespaced
may be set, and only when the container has its own copy of the namespace that holds them. Anything
else (``kernel.core_pattern``, ``vm.*``, ``fs.*`` but mqueue, ...) is a HOST knob: writing it from a
container changes the host (``kernel.core_pattern`` = "|prog" even runs prog as host root).
"""

from __future__ import annotations

# IPC-namespaced sysctls (runc's list): allowed with a private IPC namespace.
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


def sysctl_allowed(name: str, *, own_netns: bool, own_utsns: bool = True, own_ipcns: bool = True) -> bool:
    """True when ``name`` may be set for a container, by runc's rules.

    IPC sysctls need a private IPC namespace; ``net.*`` a private network namespace (otherwise it would
    change the host's network stack); ``kernel.hostname``/``kernel.domainname`` a private UTS
    namespace. Names may use ``/`` as separator, as in /proc/sys paths; a name that could escape
    /proc/sys (empty parts, ``..``) is never allowed.
    """
    key = name.replace("/", ".")
    if any(part in ("", "..") for part in key.split(".")):
        return False
    if key in ALLOWED_SYSCTLS or key.startswith(ALLOWED_SYSCTL_PREFIXES_IPC):
        return own_ipcns
    if key.startswith(ALLOWED_SYSCTL_PREFIXES_NET):
        return own_netns
    if key in ALLOWED_SYSCTLS_UTS:
        return own_utsns
    return False


def sysctl_refusal(name: str, *, own_netns: bool, own_utsns: bool = True, own_ipcns: bool = True) -> str:
    """Why ``name`` may not be set ("" when it may): the message both layers show."""
    if sysctl_allowed(name, own_netns=own_netns, own_utsns=own_utsns, own_ipcns=own_ipcns):
        return ""
    key = name.replace("/", ".")
    if sysctl_allowed(name, own_netns=True, own_utsns=True, own_ipcns=True):
        kind = ("network" if key.startswith(ALLOWED_SYSCTL_PREFIXES_NET)
                else "uts" if key in ALLOWED_SYSCTLS_UTS else "ipc")
        return (f'sysctl "{name}" needs the container\'s own {kind} namespace (it would change the '
                "host's otherwise)")
    return f'sysctl "{name}" is not namespaced: it would change the host (not in the allowed list)'
