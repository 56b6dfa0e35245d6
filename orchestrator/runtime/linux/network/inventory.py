"""What the network layer created, in the state store (SQLite): the basis of cleanup and garbage
collection (we never delete kernel objects by matching names on the host, only what is recorded here).

Tables (created on first use in the connection the caller passes):
- ``net_networks``: one row per stack network: key ``stack/name``, bridge, subnet, gateway, internal.
  Written before the bridge is created.
- ``net_attachments``: one row per (container, network): host veth name, interface name inside the
  container, address, DNS aliases, health. Written (in the same transaction as the IPAM allocation)
  before the veth is created, so a crash leaves a row that ``detach``/``gc`` find.
- ``net_sysctls``: host sysctls we changed, with their original value, restored when we are done.
- ``net_doomed``: host ends of veths of detached containers whose deletion is handed to ``reaper``
  (``NetworkManager.detach(wait=False)``): written in the transaction that forgets the attachment,
  forgotten once the link is gone, so a crash in between leaves a row ``flush``/``gc`` finish.

Neighbours: ``manager`` is the only user; ``store.ipam`` holds the addresses themselves.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from orchestrator.errors import StateError

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS net_networks (
           key TEXT PRIMARY KEY, stack TEXT NOT NULL, name TEXT NOT NULL, bridge TEXT NOT NULL,
           subnet TEXT NOT NULL, gateway TEXT NOT NULL, internal INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS net_attachments (
           container TEXT NOT NULL, network TEXT NOT NULL, host_ifname TEXT NOT NULL,
           ifname TEXT NOT NULL, address TEXT NOT NULL, aliases TEXT NOT NULL,
           healthy INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (container, network))""",
    """CREATE TABLE IF NOT EXISTS net_sysctls (key TEXT PRIMARY KEY, original TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS net_doomed (host_ifname TEXT PRIMARY KEY, container TEXT NOT NULL)""",
)


@dataclass(frozen=True)
class NetworkRow:
    key: str
    stack: str
    name: str
    bridge: str
    subnet: str
    gateway: str
    internal: bool


@dataclass(frozen=True)
class AttachmentRow:
    container: str
    network: str
    host_ifname: str
    ifname: str
    address: str
    aliases: tuple[str, ...]
    healthy: bool


def _row(r: tuple[str, str, str, str, str, str, int]) -> NetworkRow:
    return NetworkRow(key=r[0], stack=r[1], name=r[2], bridge=r[3], subnet=r[4], gateway=r[5],
                      internal=bool(r[6]))


def read_attachments(conn: sqlite3.Connection) -> list[AttachmentRow]:
    """Every attachment row, read-only: [] when the network layer never ran (no table), so a caller on
    a no-op pass neither creates tables nor writes anything."""
    try:
        return Inventory.select_attachments(conn)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise StateError(f"network inventory: cannot read attachments: {exc}") from exc


def read_networks(conn: sqlite3.Connection) -> list[NetworkRow]:
    """Every network row, read-only ([] without the table, as ``read_attachments``)."""
    try:
        rows = conn.execute("SELECT key, stack, name, bridge, subnet, gateway, internal FROM net_networks "
                            "ORDER BY key").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise StateError(f"network inventory: cannot read networks: {exc}") from exc
    return [_row(r) for r in rows]


def read_doomed(conn: sqlite3.Connection) -> list[str]:
    """Host ends of veths handed to a reaper and not known to be deleted, read-only ([] without the
    table, as ``read_attachments``)."""
    try:
        return [str(r[0]) for r in conn.execute("SELECT host_ifname FROM net_doomed ORDER BY 1")]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise StateError(f"network inventory: cannot read doomed links: {exc}") from exc


class Inventory:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        try:
            for stmt in _SCHEMA:
                conn.execute(stmt)
        except sqlite3.Error as exc:
            raise StateError(f"network inventory: cannot create tables: {exc}") from exc

    # networks
    def network(self, key: str) -> NetworkRow | None:
        row = self.conn.execute("SELECT key, stack, name, bridge, subnet, gateway, internal "
                                "FROM net_networks WHERE key = ?", (key,)).fetchone()
        return _row(row) if row else None

    def networks(self) -> list[NetworkRow]:
        rows = self.conn.execute("SELECT key, stack, name, bridge, subnet, gateway, internal "
                                 "FROM net_networks ORDER BY key")
        return [_row(r) for r in rows]

    def put_network(self, row: NetworkRow) -> None:
        self.conn.execute("INSERT OR REPLACE INTO net_networks VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (row.key, row.stack, row.name, row.bridge, row.subnet, row.gateway,
                           int(row.internal)))

    def delete_network(self, key: str) -> None:
        self.conn.execute("DELETE FROM net_networks WHERE key = ?", (key,))

    # attachments
    def attachments(self, container: str | None = None, network: str | None = None) -> list[AttachmentRow]:
        return self.select_attachments(self.conn, container, network)

    @staticmethod
    def select_attachments(conn: sqlite3.Connection, container: str | None = None,
                           network: str | None = None) -> list[AttachmentRow]:
        sql = ("SELECT container, network, host_ifname, ifname, address, aliases, healthy "
               "FROM net_attachments WHERE 1 = 1")
        args: list[str] = []
        if container is not None:
            sql += " AND container = ?"
            args.append(container)
        if network is not None:
            sql += " AND network = ?"
            args.append(network)
        rows = conn.execute(sql + " ORDER BY container, ifname", args)
        return [AttachmentRow(r[0], r[1], r[2], r[3], r[4], tuple(r[5].split()), bool(r[6])) for r in rows]

    def put_attachment(self, row: AttachmentRow) -> None:
        self.conn.execute("INSERT OR REPLACE INTO net_attachments VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (row.container, row.network, row.host_ifname, row.ifname, row.address,
                           " ".join(row.aliases), int(row.healthy)))

    def delete_attachment(self, container: str, network: str) -> None:
        self.conn.execute("DELETE FROM net_attachments WHERE container = ? AND network = ?",
                          (container, network))

    def set_healthy(self, container: str, healthy: bool) -> list[str]:
        self.conn.execute("UPDATE net_attachments SET healthy = ? WHERE container = ?",
                          (int(healthy), container))
        return [a.network for a in self.attachments(container)]

    def containers(self) -> set[str]:
        return {str(r[0]) for r in self.conn.execute("SELECT DISTINCT container FROM net_attachments")}

    # sysctls
    def sysctl_original(self, key: str) -> str | None:
        row = self.conn.execute("SELECT original FROM net_sysctls WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def put_sysctl(self, key: str, original: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO net_sysctls VALUES (?, ?)", (key, original))

    def delete_sysctl(self, key: str) -> None:
        self.conn.execute("DELETE FROM net_sysctls WHERE key = ?", (key,))

    # links to delete (``reaper``)
    def put_doomed(self, container: str, names: list[str]) -> None:
        self.conn.executemany("INSERT OR REPLACE INTO net_doomed VALUES (?, ?)",
                              [(name, container) for name in names])

    def doomed(self) -> list[str]:
        return read_doomed(self.conn)

    def forget_doomed(self, names: list[str]) -> None:
        self.conn.executemany("DELETE FROM net_doomed WHERE host_ifname = ?", [(n,) for n in names])
