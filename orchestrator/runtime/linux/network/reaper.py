"""LinkReaper: deletes veths on a thread of its own, so a caller does not wait for the kernel;
``Doomed``: the manager's side of it (the ``net_doomed`` rows and what the thread has done).

Deleting a link returns only after the kernel's ``rcu_barrier()`` in ``netdev_run_todo`` (~20 ms on
these machines, whatever the link), which runs after the rtnl lock is released: other link work, such
as the next container's attach, goes on meanwhile. ``NetworkManager.detach(wait=False)`` hands the
host ends of a stopped container's veths here, after recording them in the ``net_doomed`` table (see
``inventory``), so a crash before the deletion leaves a row that ``NetworkManager.flush`` or ``gc``
finishes. This thread never touches the database: the manager forgets a doomed row once ``reaped``
says its link is gone, in its own thread.

Neighbours: ``manager`` (the only user), ``links`` (the deletion itself, with an IPRoute of our own:
pyroute2's sockets are not shared across threads here).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable

from pyroute2 import IPRoute

from orchestrator.errors import NetworkError
from orchestrator.store.ipam import transaction

from . import links
from .inventory import Inventory


class LinkReaper:
    def __init__(self) -> None:
        # a name to delete; an Event, set once everything queued before it is done; None: stop
        self._todo: queue.Queue[str | threading.Event | None] = queue.Queue()
        self._lock = threading.Lock()
        self._done: list[str] = []              # deleted, or found gone
        self._failed: dict[str, str] = {}       # name -> why; the manager retries them itself
        self._thread = threading.Thread(target=self._run, name="orchestrator-link-reaper", daemon=True)
        self._thread.start()

    def delete(self, names: Iterable[str]) -> None:
        for name in names:
            self._todo.put(name)

    def reaped(self) -> tuple[list[str], dict[str, str]]:
        """What finished since the last call: names deleted (or gone already), and names that failed."""
        with self._lock:
            done, failed = self._done, self._failed
            self._done, self._failed = [], {}
            return done, failed

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout_s: float = 10.0) -> bool:
        """Until every name handed over so far is done; False if that took longer than ``timeout_s``,
        or at once if the thread is gone (the manager then deletes what is left itself)."""
        if not self.alive:
            return False
        finished = threading.Event()
        self._todo.put(finished)
        return finished.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> bool:
        """Finish what was handed over (at most ``timeout_s``), then stop the thread."""
        ok = self.wait(timeout_s)
        self._todo.put(None)
        self._thread.join(timeout_s)
        return ok and not self._thread.is_alive()

    def _run(self) -> None:
        ipr: IPRoute | None = None
        try:
            while (item := self._todo.get()) is not None:
                if isinstance(item, threading.Event):
                    item.set()
                    continue
                try:
                    if ipr is None:
                        ipr = IPRoute()
                    links.delete_link(ipr, item)
                    with self._lock:
                        self._done.append(item)
                except Exception as exc:     # any failure: the doomed row stays for flush
                    with self._lock:
                        self._failed[item] = str(exc)
        finally:
            if ipr is not None:
                ipr.close()


class Doomed:
    """Veths to delete, as ``NetworkManager`` sees them: recorded in ``net_doomed`` (in the caller's
    transaction), handed to a ``LinkReaper`` (started on first use, again if its thread died), the
    rows forgotten once their links are gone. Called under the manager's lock, on its connection."""

    def __init__(self, inv: Inventory, ipr: IPRoute) -> None:
        self.inv = inv
        self.ipr = ipr
        self._reaper: LinkReaper | None = None

    def hand_over(self, names: list[str]) -> None:
        """After the transaction that recorded ``names`` (``Inventory.put_doomed``) committed."""
        if self._reaper is None or not self._reaper.alive:
            self._reaper = LinkReaper()
        self._reaper.delete(names)

    def forget_reaped(self) -> None:
        """Forget the rows of links the reaper has deleted (its failures stay for ``flush``)."""
        if self._reaper is None:
            return
        done, _failed = self._reaper.reaped()
        if done:
            with transaction(self.inv.conn):
                self.inv.forget_doomed(done)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Every doomed veth deleted: waits for the reaper, then deletes here whatever it could not
        and whatever an earlier process recorded and never finished (a crash). Idempotent. Each
        link is tried; a ``NetworkError`` naming those that failed comes after (their rows stay)."""
        if self._reaper is not None:
            self._reaper.wait(timeout_s)
        self.forget_reaped()
        gone, failed = [], []
        for name in self.inv.doomed():
            try:
                links.delete_link(self.ipr, name)
                gone.append(name)
            except NetworkError as exc:
                failed.append(str(exc))
        if gone:
            with transaction(self.inv.conn):
                self.inv.forget_doomed(gone)
        if failed:
            raise NetworkError("; ".join(failed))

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None
