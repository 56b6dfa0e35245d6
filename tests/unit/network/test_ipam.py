"""IPAM in SQLite: subnets from the pool avoiding routes, stable addresses, no collision, release."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from orchestrator.errors import NetworkError
from orchestrator.store.ipam import Ipam


@pytest.fixture
def ipam(tmp_path: Path) -> Ipam:
    return Ipam(sqlite3.connect(tmp_path / "s.db"))


def test_subnets_come_from_the_pool_avoiding_routes_and_each_other(ipam: Ipam) -> None:
    a = ipam.allocate_subnet("s/a", avoid=["10.89.0.0/24", "192.168.1.0/24"])
    b = ipam.allocate_subnet("s/b", avoid=["10.89.0.0/24"])
    assert (a.subnet, a.gateway) == ("10.89.1.0/24", "10.89.1.1")
    assert b.subnet == "10.89.2.0/24"
    assert ipam.allocate_subnet("s/a") == a                    # idempotent


def test_requested_subnet_is_checked(ipam: Ipam) -> None:
    ipam.allocate_subnet("s/a", "172.30.0.0/16")
    with pytest.raises(NetworkError, match=r"overlaps 172\.30\.0\.0/16"):
        ipam.allocate_subnet("s/b", "172.30.5.0/24")
    with pytest.raises(NetworkError, match="host route"):
        ipam.allocate_subnet("s/c", "192.168.0.0/24", avoid=["192.168.0.0/16"])
    with pytest.raises(NetworkError, match="cannot change"):
        ipam.allocate_subnet("s/a", "172.31.0.0/16")


def test_pool_exhaustion(tmp_path: Path) -> None:
    ipam = Ipam(sqlite3.connect(tmp_path / "s.db"), pool="10.1.0.0/23", prefixlen=24)
    ipam.allocate_subnet("s/a")
    ipam.allocate_subnet("s/b")
    with pytest.raises(NetworkError, match="exhausted"):
        ipam.allocate_subnet("s/c")


def test_addresses_are_stable_and_unique(ipam: Ipam) -> None:
    ipam.allocate_subnet("s/a", "10.5.0.0/24")
    one, two = ipam.allocate("s/a", "db-1"), ipam.allocate("s/a", "db-2")
    assert (one, two) == ("10.5.0.2", "10.5.0.3")
    assert ipam.allocate("s/a", "db-1") == one                # idempotent
    ipam.release("db-1")
    assert ipam.address("s/a", "db-1") is None
    assert ipam.allocate("s/a", "web-1") == "10.5.0.4"        # fresh address preferred over db-1's hint
    assert ipam.allocate("s/a", "db-1") == one                # same name, same address after restart
    assert ipam.addresses("s/a") == {"db-1": one, "db-2": two, "web-1": "10.5.0.4"}


def test_hints_are_reused_only_when_the_subnet_is_full(ipam: Ipam) -> None:
    ipam.allocate_subnet("s/a", "10.5.0.0/29")                # hosts .1-.6, gateway .1
    for i in range(5):
        ipam.allocate("s/a", f"c{i}")
    with pytest.raises(NetworkError, match="no free address"):
        ipam.allocate("s/a", "late")
    ipam.release("c2")
    assert ipam.allocate("s/a", "late") == "10.5.0.4"
    with pytest.raises(NetworkError, match="no free address"):   # c2's hint was given away: no collision
        ipam.allocate("s/a", "c2")


def test_allocation_survives_a_new_connection(tmp_path: Path) -> None:
    first = Ipam(sqlite3.connect(tmp_path / "s.db"))
    first.allocate_subnet("s/a")
    addr = first.allocate("s/a", "x")
    again = Ipam(sqlite3.connect(tmp_path / "s.db"))           # committed before any veth exists
    assert again.address("s/a", "x") == addr
    assert again.allocate("s/a", "y") != addr


def test_release_network_forgets_everything(ipam: Ipam) -> None:
    ipam.allocate_subnet("s/a")
    ipam.allocate("s/a", "x")
    ipam.release_network("s/a")
    ipam.release_network("s/a")
    assert ipam.subnet("s/a") is None and ipam.addresses("s/a") == {} and ipam.owners() == set()


def test_nested_in_a_callers_transaction(ipam: Ipam) -> None:
    ipam.conn.execute("BEGIN")
    ipam.allocate_subnet("s/a")
    ipam.conn.execute("ROLLBACK")
    assert ipam.subnet("s/a") is None
