"""Typed access to the store's tables: inventory records, stack generations, events, health, journal.

Only this module (and ``store.ipam``) writes SQL against ``store.db.Store``. The rule it serves
(ARCHITECTURE rule 8): ownership is recorded before the object is made, so ``add_container`` runs before
``runtime.create`` and ``remove_container`` only after ``runtime.delete`` succeeded; a crash in between
leaves a record that the next pass sees and cleans up (garbage collection goes by this inventory, never by
matching names on the host).

Neighbours: ``state.observed`` reads records; ``reconcile.execute`` and ``reconcile.controller`` write.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.store.db import Store


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    id: str                   # the runtime's container id, unique per incarnation
    slot: str                 # "<stack>-<service>-<replica>": the stable name users see
    stack: str
    service: str
    replica: int
    spec_hash: str
    resources_hash: str
    config_hash: str
    image: str
    image_id: str
    generation: int
    phase: str                # lifecycle.Phase value: creating | created | running | deleting
    restarts: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class StackRecord:
    name: str
    generation: int
    source: str               # the -f paths (or git source) that applied it: prune scope
    status: str               # applied | failed | rolled-back | applying
    message: str = ""
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Generation:
    stack: str
    generation: int
    applied_at: float
    snapshot_hash: str
    snapshot: str             # canonical JSON of the Stack model
    note: str = ""


@dataclass(frozen=True, slots=True)
class VolumeRecord:
    stack: str
    name: str
    path: str
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Event:
    time: float
    stack: str
    object: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class HealthResult:
    time: float
    container: str
    ok: bool
    output: str


_CONTAINER_COLUMNS = ("id, slot, stack, service, replica, spec_hash, resources_hash, config_hash, image, "
                      "image_id, generation, phase, restarts, created_at, updated_at")


def _container(row: sqlite3.Row) -> ContainerRecord:
    return ContainerRecord(*row)       # columns selected in field order (_CONTAINER_COLUMNS)


class Inventory:
    """The store's typed face. Cheap to build; holds only the ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- containers ---------------------------------------------------------------------------------

    def containers(self, stack: str | None = None) -> list[ContainerRecord]:
        sql = f"SELECT {_CONTAINER_COLUMNS} FROM containers"
        if stack is None:
            rows = self.store.query(sql + " ORDER BY stack, service, replica, created_at")
        else:
            rows = self.store.query(sql + " WHERE stack=? ORDER BY service, replica, created_at", (stack,))
        return [_container(r) for r in rows]

    def add_container(self, rec: ContainerRecord) -> None:
        now = time.time()
        self.store.execute(
            "INSERT INTO containers (id, slot, stack, service, replica, spec_hash, resources_hash, "
            "config_hash, image, image_id, generation, phase, restarts, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (rec.id, rec.slot, rec.stack, rec.service, rec.replica, rec.spec_hash, rec.resources_hash,
             rec.config_hash, rec.image, rec.image_id, rec.generation, rec.phase, rec.restarts, now, now))

    def set_phase(self, container_id: str, phase: str) -> None:
        self.store.execute("UPDATE containers SET phase=?, updated_at=? WHERE id=?",
                           (phase, time.time(), container_id))

    def update_hashes(self, container_id: str, *, resources_hash: str, config_hash: str,
                      generation: int) -> None:
        self.store.execute("UPDATE containers SET resources_hash=?, config_hash=?, generation=?, "
                           "updated_at=? WHERE id=?",
                           (resources_hash, config_hash, generation, time.time(), container_id))

    def remove_container(self, container_id: str) -> None:
        self.store.execute("DELETE FROM containers WHERE id=?", (container_id,))

    # -- volumes and networks -------------------------------------------------------------------------

    def volumes(self, stack: str | None = None) -> list[VolumeRecord]:
        sql, params = "SELECT * FROM volumes", tuple[str, ...]()
        if stack is not None:
            sql, params = sql + " WHERE stack=?", (stack,)
        return [VolumeRecord(r["stack"], r["name"], r["path"], r["created_at"])
                for r in self.store.query(sql + " ORDER BY stack, name", params)]

    def add_volume(self, rec: VolumeRecord) -> None:
        self.store.execute("INSERT OR IGNORE INTO volumes (stack, name, path, created_at) VALUES (?,?,?,?)",
                           (rec.stack, rec.name, rec.path, time.time()))

    def remove_volume(self, stack: str, name: str) -> None:
        self.store.execute("DELETE FROM volumes WHERE stack=? AND name=?", (stack, name))

    # -- stacks and generations ------------------------------------------------------------------------

    def stacks(self) -> list[StackRecord]:
        return [StackRecord(r["name"], r["generation"], r["source"], r["status"], r["message"],
                            r["updated_at"])
                for r in self.store.query("SELECT * FROM stacks ORDER BY name")]

    def generation(self, stack: str, generation: int) -> Generation | None:
        r = self.store.query_one("SELECT * FROM generations WHERE stack=? AND generation=?",
                                 (stack, generation))
        return None if r is None else Generation(r["stack"], r["generation"], r["applied_at"],
                                                 r["snapshot_hash"], r["snapshot"], r["note"])

    def generations(self, stack: str) -> list[Generation]:
        return [Generation(r["stack"], r["generation"], r["applied_at"], r["snapshot_hash"], "", r["note"])
                for r in self.store.query("SELECT stack, generation, applied_at, snapshot_hash, note "
                                          "FROM generations WHERE stack=? ORDER BY generation", (stack,))]

    def current_hashes(self) -> dict[str, tuple[int, str]]:
        """stack -> (current generation, its snapshot hash): one cheap query per pass."""
        rows = self.store.query("SELECT s.name, s.generation, g.snapshot_hash FROM stacks s "
                                "JOIN generations g ON g.stack=s.name AND g.generation=s.generation")
        return {r[0]: (int(r[1]), str(r[2])) for r in rows}

    def record_generation(self, stack: str, snapshot_hash: str, snapshot: str, source: str,
                          note: str = "") -> int:
        """Add generation N+1 of ``stack`` and make it current (status ``applying``); returns N+1."""
        now = time.time()
        with self.store.transaction() as c:
            row = c.execute("SELECT MAX(generation) FROM generations WHERE stack=?", (stack,)).fetchone()
            gen = int(row[0] or 0) + 1
            c.execute("INSERT INTO generations (stack, generation, applied_at, snapshot_hash, snapshot, "
                      "note) VALUES (?,?,?,?,?,?)", (stack, gen, now, snapshot_hash, snapshot, note))
            c.execute("INSERT INTO stacks (name, generation, source, status, message, updated_at) "
                      "VALUES (?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET generation=excluded.generation,"
                      " source=excluded.source, status=excluded.status, message=excluded.message, "
                      "updated_at=excluded.updated_at", (stack, gen, source, "applying", "", now))
        return gen

    def set_stack_status(self, stack: str, status: str, message: str = "") -> None:
        self.store.execute("UPDATE stacks SET status=?, message=?, updated_at=? WHERE name=?",
                           (status, message, time.time(), stack))

    def remove_stack(self, stack: str) -> None:
        """Forget a stack that was deleted (its generations are kept as history)."""
        self.store.execute("DELETE FROM stacks WHERE name=?", (stack,))

    # -- events, health, journal -----------------------------------------------------------------------

    def event(self, stack: str, obj: str, reason: str, message: str) -> None:
        self.store.execute("INSERT INTO events (time, stack, object, reason, message) VALUES (?,?,?,?,?)",
                           (time.time(), stack, obj, reason, message))

    def events(self, *, stack: str | None = None, objects: Sequence[str] = (),
               limit: int = 50) -> list[Event]:
        where, params = [], []
        if stack is not None:
            where.append("stack=?")
            params.append(stack)
        if objects:
            where.append(f"object IN ({','.join('?' * len(objects))})")
            params.extend(objects)
        sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.store.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [Event(r["time"], r["stack"], r["object"], r["reason"], r["message"]) for r in reversed(rows)]

    def record_health(self, container: str, ok: bool, output: str, *, keep: int = 20) -> None:
        with self.store.transaction() as c:
            c.execute("INSERT INTO health (time, container, ok, output) VALUES (?,?,?,?)",
                      (time.time(), container, int(ok), output[-2000:]))
            c.execute("DELETE FROM health WHERE container=? AND id NOT IN (SELECT id FROM health WHERE "
                      "container=? ORDER BY id DESC LIMIT ?)", (container, container, keep))

    def health(self, container: str, limit: int = 20) -> list[HealthResult]:
        rows = self.store.query("SELECT * FROM health WHERE container=? ORDER BY id DESC LIMIT ?",
                                (container, limit))
        return [HealthResult(r["time"], r["container"], bool(r["ok"]), r["output"]) for r in reversed(rows)]

    def last_health(self) -> dict[str, bool]:
        rows = self.store.query("SELECT container, ok FROM health WHERE id IN "
                                "(SELECT MAX(id) FROM health GROUP BY container)")
        return {r[0]: bool(r[1]) for r in rows}

    def health_streaks(self) -> dict[str, tuple[int, float, str]]:
        """container -> (consecutive failed probes up to the newest, time of the newest, its output)."""
        out: dict[str, tuple[int, float, str]] = {}
        done: set[str] = set()
        rows = self.store.query("SELECT container, ok, time, output FROM health ORDER BY container, id DESC")
        for r in rows:
            c = r[0]
            if c in done:
                continue
            n, t, text = out.get(c, (0, float(r[2]), str(r[3])))
            if r[1]:
                done.add(c)
            else:
                n += 1
            out[c] = (n, t, text)
        return out

    def journal(self, run: str, step: int, action: str, obj: str, status: str, detail: str = "") -> None:
        self.store.execute("INSERT INTO journal (run, step, action, object, status, time, detail) "
                           "VALUES (?,?,?,?,?,?,?)", (run, step, action, obj, status, time.time(), detail))

    def open_journal(self) -> list[tuple[str, int, str, str]]:
        """Steps begun and never finished (run, step, action, object): an apply that was interrupted."""
        rows = self.store.query(
            "SELECT run, step, action, object FROM journal GROUP BY run, step "
            "HAVING SUM(status != 'begin') = 0 ORDER BY MIN(id)")
        return [(r[0], int(r[1]), r[2], r[3]) for r in rows]

    def trim(self, keep_journal: int = 5000, keep_events: int = 5000) -> None:
        """Bound the history tables (called after an apply that changed something)."""
        with self.store.transaction() as c:
            c.execute("DELETE FROM journal WHERE id <= (SELECT MAX(id) FROM journal) - ?", (keep_journal,))
            c.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (keep_events,))

    def close_journal(self, note: str = "recovered") -> None:
        """Mark interrupted steps as seen, once the next pass has converged past them."""
        for run, step, action, obj in self.open_journal():
            self.journal(run, step, action, obj, note)
