"""The SQLite state store: one WAL-mode database at ``settings.db_path``, schema migrations, and the
translation of every ``sqlite3`` error into ``StateError``.

Tables (see ``MIGRATIONS``): ``containers`` (the inventory of every container we created, written BEFORE
the runtime makes it), ``volumes`` and ``networks`` (the same for those objects), ``stacks`` (the current
generation and the source that applied each stack), ``generations`` (every applied model snapshot as
canonical JSON), ``events``, ``health`` (probe history) and ``journal`` (steps of multi-step actions).

Neighbours: ``store.inventory`` gives typed access to these tables; ``store.lock`` serialises applies;
``store.ipam`` (the networking helper's) may add its own tables through ``Store.conn``; ``state.observed``
reads; ``reconcile.execute`` writes. The connection is shared by the executor's worker threads behind one
lock (SQLite serialises writers anyway; WAL lets ``ps`` read while an apply writes).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.errors import StateError

# Each entry moves the schema from version i to i+1; never edit an entry once released, append one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE containers (
        id TEXT PRIMARY KEY, slot TEXT NOT NULL, stack TEXT NOT NULL, service TEXT NOT NULL,
        replica INTEGER NOT NULL, spec_hash TEXT NOT NULL, resources_hash TEXT NOT NULL,
        config_hash TEXT NOT NULL, image TEXT NOT NULL, image_id TEXT NOT NULL,
        generation INTEGER NOT NULL, phase TEXT NOT NULL, restarts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL, updated_at REAL NOT NULL);
    CREATE INDEX containers_by_stack ON containers(stack, service, replica);
    CREATE TABLE volumes (
        stack TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL, created_at REAL NOT NULL,
        PRIMARY KEY (stack, name));
    CREATE TABLE networks (
        stack TEXT NOT NULL, name TEXT NOT NULL, device TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL, PRIMARY KEY (stack, name));
    CREATE TABLE stacks (
        name TEXT PRIMARY KEY, generation INTEGER NOT NULL, source TEXT NOT NULL,
        status TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', updated_at REAL NOT NULL);
    CREATE TABLE generations (
        stack TEXT NOT NULL, generation INTEGER NOT NULL, applied_at REAL NOT NULL,
        snapshot_hash TEXT NOT NULL, snapshot TEXT NOT NULL, note TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (stack, generation));
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, stack TEXT NOT NULL,
        object TEXT NOT NULL, reason TEXT NOT NULL, message TEXT NOT NULL);
    CREATE INDEX events_by_object ON events(object, time);
    CREATE TABLE health (
        id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, container TEXT NOT NULL,
        ok INTEGER NOT NULL, output TEXT NOT NULL);
    CREATE INDEX health_by_container ON health(container, time);
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL, step INTEGER NOT NULL,
        action TEXT NOT NULL, object TEXT NOT NULL, status TEXT NOT NULL, time REAL NOT NULL,
        detail TEXT NOT NULL DEFAULT '');
    """,
    # 2: find unfinished journal steps without a quadratic scan
    """
    CREATE INDEX journal_by_step ON journal(run, step);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


class Store:
    """An open state database. Thread-safe: every statement runs under one re-entrant lock."""

    def __init__(self, path: Path, *, migrations: Sequence[str] = MIGRATIONS) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so a read never opens a transaction
            self.conn = sqlite3.connect(str(path), timeout=10.0, isolation_level=None,
                                        check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            # journal_mode=WAL persists in the file: set it only once so an up-to-date open writes nothing
            if self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self.conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: durable against a crash of this process (our kill -9 tests), and
            # commits do not fsync, which keeps a 50-container apply fast
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"cannot open state store {path}: {exc}") from exc
        self._migrate(migrations)

    # -- schema -------------------------------------------------------------------------------------

    def schema_version(self) -> int:
        row = self.query_one("SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'")
        if row is None:
            return 0
        row = self.query_one("SELECT version FROM schema_version")
        return int(row["version"]) if row else 0

    def _migrate(self, migrations: Sequence[str]) -> None:
        current = self.schema_version()
        if current > len(migrations):
            raise StateError(f"state store {self.path} has schema version {current}, newer than this "
                             f"orchestrator knows ({len(migrations)}); upgrade the orchestrator")
        if current == len(migrations):
            return
        with self.transaction() as c:
            c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            for script in migrations[current:]:
                for stmt in _statements(script):
                    c.execute(stmt)
            c.execute("DELETE FROM schema_version")
            c.execute("INSERT INTO schema_version (version) VALUES (?)", (len(migrations),))

    # -- access -------------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); sqlite3 errors become StateError."""
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StateError(f"state store {self.path}: cannot begin a transaction: {exc}") from exc
            try:
                yield self.conn
            except sqlite3.Error as exc:
                self.conn.execute("ROLLBACK")
                raise StateError(f"state store {self.path}: {exc}") from exc
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StateError(f"state store {self.path}: commit failed: {exc}") from exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One statement in its own transaction (autocommit)."""
        with self._lock:
            try:
                self.conn.execute(sql, params)
            except sqlite3.Error as exc:
                raise StateError(f"state store {self.path}: {exc} (in {sql.split()[0]})") from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StateError(f"state store {self.path}: {exc}") from exc

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def data_version(self) -> int:
        """Changes when another connection commits; with ``total_changes`` lets tests prove no writes."""
        row = self.query_one("PRAGMA data_version")
        return int(row[0]) if row else 0

    def total_changes(self) -> int:
        with self._lock:
            return self.conn.total_changes

    def close(self) -> None:
        with self._lock:
            try:
                self.conn.close()
            except sqlite3.Error as exc:
                raise StateError(f"state store {self.path}: close failed: {exc}") from exc

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
