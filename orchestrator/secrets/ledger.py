"""The digest ledger: which config/secret digests a container was made from, for precise plan reasons.

A container record keeps only its hashes. Its ``config_hash`` covers the content digests of everything
it mounts (``state.desired``), so the map ``config_hash -> {KIND:NAME: sha256}`` recorded when a plan is
executed lets the next plan say *what* changed: ``config nginx.conf changed (sha256 a1b2 -> c3d4)``
instead of "content changed". Content-addressed, so recording the same map twice is a no-op and a row
never goes stale. Digests only: like the container records, the ledger never holds a value (the
low-entropy caveat of docs/configs-and-secrets.md applies to it as to every stored digest).

The table lives in the state store (``store.db.Store``, duck-typed here: ``execute``/``query``) and is
created on the first record, so a read-only verb or a no-op pass writes nothing.

Neighbours: ``reconcile.controller`` records before executing a plan and calls ``content_reason`` when
it plans; ``secrets.digest`` computes the changes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from orchestrator.errors import StateError
from orchestrator.manifest.model import Service
from orchestrator.secrets.digest import Change, change_reasons, key, mounts

_TABLE = ("CREATE TABLE IF NOT EXISTS file_digests (config_hash TEXT PRIMARY KEY, digests TEXT NOT NULL, "
          "recorded_at REAL NOT NULL DEFAULT (strftime('%s','now')))")


class _Store(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...


def mounted(service: Service, digests: Mapping[str, str]) -> dict[str, str]:
    """The part of a stack's digest map that ``service`` mounts."""
    keys = {key(kind, fm.name) for kind, fm in mounts(service)}
    return {k: v for k, v in sorted(digests.items()) if k in keys}


class DigestLedger:
    def __init__(self, store: _Store) -> None:
        self.store = store
        self._known: set[str] = set()

    def record(self, entries: Mapping[str, Mapping[str, str]]) -> None:
        """``config_hash -> digest map``; only hashes not recorded yet are written."""
        new = {h: d for h, d in entries.items() if h not in self._known and self.lookup(h) is None}
        if new:
            self.store.execute(_TABLE)
            for h, d in sorted(new.items()):
                self.store.execute("INSERT OR IGNORE INTO file_digests (config_hash, digests) VALUES (?, ?)",
                                   (h, json.dumps(dict(d), sort_keys=True)))
        self._known.update(entries)

    def lookup(self, config_hash: str) -> dict[str, str] | None:
        try:
            rows = self.store.query("SELECT digests FROM file_digests WHERE config_hash = ?", (config_hash,))
        except StateError:
            return None         # no such table yet: nothing was ever recorded
        if not rows:
            return None
        self._known.add(config_hash)
        data = json.loads(rows[0][0])
        return {str(k): str(v) for k, v in data.items()}


def content_reason(old: Mapping[str, str], new: Mapping[str, str], service: Service, *,
                   restart_only: bool) -> str:
    """The plan reason for a content change: ``config nginx.conf changed (sha256 a1b2 -> c3d4)``, one
    per changed mount, ``; ``-joined. ``restart_only`` (a recreate): only the mounts that restart; else
    (an in-place update) every change with what it does (``onChange signal:SIGHUP``)."""
    changes: list[Change] = change_reasons(old, new, service)
    if restart_only:
        return "; ".join(c.reason for c in changes if c.action == "restart")
    return "; ".join(f"{c.reason}, onChange {c.effect}" for c in changes)
