"""Fixtures for the network integration tests: namespaces and a NetworkManager on a fresh SQLite store,
both torn down completely (the autouse leak check verifies links and netns)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from netfixtures import Namespaces

from orchestrator.runtime.linux.network import NetworkManager
from orchestrator.runtime.linux.network import sysctl as net_sysctl


@pytest.fixture
def nss(tmp_path: Path) -> Iterator[Namespaces]:
    n = Namespaces(tmp_path)
    try:
        yield n
    finally:
        n.close()


@pytest.fixture
def stack() -> str:
    return f"t{uuid.uuid4().hex[:6]}"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def manager(db: Path) -> Iterator[NetworkManager]:
    forward_before = net_sysctl.read("net.ipv4.ip_forward")
    mgr = NetworkManager(sqlite3.connect(db))
    try:
        yield mgr
    finally:
        mgr.gc([], known_networks=[])
        mgr.close()
    assert net_sysctl.read("net.ipv4.ip_forward") == forward_before, "ip_forward not restored"
