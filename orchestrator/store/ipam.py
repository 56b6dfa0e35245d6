"""IP address management for stack networks, kept in the state store (SQLite).

Owns two tables in the connection it is given: ``ipam_subnets`` (one IPv4 subnet and gateway per network
key, e.g. ``"web/default"``) and ``ipam_addresses`` (one address per (network, owner), where the owner is a
container's replica name such as ``web-db-1``). Every allocation runs in one transaction (``BEGIN
IMMEDIATE``, or a savepoint when the caller already holds one), and the row is committed BEFORE the caller
creates the veth that will carry the address: after a crash the address is still owned, so it can never be
handed out twice; ``NetworkManager.gc`` releases what belonged to containers that are gone.

Stability: releasing an address keeps the row as a *hint* (``active = 0``). When the same owner comes back
(a replica restarted or recreated) it gets the same address if nobody took it meanwhile; fresh addresses
are preferred over hinted ones, and a hinted address is reused by someone else only when the subnet has no
other free address (the oldest hint goes first). ``release_network`` drops every row of a network.

Pure SQLite and ``ipaddress``: no kernel access (routes to avoid are passed in by
``runtime.linux.network.manager``), so all of it is unit-tested without root.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from orchestrator.errors import NetworkError, StateError

DEFAULT_POOL = "10.89.0.0/16"
DEFAULT_PREFIXLEN = 24

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS ipam_subnets (
           network TEXT PRIMARY KEY,
           subnet  TEXT NOT NULL UNIQUE,
           gateway TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ipam_addresses (
           network     TEXT NOT NULL,
           owner       TEXT NOT NULL,
           address     TEXT NOT NULL,
           active      INTEGER NOT NULL,
           released_at REAL NOT NULL DEFAULT 0,
           PRIMARY KEY (network, owner),
           UNIQUE (network, address))""",
)


@dataclass(frozen=True)
class Subnet:
    network: str                 # network key, "stack/name"
    subnet: str                  # "10.89.3.0/24"
    gateway: str                 # "10.89.3.1"

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: BEGIN IMMEDIATE (takes the write lock at once, so two processes cannot both
    read "address free" and then both insert it), or a savepoint inside a caller's transaction."""
    nested = conn.in_transaction
    try:
        conn.execute("SAVEPOINT ipam" if nested else "BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StateError(f"ipam: cannot start a transaction: {exc}") from exc
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK TO ipam" if nested else "ROLLBACK")
        if nested:
            conn.execute("RELEASE ipam")
        raise
    conn.execute("RELEASE ipam" if nested else "COMMIT")


class Ipam:
    """Subnets per network and addresses per (network, owner), in ``conn``."""

    def __init__(self, conn: sqlite3.Connection, pool: str = DEFAULT_POOL,
                 prefixlen: int = DEFAULT_PREFIXLEN) -> None:
        self.conn = conn
        try:
            self.pool = ipaddress.IPv4Network(pool)
        except ValueError as exc:
            raise NetworkError(f"ipam: bad address pool {pool!r}: {exc}") from exc
        if not self.pool.prefixlen <= prefixlen <= 30:
            raise NetworkError(f"ipam: subnet size /{prefixlen} does not fit pool {pool}")
        self.prefixlen = prefixlen
        try:
            for stmt in _SCHEMA:
                conn.execute(stmt)
        except sqlite3.Error as exc:
            raise StateError(f"ipam: cannot create tables: {exc}") from exc

    # -- subnets -------------------------------------------------------------------------------------

    def subnet(self, network: str) -> Subnet | None:
        row = self.conn.execute("SELECT subnet, gateway FROM ipam_subnets WHERE network = ?",
                                (network,)).fetchone()
        return Subnet(network, row[0], row[1]) if row else None

    def subnets(self) -> list[Subnet]:
        rows = self.conn.execute("SELECT network, subnet, gateway FROM ipam_subnets ORDER BY network")
        return [Subnet(*r) for r in rows]

    def allocate_subnet(self, network: str, requested: str | None = None,
                        avoid: Iterable[str] = ()) -> Subnet:
        """The network's subnet: the existing one, else ``requested``, else the first free block of the
        pool that overlaps neither another network's subnet nor anything in ``avoid`` (host routes)."""
        avoid_nets = [ipaddress.IPv4Network(a, strict=False) for a in avoid]
        with transaction(self.conn):
            existing = self.subnet(network)
            if existing is not None:
                if requested is not None and ipaddress.IPv4Network(requested, strict=False) != \
                        ipaddress.IPv4Network(existing.subnet):
                    raise NetworkError(f"network {network}: subnet is {existing.subnet}, cannot change it "
                                       f"to {requested} while the network exists")
                return existing
            taken = [ipaddress.IPv4Network(s.subnet) for s in self.subnets()]
            if requested is not None:
                chosen = self._check_requested(network, requested, taken, avoid_nets)
            else:
                chosen = self._first_free(network, taken + avoid_nets)
            gateway = str(next(chosen.hosts()))
            self.conn.execute("INSERT INTO ipam_subnets (network, subnet, gateway) VALUES (?, ?, ?)",
                              (network, str(chosen), gateway))
        return Subnet(network, str(chosen), gateway)

    @staticmethod
    def _check_requested(network: str, requested: str, taken: list[ipaddress.IPv4Network],
                         avoid: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
        try:
            chosen = ipaddress.IPv4Network(requested, strict=False)
        except ValueError as exc:
            raise NetworkError(f"network {network}: bad subnet {requested!r}: {exc}") from exc
        if chosen.prefixlen > 30:
            raise NetworkError(f"network {network}: subnet {chosen} is too small (/30 at most)")
        for other in taken:
            if chosen.overlaps(other):
                raise NetworkError(f"network {network}: subnet {chosen} overlaps {other} of another network")
        for other in avoid:
            if chosen.overlaps(other):
                raise NetworkError(f"network {network}: subnet {chosen} overlaps host route {other}")
        return chosen

    def _first_free(self, network: str, busy: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
        for candidate in self.pool.subnets(new_prefix=self.prefixlen):
            if not any(candidate.overlaps(b) for b in busy):
                return candidate
        raise NetworkError(f"network {network}: address pool {self.pool} is exhausted")

    def release_network(self, network: str) -> None:
        """Forget the network's subnet and every address in it (hints included). Idempotent."""
        with transaction(self.conn):
            self.conn.execute("DELETE FROM ipam_addresses WHERE network = ?", (network,))
            self.conn.execute("DELETE FROM ipam_subnets WHERE network = ?", (network,))

    # -- addresses -----------------------------------------------------------------------------------

    def allocate(self, network: str, owner: str) -> str:
        """``owner``'s address in ``network``: its active one, else its previous one if still free, else
        the lowest never-used address, else the oldest released hint of someone else."""
        with transaction(self.conn):
            sub = self.subnet(network)
            if sub is None:
                raise NetworkError(f"network {network}: no subnet allocated (ensure the network first)")
            rows = self.conn.execute(
                "SELECT owner, address, active, released_at FROM ipam_addresses WHERE network = ?",
                (network,)).fetchall()
            mine = next((r for r in rows if r[0] == owner), None)
            if mine is not None:
                if not mine[2]:
                    self.conn.execute("UPDATE ipam_addresses SET active = 1 WHERE network = ? AND owner = ?",
                                      (network, owner))
                return str(mine[1])
            address = self._pick(sub, rows)
            # a hint of someone else on this address is given up: the address now has a new owner
            self.conn.execute("DELETE FROM ipam_addresses WHERE network = ? AND address = ? AND active = 0",
                              (network, address))
            self.conn.execute("INSERT INTO ipam_addresses (network, owner, address, active) "
                              "VALUES (?, ?, ?, 1)", (network, owner, address))
        return address

    @staticmethod
    def _pick(sub: Subnet, rows: list[tuple[str, str, int, float]]) -> str:
        used = {r[1] for r in rows}
        for host in ipaddress.IPv4Network(sub.subnet).hosts():
            addr = str(host)
            if addr != sub.gateway and addr not in used:
                return addr
        hints = sorted((r[3], r[1]) for r in rows if not r[2])
        if hints:
            return hints[0][1]
        raise NetworkError(f"network {sub.network}: subnet {sub.subnet} has no free address")

    def release(self, owner: str, network: str | None = None) -> None:
        """Release ``owner``'s address(es) (all networks unless one is named), keeping a hint. Idempotent."""
        with transaction(self.conn):
            if network is None:
                self.conn.execute("UPDATE ipam_addresses SET active = 0, released_at = ? "
                                  "WHERE owner = ? AND active = 1", (time.time(), owner))
            else:
                self.conn.execute("UPDATE ipam_addresses SET active = 0, released_at = ? "
                                  "WHERE owner = ? AND network = ? AND active = 1",
                                  (time.time(), owner, network))

    def address(self, network: str, owner: str) -> str | None:
        row = self.conn.execute("SELECT address FROM ipam_addresses WHERE network = ? AND owner = ? "
                                "AND active = 1", (network, owner)).fetchone()
        return str(row[0]) if row else None

    def addresses(self, network: str) -> dict[str, str]:
        """Active addresses of the network, owner -> address."""
        rows = self.conn.execute("SELECT owner, address FROM ipam_addresses WHERE network = ? AND active = 1 "
                                 "ORDER BY owner", (network,))
        return {str(o): str(a) for o, a in rows}

    def owners(self) -> set[str]:
        """Every owner holding an active address in any network."""
        return {str(r[0]) for r in self.conn.execute("SELECT DISTINCT owner FROM ipam_addresses "
                                                     "WHERE active = 1")}
