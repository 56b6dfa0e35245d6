"""Pure parts of the network layer: names, hosts file, nftables rule text, port conflicts, DNS codec."""

from __future__ import annotations

import struct
from pathlib import Path

from orchestrator.manifest.model import Port
from orchestrator.runtime.linux.network import dns, hosts_file, resolv_conf
from orchestrator.runtime.linux.network.hosts import write_in_place
from orchestrator.runtime.linux.network.naming import IFNAMSIZ, bridge_name, veth_name
from orchestrator.runtime.linux.network.ports import (
    Published,
    _decode_addr,
    network_rules,
    parse_port_comment,
    parse_rules,
    port_comment,
    port_conflicts,
    port_rules,
)


def test_names_fit_ifnamsiz_and_are_stable() -> None:
    assert bridge_name("s/default") == bridge_name("s/default") != bridge_name("t/default")
    assert len(bridge_name("a" * 200)) <= IFNAMSIZ and len(veth_name("c" * 60, "s/n")) <= IFNAMSIZ
    assert veth_name("c", "s/a") != veth_name("c", "s/b")


def test_hosts_file() -> None:
    text = hosts_file([("10.0.0.3", ["db", "db-2"]), ("10.0.0.2", ["db", "db-1"]), ("10.0.0.4", ["web"])],
                      hostname="box")
    assert text.splitlines() == [
        "127.0.0.1\tlocalhost box",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "10.0.0.2\tdb db-1",
        "10.0.0.3\tdb-2",
        "10.0.0.4\tweb",
    ]
    assert resolv_conf(["10.0.0.1"]) == "nameserver 10.0.0.1\noptions ndots:0\n"


def test_write_in_place_keeps_the_inode(tmp_path: Path) -> None:
    target = tmp_path / "hosts"
    target.write_text("a much longer old content\n")
    inode = target.stat().st_ino
    write_in_place(str(target), "short\n")
    assert target.read_text() == "short\n" and target.stat().st_ino == inode


def test_port_rules_and_comments() -> None:
    p = Port(8080, 80)
    lines = port_rules("web-1", "10.89.0.2", [p, Port(53, 53, "udp", "127.0.0.1")])
    assert lines[0] == ('add rule ip orchestrator prerouting fib daddr type local tcp dport 8080 '
                        'dnat to 10.89.0.2:80 comment "port web-1 * 8080/tcp 10.89.0.2:80"')
    assert "output ip daddr 127.0.0.1 udp dport 53 dnat to 10.89.0.2:53" in lines[3]
    assert parse_port_comment(port_comment("web-1", p, "10.0.0.2")) == Published("web-1", "", 8080, "tcp")
    assert parse_port_comment("net s/a") is None
    assert len(network_rules("s/a", "orc-1", "10.0.0.0/24", internal=True)) == 2
    assert any("masquerade" in r for r in network_rules("s/a", "orc-1", "10.0.0.0/24", internal=False))


def test_parse_rules() -> None:
    listing = {"nftables": [{"metainfo": {}}, {"table": {"name": "orchestrator"}},
                            {"rule": {"chain": "output", "handle": 7, "comment": "port a * 1/tcp b:2"}},
                            {"rule": {"chain": "forward", "handle": 9}}]}
    refs = parse_rules(listing)
    assert [(r.chain, r.handle, r.comment) for r in refs] == [("output", 7, "port a * 1/tcp b:2"),
                                                             ("forward", 9, "")]


def test_port_conflicts() -> None:
    socks = [("tcp", "", 22), ("tcp", "127.0.0.1", 5432), ("udp", "10.0.0.1", 53)]
    pubs = [Published("other", "", 8080, "tcp"), Published("me", "", 9090, "tcp")]
    ports = [Port(22, 22), Port(5432, 5432, host_ip="10.0.0.9"), Port(5432, 5432, host_ip="127.0.0.1"),
             Port(53, 53, "tcp"), Port(8080, 80), Port(9090, 90), Port(53, 53, "udp")]
    found = port_conflicts(ports, socks, pubs, owner="me")
    assert found == [
        "port 22:22/tcp: tcp port 22 is already in use on *",
        "port 127.0.0.1:5432:5432/tcp: tcp port 5432 is already in use on 127.0.0.1",
        "port 8080:80/tcp: already published by container other",
        "port 53:53/udp: udp port 53 is already in use on 10.0.0.1",
    ]


def test_proc_net_addresses() -> None:
    assert _decode_addr("0100007F") == "127.0.0.1"
    assert _decode_addr("00000000") == ""
    assert _decode_addr("00000000000000000000000000000000") == ""
    assert _decode_addr("0000000000000000FFFF00000100007F") == "127.0.0.1"


def _query(name: str, qtype: int = dns.QTYPE_A, qid: int = 0x1234) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def _answers(reply: bytes) -> tuple[int, list[str]]:
    _qid, flags, _qd, an, _ns, _ar = struct.unpack("!HHHHHH", reply[:12])
    pos = reply.index(b"\0", 12) + 5
    out = []
    for _ in range(an):
        out.append(".".join(str(b) for b in reply[pos + 12:pos + 16]))
        pos += 16
    return flags & 0xF, out


def test_dns_round_robin_nxdomain_and_nodata() -> None:
    zone = dns.Zone({"db": ["10.0.0.2", "10.0.0.3"], "db-1": ["10.0.0.2"]})
    first, second = zone.respond(_query("db")), zone.respond(_query("DB"))
    assert first is not None and second is not None
    third = zone.respond(_query("db"))
    assert _answers(first) == (0, ["10.0.0.2"])
    assert _answers(second) == (0, ["10.0.0.3"])
    assert third is not None and _answers(third) == (0, ["10.0.0.2"])
    assert first[:2] == b"\x12\x34" and first[2] & 0x84 == 0x84          # same id, QR and AA
    missing = zone.respond(_query("nope"))
    assert missing is not None and _answers(missing) == (dns.RCODE_NXDOMAIN, [])
    aaaa = zone.respond(_query("db-1", qtype=28))
    assert aaaa is not None and _answers(aaaa) == (0, [])


def test_dns_malformed() -> None:
    zone = dns.Zone({})
    assert zone.respond(b"\x00") is None
    bad = zone.respond(b"\x00\x07" + b"\x00" * 10)                        # no question
    assert bad is not None and bad[:2] == b"\x00\x07" and bad[3] & 0xF == dns.RCODE_FORMERR
    truncated = zone.respond(_query("db")[:-3])
    assert truncated is not None and truncated[3] & 0xF == dns.RCODE_FORMERR
