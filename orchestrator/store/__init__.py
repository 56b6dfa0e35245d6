"""The state store: SQLite inventory, generations, events, health and journal (``db``, ``inventory``),
and the apply lock (``lock``). ``open_store(path)`` is the usual entry point."""

from __future__ import annotations

from pathlib import Path

from orchestrator.store.db import Store
from orchestrator.store.inventory import Inventory


def open_store(path: Path) -> Inventory:
    return Inventory(Store(path))


__all__ = ["Inventory", "Store", "open_store"]
