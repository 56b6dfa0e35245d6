"""Text of a container's /etc/hosts and /etc/resolv.conf (pure).

The minimum service discovery: the caller (runtime / reconciler) writes ``hosts_file`` into every
container and rewrites it when replicas come or go (``NetworkManager.hosts_entries`` gives the entries for
one container: every service and replica name of the networks it is on). ``resolv_conf`` points the
container at the DNS server (``dns.DnsServer``) on its first network's gateway when one runs.

Neighbours: ``manager`` computes the entries; nothing here touches the kernel (``write_in_place`` only
writes the file the caller names).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from orchestrator.errors import NetworkError

HostsEntry = tuple[str, Sequence[str]]      # (address, names)

_PREAMBLE = (
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
)


def hosts_file(entries: Iterable[HostsEntry], hostname: str = "") -> str:
    """/etc/hosts: localhost lines, then one line per address with its names (sorted, duplicates merged,
    a name listed once: for a service name on several replicas the first address by sort order wins in
    libc, so the order is made deterministic rather than random)."""
    names_by_addr: dict[str, list[str]] = {}
    seen: set[str] = set()
    for address, names in sorted(entries, key=lambda e: (_addr_key(e[0]), list(e[1]))):
        for name in names:
            if not name or name in seen:
                continue
            seen.add(name)
            names_by_addr.setdefault(address, []).append(name)
    lines = list(_PREAMBLE)
    if hostname and hostname not in seen:
        lines[0] += f" {hostname}"
    lines += [f"{addr}\t{' '.join(names)}" for addr, names in names_by_addr.items()]
    return "\n".join(lines) + "\n"


def resolv_conf(nameservers: Sequence[str], search: Sequence[str] = (),
                options: Sequence[str] = ("ndots:0",)) -> str:
    lines = [f"nameserver {ns}" for ns in nameservers]
    if search:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def write_in_place(path: str, text: str) -> None:
    """Rewrite ``path`` keeping its inode: a container's /etc/hosts is often a file bind-mounted from
    the host, and replacing it by rename would leave the container looking at the old inode."""
    try:
        with open(path, "r+" if os.path.exists(path) else "w") as f:
            f.seek(0)
            f.write(text)
            f.truncate()
    except OSError as exc:
        raise NetworkError(f"hosts: cannot write {path}: {exc}") from exc


def _addr_key(address: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in address.split("."))
    except ValueError:
        return (1 << 16,)
