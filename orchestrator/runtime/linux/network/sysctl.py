"""Read and write sysctls under /proc/sys (dotted names; interface names may contain dots, so the
per-interface form takes the interface separately).

Which sysctls we change, and why (restoring is ``manager``'s job, by its inventory):
- ``net.ipv4.ip_forward`` -> 1 while at least one non-internal network exists: containers' egress and
  published ports reached from other hosts are routed. If it was 0 before, the original value is recorded
  before writing, and written back when our last non-internal network is removed.
- ``net.ipv4.conf.<bridge>.route_localnet`` -> 1 on each non-internal bridge: lets a connection to a
  published port on 127.0.0.1 be DNATed out through the bridge (the postrouting masquerade then replaces
  the 127.0.0.1 source). Per bridge, so it disappears with the bridge: nothing to restore.
- bridge-nf-call-iptables is not touched: our rules work with br_netfilter loaded or not.
"""

from __future__ import annotations

from orchestrator.errors import NetworkError

PROC_SYS = "/proc/sys"


def _path(key: str) -> str:
    return f"{PROC_SYS}/{key.replace('.', '/')}"


def read(key: str) -> str:
    try:
        with open(_path(key)) as f:
            return f.read().strip()
    except OSError as exc:
        raise NetworkError(f"sysctl {key}: cannot read {_path(key)}: {exc}") from exc


def write(key: str, value: str) -> None:
    try:
        with open(_path(key), "w") as f:
            f.write(value)
    except OSError as exc:
        raise NetworkError(f"sysctl {key}: cannot write {value!r} to {_path(key)}: {exc}") from exc


def write_iface(family_key: str, ifname: str, name: str, value: str) -> None:
    """``net.ipv4.conf`` + ``ifname`` + ``name`` (the interface name is not split on dots)."""
    path = f"{PROC_SYS}/{family_key.replace('.', '/')}/{ifname}/{name}"
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise NetworkError(f"sysctl {family_key}.{ifname}.{name}: cannot write {path}: {exc}") from exc
