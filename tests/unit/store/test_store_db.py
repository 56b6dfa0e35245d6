"""The SQLite store: WAL mode, migrations by version table, errors as StateError, the apply lock."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.errors import LockedError, StateError
from orchestrator.store import open_store
from orchestrator.store.db import MIGRATIONS, SCHEMA_VERSION, Store
from orchestrator.store.inventory import ContainerRecord
from orchestrator.store.lock import ApplyLock


def rec(cid: str = "s_a_1_x", phase: str = "creating") -> ContainerRecord:
    return ContainerRecord(cid, "s/a-1", "s", "a", 1, "h", "r", "c", "busybox:1", "sha256:1", 1, phase)


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    assert s.query_one("PRAGMA journal_mode")[0] == "wal"  # type: ignore[index]
    assert s.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
    s.close()
    raw = sqlite3.connect(tmp_path / "state.db")
    assert raw.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION


def test_reopen_writes_nothing(tmp_path: Path) -> None:
    Store(tmp_path / "state.db").close()
    s = Store(tmp_path / "state.db")
    assert s.total_changes() == 0


def test_migrations_apply_in_order_and_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store(path).close()
    extra = (*MIGRATIONS, "ALTER TABLE containers ADD COLUMN note TEXT NOT NULL DEFAULT ''")
    s = Store(path, migrations=extra)
    assert s.schema_version() == len(extra)
    s.execute("UPDATE containers SET note='x'")
    s.close()
    with pytest.raises(StateError, match="newer than this orchestrator knows"):
        Store(path)


def test_sqlite_errors_become_state_errors(tmp_path: Path) -> None:
    inv = open_store(tmp_path / "state.db")
    inv.add_container(rec())
    with pytest.raises(StateError, match="UNIQUE constraint failed"):
        inv.add_container(rec())
    (tmp_path / "bad.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match=r"bad\.db"):
        Store(tmp_path / "bad.db")


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    inv = open_store(tmp_path / "state.db")
    with pytest.raises(RuntimeError), inv.store.transaction() as c:
        c.execute("INSERT INTO events (time, stack, object, reason, message) VALUES (1,'s','o','r','m')")
        raise RuntimeError("boom")
    assert inv.events() == []


def test_inventory_round_trip_generations_events_health_journal(tmp_path: Path) -> None:
    inv = open_store(tmp_path / "state.db")
    inv.add_container(rec())
    inv.set_phase("s_a_1_x", "running")
    inv.update_hashes("s_a_1_x", resources_hash="r2", config_hash="c2", generation=2)
    (r,) = inv.containers("s")
    assert (r.phase, r.resources_hash, r.generation) == ("running", "r2", 2)
    assert inv.record_generation("s", "h1", "{}", "src") == 1
    assert inv.record_generation("s", "h2", '{"a":1}', "src") == 2
    assert inv.current_hashes() == {"s": (2, "h2")} and inv.generation("s", 1).snapshot == "{}"  # type: ignore[union-attr]
    inv.event("s", "s/a-1", "create", "new")
    assert [e.reason for e in inv.events(objects=["s/a-1"])] == ["create"]
    for i in range(30):
        inv.record_health("s_a_1_x", i % 2 == 0, f"probe {i}")
    hist = inv.health("s_a_1_x", limit=100)
    assert len(hist) == 20 and hist[-1].output == "probe 29" and inv.last_health() == {"s_a_1_x": False}
    inv.journal("run1", 1, "create", "s/a-1", "begin")
    assert inv.open_journal() == [("run1", 1, "create", "s/a-1")]
    inv.close_journal()
    assert inv.open_journal() == []
    inv.remove_container("s_a_1_x")
    assert inv.containers() == []


def test_reader_sees_commits_while_writer_holds_connection(tmp_path: Path) -> None:
    a, b = open_store(tmp_path / "state.db"), open_store(tmp_path / "state.db")
    a.add_container(rec())
    assert [r.id for r in b.containers()] == ["s_a_1_x"]


LOCK_HOLDER = """
import sys, time
from pathlib import Path
from orchestrator.store.lock import ApplyLock
with ApplyLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_lock_contention_between_processes(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path), "1.0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=rf"another apply is running \(pid {holder.pid}, since 20"):
            ApplyLock(tmp_path).acquire()
        t0 = time.monotonic()
        with ApplyLock(tmp_path, wait=True, timeout_s=10):
            waited = time.monotonic() - t0
        assert 0.2 < waited < 5
    finally:
        holder.wait(timeout=10)


def test_lock_released_when_holder_is_killed(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path), "60"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    os.kill(holder.pid, 9)
    holder.wait(timeout=10)
    with ApplyLock(tmp_path):
        pass


def test_lock_wait_timeout(tmp_path: Path) -> None:
    with ApplyLock(tmp_path), pytest.raises(LockedError):
        ApplyLock(tmp_path, wait=True, timeout_s=0.1).acquire()
