"""Published ports and network isolation as nftables rules in our own table, and port-conflict checks.

Everything lives in ``table ip orchestrator`` (never touching other tables), with four base chains:

- ``prerouting`` (nat, dstnat) and ``output`` (nat, -100): ``HOST:CONTAINER/proto`` becomes a DNAT to the
  container's address. Without a host address the match is ``fib daddr type local`` (any address of this
  host, 127.0.0.1 included); with one, ``ip daddr <host_ip>``. The output chain is what makes access from
  the host itself work, including 127.0.0.1.
- ``postrouting`` (nat, srcnat): per non-internal network, masquerade of loopback-sourced packets leaving
  by its bridge (after an output DNAT to a container, the source is still 127.0.0.1; the bridge also gets
  ``route_localnet=1`` so the kernel routes such a packet at all, see ``bridge``) and of the subnet's
  traffic leaving by any other interface (egress).
- ``forward`` (filter, 0): isolation. Traffic routed from one of our bridges into another is dropped; an
  internal network's bridge forwards nothing in or out. Traffic within one bridge is bridged, not routed
  (with br_netfilter it passes this hook with iif == oif == the bridge, which the rules let through).

Every rule carries a comment (``naming``) so removal deletes exactly its owner's rules, by handle. The
``nft`` binary is run with argument lists (no shell): ``nft -f -`` for changes (one atomic batch),
``nft -j list table`` to read back.

``port_conflicts`` (plan time) reads listening sockets from /proc/net/{tcp,tcp6,udp,udp6} and compares
with ports already published by our rules.

Neighbours: ``naming`` (tags), ``manager`` (calls these); the rule text builders are pure and unit-tested.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import NetworkError

from .naming import network_tag, port_tag_prefix
from .specs import PortSpec, port_text

TABLE = "orchestrator"

_CHAINS = (
    ("prerouting", "type nat hook prerouting priority dstnat; policy accept;"),
    ("output", "type nat hook output priority -100; policy accept;"),
    ("postrouting", "type nat hook postrouting priority srcnat; policy accept;"),
    ("forward", "type filter hook forward priority 0; policy accept;"),
)


@dataclass(frozen=True)
class RuleRef:
    chain: str
    handle: int
    comment: str


@dataclass(frozen=True)
class Published:
    """A port published by one of our rules, parsed back from its comment."""

    container: str
    host_ip: str          # "" = every address
    host_port: int
    protocol: str


# -- rule text (pure) --------------------------------------------------------------------------------

def skeleton(table: str = TABLE) -> list[str]:
    """Idempotent commands creating the table and base chains (``add`` leaves existing ones alone)."""
    lines = [f"add table ip {table}"]
    lines += [f"add chain ip {table} {name} {{ {spec} }}" for name, spec in _CHAINS]
    return lines


def port_comment(container: str, port: PortSpec, address: str) -> str:
    """``port <container> <host_ip|*> <host_port>/<proto> <address>:<container_port>``: the whole mapping,
    so that an unchanged set of ports is recognised and not rewritten."""
    return (f"{port_tag_prefix(container)}{port.host_ip or '*'} {port.host_port}/{port.protocol} "
            f"{address}:{port.container_port}")


def parse_port_comment(comment: str) -> Published | None:
    parts = comment.split(" ")
    if len(parts) != 5 or parts[0] != "port" or "/" not in parts[3]:
        return None
    port, _, proto = parts[3].partition("/")
    if not port.isdigit():
        return None
    return Published(parts[1], "" if parts[2] == "*" else parts[2], int(port), proto)


def port_rules(container: str, address: str, ports: Sequence[PortSpec], table: str = TABLE) -> list[str]:
    lines: list[str] = []
    for port in ports:
        dest = "fib daddr type local" if not port.host_ip else f"ip daddr {port.host_ip}"
        match = f"{dest} {port.protocol} dport {port.host_port}"
        action = f"dnat to {address}:{port.container_port}"
        comment = f'comment "{port_comment(container, port, address)}"'
        for chain in ("prerouting", "output"):
            lines.append(f"add rule ip {table} {chain} {match} {action} {comment}")
    return lines


def network_rules(key: str, bridge: str, subnet: str, internal: bool, table: str = TABLE) -> list[str]:
    c = f'comment "{network_tag(key)}"'
    t = f"add rule ip {table}"
    if internal:
        return [f'{t} forward iifname "{bridge}" oifname != "{bridge}" drop {c}',
                f'{t} forward oifname "{bridge}" iifname != "{bridge}" drop {c}']
    return [
        # routed from this bridge into another of ours (name prefix): different networks stay apart
        f'{t} forward iifname "{bridge}" oifname "orc-*" oifname != "{bridge}" drop {c}',
        f'{t} postrouting ip saddr 127.0.0.0/8 oifname "{bridge}" masquerade {c}',
        f'{t} postrouting ip saddr {subnet} oifname != "{bridge}" masquerade {c}',
    ]


def parse_rules(listing: dict[str, Any]) -> list[RuleRef]:
    """Rules of ``nft -j list table`` output, with their chain, handle and comment."""
    out = []
    for item in listing.get("nftables", []):
        rule = item.get("rule") if isinstance(item, dict) else None
        if rule:
            out.append(RuleRef(str(rule["chain"]), int(rule["handle"]), str(rule.get("comment", ""))))
    return out


# -- the nft binary ----------------------------------------------------------------------------------

class Nft:
    """Our table through the ``nft`` command (argument lists; batches are atomic in the kernel)."""

    def __init__(self, table: str = TABLE, binary: str = "nft") -> None:
        self.table, self.binary = table, binary

    def _run(self, args: list[str], script: str | None = None) -> str:
        try:
            done = subprocess.run([self.binary, *args], input=script, capture_output=True, text=True,
                                  check=False, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NetworkError(f"nftables: cannot run {self.binary}: {exc}") from exc
        if done.returncode != 0:
            raise NetworkError(f"nftables: {' '.join(args)} failed in table ip {self.table}: "
                               f"{done.stderr.strip()}")
        return done.stdout

    def rules(self) -> list[RuleRef]:
        try:
            out = self._run(["-j", "list", "table", "ip", self.table])
        except NetworkError as exc:
            if "No such file or directory" in str(exc):
                return []
            raise
        try:
            return parse_rules(json.loads(out))
        except (ValueError, KeyError, TypeError) as exc:
            raise NetworkError(f"nftables: cannot parse the listing of table ip {self.table}: {exc}") from exc

    def replace(self, add: Sequence[str] = (), wanted: Iterable[str] = (), prefix: str = "") -> int:
        """In one atomic batch: delete the rules whose comment is in ``wanted`` or starts with ``prefix``
        (by handle), then add ``add``. Returns how many rules were deleted."""
        names = set(wanted)
        doomed = [r for r in self.rules()
                  if r.comment in names or (prefix and r.comment.startswith(prefix))]
        lines = [f"delete rule ip {self.table} {r.chain} handle {r.handle}" for r in doomed]
        if lines or add:
            self._run(["-f", "-"], "\n".join([*skeleton(self.table), *lines, *add]) + "\n")
        return len(doomed)

    def delete_table(self) -> None:
        """Remove the whole table (when our last network is gone). Idempotent."""
        if self._exists():
            self._run(["delete", "table", "ip", self.table])

    def _exists(self) -> bool:
        try:
            self._run(["list", "table", "ip", self.table])
        except NetworkError:
            return False
        return True

    def published(self) -> list[Published]:
        return [p for p in (parse_port_comment(r.comment) for r in self.rules() if r.chain == "output")
                if p is not None]


# -- conflicts (plan time) ---------------------------------------------------------------------------

def listening(proc_net: str = "/proc/net") -> set[tuple[str, str, int]]:
    """(protocol, address, port) of listening TCP and bound UDP sockets; address "" = wildcard."""
    found: set[tuple[str, str, int]] = set()
    for name, proto, state in (("tcp", "tcp", "0A"), ("tcp6", "tcp", "0A"),
                               ("udp", "udp", "07"), ("udp6", "udp", "07")):
        try:
            with open(f"{proc_net}/{name}") as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != state:
                continue
            hexaddr, _, hexport = fields[1].partition(":")
            found.add((proto, _decode_addr(hexaddr), int(hexport, 16)))
    return found


def _decode_addr(hexaddr: str) -> str:
    """/proc/net hex address (little-endian 32-bit words) -> text, "" for the wildcard."""
    raw = bytes.fromhex(hexaddr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    addr = ipaddress.ip_address(words)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return "" if addr.is_unspecified else str(addr)


def _clash(a: str, b: str) -> bool:
    return not a or not b or a == b


def port_conflicts(ports: Iterable[PortSpec], sockets: Iterable[tuple[str, str, int]] = (),
                   published: Iterable[Published] = (), owner: str = "") -> list[str]:
    """Human-readable conflicts of ``ports`` with listening sockets and with ports published by other
    containers than ``owner`` (pure: the caller passes ``listening()`` and ``Nft.published()``)."""
    socks, pubs = list(sockets), [p for p in published if p.container != owner]
    problems = []
    for port in ports:
        text = port_text(port)
        for proto, addr, num in socks:
            if proto == port.protocol and num == port.host_port and _clash(addr, port.host_ip):
                problems.append(f"port {text}: {proto} port {num} is already in use on {addr or '*'}")
                break
        for pub in pubs:
            if pub.protocol == port.protocol and pub.host_port == port.host_port and \
                    _clash(pub.host_ip, port.host_ip):
                problems.append(f"port {text}: already published by container {pub.container}")
                break
    return problems
