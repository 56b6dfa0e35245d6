"""Text of a container's /etc/hosts and /etc/resolv.conf, and a network's DNS zone (pure).

The minimum service discovery: the caller (``reconcile.network``) writes ``container_hosts`` into every
container's bundle (bind-mounted on /etc/hosts) and rewrites it in place on every reconcile pass in
which it changed (every service and replica name of the networks the container is on). ``resolv_conf``
points the container at the DNS server (``dns.DnsServer``) on its first network's gateway when one runs;
``name_records`` is what that server answers for one network.

Neighbours: ``inventory`` rows in (``manager.hosts_entries`` for the simple form); nothing here touches
the kernel (``write_in_place`` only writes the file the caller names).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence

from orchestrator.errors import NetworkError

from .inventory import AttachmentRow

HostsEntry = tuple[str, Sequence[str]]      # (address, names)

_PREAMBLE = (
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
)


def name_records(rows: Iterable[AttachmentRow]) -> dict[str, list[str]]:
    """The DNS zone of one network from its attachments: each alias and container name -> addresses,
    healthy ones only unless none of them is healthy (so a lone replica's own name always resolves)."""
    healthy: dict[str, list[str]] = {}
    every: dict[str, list[str]] = {}
    for a in rows:
        for name in (*a.aliases, a.container):
            every.setdefault(name, []).append(a.address)
            if a.healthy:
                healthy.setdefault(name, []).append(a.address)
    return {name: healthy.get(name) or addrs for name, addrs in every.items()}


def hosts_file(entries: Iterable[HostsEntry], hostname: str = "", *, every_address: bool = False) -> str:
    """/etc/hosts: localhost lines, then one line per address with its names (sorted, duplicates merged).
    By default a name is listed once: for a service name on several replicas the first address by sort
    order wins in libc, so the order is made deterministic rather than random. ``every_address`` lists
    a name under each of its addresses (a getaddrinfo that reads every line returns them all; the
    others still get the first one, deterministically)."""
    names_by_addr: dict[str, list[str]] = {}
    seen: set[str] = set()
    for address, names in sorted(entries, key=lambda e: (_addr_key(e[0]), list(e[1]))):
        for name in names:
            if not name or (name in seen and not every_address) or name in names_by_addr.get(address, ()):
                continue
            seen.add(name)
            names_by_addr.setdefault(address, []).append(name)
    lines = list(_PREAMBLE)
    if hostname and hostname not in seen:
        lines[0] += f" {hostname}"
    lines += [f"{addr}\t{' '.join(names)}" for addr, names in names_by_addr.items()]
    return "\n".join(lines) + "\n"


def container_hosts(container: str, rows: Iterable[AttachmentRow], hostname: str = "") -> str:
    """The whole /etc/hosts of ``container`` from the attachment rows of every container (the network
    inventory): every name of every container on the networks ``container`` is on. A name carried by
    several containers of a network (a service name) lists the addresses of its HEALTHY carriers only,
    or of all of them when none is healthy (as ``manager.dns_records``), each under its own line; a
    replica name and a container id have one carrier and so always resolve. ``hostname`` goes on the
    container's own addresses (on 127.0.0.1 when it has none, e.g. network ``none``)."""
    return hosts_texts(rows, {container: hostname})[container]


def hosts_texts(rows: Iterable[AttachmentRow], hostnames: Mapping[str, str]) -> dict[str, str]:
    """``container_hosts`` for every container of ``hostnames`` (container -> hostname) at once: each
    network's names are worked out and sorted once (a refresh of a 50-container stack on every pass
    must stay a few ms)."""
    by_net: dict[str, list[AttachmentRow]] = {}
    mine: dict[str, list[AttachmentRow]] = {}
    for r in rows:
        by_net.setdefault(r.network, []).append(r)
        mine.setdefault(r.container, []).append(r)
    net_items: dict[str, list[_Item]] = {}
    for net, members in by_net.items():
        carriers: dict[str, list[AttachmentRow]] = {}
        for r in members:
            for name in (*r.aliases, r.container):
                carriers.setdefault(name, []).append(r)
        net_items[net] = sorted((_addr_key(r.address), r.address, name) for name, rs in carriers.items()
                                for r in ([r for r in rs if r.healthy] or rs))
    out: dict[str, str] = {}
    for container, hostname in hostnames.items():
        own = mine.get(container, [])
        items = [i for r in own for i in net_items[r.network]]
        if hostname:
            items += [(_addr_key(r.address), r.address, hostname) for r in own]
        # already sorted runs: timsort merges them in linear time, comparing tuples in C
        out[container] = _render(sorted(items), hostname)
    return out


_Item = tuple[tuple[int, ...], str, str]       # (sort key of the address, address, name)


def _render(items: Iterable[_Item], hostname: str) -> str:
    """hosts_file(every_address=True) over sorted single-name items."""
    names_by_addr: dict[str, list[str]] = {}
    seen: set[str] = set()
    for _key, address, name in items:
        names = names_by_addr.setdefault(address, [])
        if name and name not in names:
            names.append(name)
            seen.add(name)
    lines = list(_PREAMBLE)
    if hostname and hostname not in seen:
        lines[0] += f" {hostname}"
    lines += [f"{addr}\t{' '.join(names)}" for addr, names in names_by_addr.items() if names]
    return "\n".join(lines) + "\n"


def hostname_file(hostname: str) -> str:
    return f"{hostname}\n"


def resolv_nameservers(path: str = "/etc/resolv.conf") -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every parseable ``nameserver`` of a resolv.conf, in order; [] when it cannot be read."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    with contextlib.suppress(ValueError):
                        out.append(ipaddress.ip_address(parts[1]))
    except OSError:
        return []
    return out


def host_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """The host's nameservers a container can use: not the loopback ones (a container's loopback is
    its own, e.g. systemd-resolved's 127.0.0.53 is not there)."""
    return [str(ip) for ip in resolv_nameservers(path) if not ip.is_loopback]


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
    the host, and replacing it by rename would leave the container looking at the old inode. (A reader
    in the container may see a half-written file for a moment; the files are a few hundred bytes and
    written in one ``write``.)"""
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
