"""A tiny authoritative DNS server for container names, listening only on bridge gateway addresses.

Each stack network has a *zone*: name -> addresses (service names map to their healthy replicas, replica
names to their one address). A container's resolv.conf names its first network's gateway, so a query that
arrives on gateway G is answered from G's zone only: containers resolve the names of their own networks
and nothing else. An A query gets ONE address, the next one in turn (round robin), TTL 0 so clients do
not cache: answering with the whole rotated list does not spread load, because glibc's getaddrinfo sorts
the list (RFC 6724 rule 9, longest matching prefix, also for IPv4) and every client then picks the same
replica; other query types for a known name get an empty NOERROR answer (so that glibc's
parallel AAAA query does not fail the lookup); unknown single-label names get NXDOMAIN; unknown dotted
names are relayed to the host's upstream resolvers when any are configured (else NXDOMAIN).

``encode``/``decode`` are pure (unit tests); ``DnsServer`` runs one thread with a selector over one UDP
socket per zone, started by ``manager.NetworkManager`` when built with ``dns=True`` (a long-running
controller). A one-shot ``apply`` relies on the hosts file (``hosts.hosts_file``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestrator.errors import NetworkError
from orchestrator.runtime.linux.network.hosts import resolv_nameservers

QTYPE_A = 1
QCLASS_IN = 1
RCODE_OK, RCODE_FORMERR, RCODE_NXDOMAIN, RCODE_NOTIMP = 0, 1, 3, 4
DNS_PORT = 53


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    name: str            # lowercase, no trailing dot
    qtype: int
    qclass: int
    question: bytes      # the raw question section, echoed in the reply


def decode(packet: bytes) -> Query:
    """Parse a query with exactly one question. Raises ValueError on anything malformed."""
    if len(packet) < 12:
        raise ValueError("short header")
    qid, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if flags & 0x8000:
        raise ValueError("not a query")
    if qdcount != 1:
        raise ValueError("expected one question")
    labels: list[str] = []
    pos = 12
    while True:
        if pos >= len(packet):
            raise ValueError("truncated name")
        length = packet[pos]
        pos += 1
        if length == 0:
            break
        if length & 0xC0:
            raise ValueError("compressed name in question")
        label = packet[pos:pos + length]
        if len(label) != length:
            raise ValueError("truncated label")
        labels.append(label.decode("ascii", "replace").lower())
        pos += length
    if pos + 4 > len(packet):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack("!HH", packet[pos:pos + 4])
    return Query(qid, flags, ".".join(labels), qtype, qclass, packet[12:pos + 4])


def encode(query: Query, rcode: int, addresses: Sequence[str] = ()) -> bytes:
    """The reply: QR and AA set, the client's RD echoed, RA clear (we do not recurse)."""
    opcode = query.flags & 0x7800
    flags = 0x8000 | opcode | 0x0400 | (query.flags & 0x0100) | (rcode & 0xF)
    header = struct.pack("!HHHHHH", query.id, flags, 1, len(addresses), 0, 0)
    answers = b"".join(
        struct.pack("!HHHIH", 0xC00C, QTYPE_A, QCLASS_IN, 0, 4) + ipaddress.IPv4Address(a).packed
        for a in addresses)
    return header + query.question + answers


def error_reply(packet: bytes, rcode: int) -> bytes | None:
    """A header-only reply for a packet we could not parse, or None when not even the id is there."""
    if len(packet) < 12:
        return None
    qid, flags = struct.unpack("!HH", packet[:4])
    return struct.pack("!HHHHHH", qid, 0x8000 | (flags & 0x7900) | rcode, 0, 0, 0, 0)


class Zone:
    """Names of one network, with a round-robin cursor per name (kept when the records are updated)."""

    def __init__(self, records: Mapping[str, Sequence[str]]) -> None:
        self.records: dict[str, list[str]] = {}
        self._cursor: dict[str, itertools.count[int]] = {}
        self.update(records)

    def update(self, records: Mapping[str, Sequence[str]]) -> None:
        self.records = {n.lower().rstrip("."): list(a) for n, a in records.items()}

    def knows(self, query: Query) -> bool:
        """Ours to answer: a name of the zone, or any single-label name (those never go upstream)."""
        return query.name in self.records or "." not in query.name

    def answer(self, query: Query) -> bytes:
        if query.flags & 0x7800:
            return encode(query, RCODE_NOTIMP)
        addresses = self.records.get(query.name)
        if addresses is None:
            return encode(query, RCODE_NXDOMAIN)
        if query.qtype != QTYPE_A or query.qclass != QCLASS_IN or not addresses:
            return encode(query, RCODE_OK)
        turn = next(self._cursor.setdefault(query.name, itertools.count())) % len(addresses)
        return encode(query, RCODE_OK, [addresses[turn]])

    def respond(self, packet: bytes) -> bytes | None:
        try:
            query = decode(packet)
        except ValueError:
            return error_reply(packet, RCODE_FORMERR)
        return self.answer(query)


def host_resolvers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """IPv4 nameservers of the host's resolv.conf, as upstreams (loopback ones work: we run on the host)."""
    return [(str(ip), DNS_PORT) for ip in resolv_nameservers(path) if ip.version == 4]


@dataclass(eq=False)
class _Forwarded:
    """A query relayed upstream: the reply goes back to ``peer`` from the socket of ``address``."""

    sock: socket.socket
    address: str
    peer: tuple[str, int]
    deadline: float


class DnsServer:
    """One thread answering on every zone's listen address (UDP port ``port``).

    Dotted names that no zone knows are relayed to ``upstreams`` (the host's resolvers, e.g. from its
    /etc/resolv.conf; taken in turn per query) and the reply passed back as is; without upstreams they get
    NXDOMAIN. A relayed query without a reply in ``upstream_timeout_s`` is dropped (the client retries).
    """

    def __init__(self, port: int = DNS_PORT, upstreams: Sequence[tuple[str, int]] = (),
                 upstream_timeout_s: float = 2.0) -> None:
        self.port = port
        self.upstreams = list(upstreams)
        self.upstream_timeout_s = upstream_timeout_s
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._zones: dict[str, Zone] = {}
        self._socks: dict[str, socket.socket] = {}
        self._pending: list[_Forwarded] = []
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="orchestrator-dns", daemon=True)
            self._thread.start()

    def set_zone(self, address: str, records: Mapping[str, Sequence[str]]) -> None:
        """Serve ``records`` on ``address`` (a gateway; the bridge must already carry it)."""
        with self._lock:
            if address not in self._socks:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    sock.bind((address, self.port))
                except OSError as exc:
                    sock.close()
                    raise NetworkError(f"dns: cannot listen on {address}:{self.port}: {exc}") from exc
                sock.setblocking(False)
                self._socks[address] = sock
                self._sel.register(sock, selectors.EVENT_READ, address)
            if address in self._zones:
                self._zones[address].update(records)
            else:
                self._zones[address] = Zone(records)
        os.write(self._wake_w, b"x")

    def remove_zone(self, address: str) -> None:
        with self._lock:
            self._zones.pop(address, None)
            sock = self._socks.pop(address, None)
            if sock is not None:
                self._sel.unregister(sock)
                sock.close()

    def addresses(self) -> list[str]:
        with self._lock:
            return sorted(self._socks)

    def stop(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for address in list(self._socks):
            self.remove_zone(address)
        for fwd in self._pending:
            fwd.sock.close()
        self._pending.clear()
        self._sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        while not self._stop:
            for key, _mask in self._sel.select(timeout=0.5):
                if key.data is None:
                    os.read(self._wake_r, 4096)
                elif isinstance(key.data, _Forwarded):
                    self._relay_back(key.data)
                else:
                    self._serve_one(key.data)
            self._expire(time.monotonic())

    def _serve_one(self, address: str) -> None:
        with self._lock:
            sock, zone = self._socks.get(address), self._zones.get(address)
            if sock is None or zone is None:
                return
            try:
                packet, peer = sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            try:
                query = decode(packet)
            except ValueError:
                reply = error_reply(packet, RCODE_FORMERR)
            else:
                if self.upstreams and not zone.knows(query):
                    self._forward(packet, address, peer)
                    return
                reply = zone.answer(query)
            if reply is not None:
                with contextlib.suppress(OSError):   # the client went away; UDP has nobody to tell
                    sock.sendto(reply, peer)

    def _forward(self, packet: bytes, address: str, peer: tuple[str, int]) -> None:
        upstream = self.upstreams[next(self._turn) % len(self.upstreams)]
        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            up.setblocking(False)
            up.connect(upstream)
            up.send(packet)
        except OSError:
            up.close()
            return
        fwd = _Forwarded(up, address, peer, time.monotonic() + self.upstream_timeout_s)
        self._pending.append(fwd)
        self._sel.register(up, selectors.EVENT_READ, fwd)

    def _relay_back(self, fwd: _Forwarded) -> None:
        with self._lock:
            try:
                reply = fwd.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                reply = b""            # e.g. ICMP port unreachable from the upstream
            self._drop(fwd)
            sock = self._socks.get(fwd.address)
            if reply and sock is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(reply, fwd.peer)

    def _expire(self, now: float) -> None:
        with self._lock:
            for fwd in [f for f in self._pending if f.deadline < now]:
                self._drop(fwd)

    def _drop(self, fwd: _Forwarded) -> None:
        self._pending.remove(fwd)
        self._sel.unregister(fwd.sock)
        fwd.sock.close()
