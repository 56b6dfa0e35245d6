"""Network wiring for the executor: maps a service's network mode onto ``runtime.linux.network``.

- ``bridge``: the stack's networks are ensured (bridge + subnet, recorded before made), the container
  gets one veth per network once ``runtime.create`` returned (its namespace exists, its process has not
  started), and its ports are published to its first address;
- ``none``: only ``lo``, brought up;
- ``host``: nothing (the OCI config has no network namespace);
- ``container:NAME``: the OCI config joins the namespace of a running replica of NAME.

``detach`` is idempotent and goes by the network layer's own inventory, so the executor calls it on
every delete, including deletes of half-made containers after a crash. The ``NetworkManager`` (netlink
socket, its own SQLite connection to the same store) is opened on first use: a no-op pass never opens it.

Service discovery by hosts file: every container with its own network namespace has
``<bundle>/hosts`` bind-mounted on /etc/hosts (``reconcile.bundle``). Its text is a pure function of the
network inventory (``hosts.container_hosts``: every service, replica and container name of the networks
the container is on; a service name lists the replicas whose latest health probe did not fail, or all
of them when every one failed). It is recomputed for the container's network peers after every attach
and detach, and for every container on every pass (``upkeep``, also on a no-op pass, so it is
level-triggered), and rewritten in place only when it differs: an up-to-date pass reads but writes
nothing. ``upkeep`` also removes networks dropped from a stack that stays, once no container is
attached to them.

Neighbours: ``reconcile.execute`` (calls it through the ``NetworkHook`` protocol), the networking
helper's ``runtime.linux.network.manager`` and ``store.ipam``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.errors import NetworkError, ReconcileError, RuntimeFailure, StateError
from orchestrator.manifest.model import Network, Port, Stack
from orchestrator.runtime.base import Runtime, Status
from orchestrator.runtime.linux.network.hosts import hosts_texts, write_in_place
from orchestrator.runtime.linux.network.inventory import read_attachments, read_doomed, read_networks
from orchestrator.state.desired import DesiredContainer, DesiredState
from orchestrator.store.inventory import Inventory


def wanted_networks(stack: Stack) -> set[str]:
    """The networks a stack declares or its bridge-mode services join ("default" may be implicit)."""
    names = {n.name for n in stack.networks}
    for svc in stack.services:
        if svc.network.mode == "bridge":
            names.update(svc.network.networks)
    return names


class NetworkWiring:
    def __init__(self, db_path: Path, runtime: Runtime, inventory: Inventory,
                 containers_dir: Path | None = None) -> None:
        self.db_path, self.runtime, self.inventory = db_path, runtime, inventory
        self.containers_dir = containers_dir        # bundles with the hosts files; None: no discovery
        self._manager: Any = None
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._hosts_lock = threading.Lock()          # one hosts refresh at a time (attach threads)
        self._ensure_lock = threading.Lock()
        self._ensured: dict[tuple[str, Network], Any] = {}   # networks ensured in this pass

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(str(self.db_path), timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open {self.db_path} for the network layer: {exc}") from exc

    def _db(self) -> sqlite3.Connection:
        """A connection of our own, only read from: it sees only what the manager committed (never the
        middle of its transactions, which run on the manager's connection in other threads)."""
        with self._lock:
            if self._reader is None:
                self._reader = self._connect()
            return self._reader

    def _mgr(self) -> Any:
        with self._lock:
            if self._manager is None:
                from orchestrator.runtime.linux.network.manager import NetworkManager
                self._conn = self._connect()
                self._manager = NetworkManager(self._conn)
            return self._manager

    def port_conflicts(self, wanted: Sequence[tuple[str, Sequence[Port]]], freed: set[str]) -> list[str]:
        """Plan-time check of the host ports that creates in a plan will publish, against listening
        sockets and ports our other containers publish (those the plan deletes are free)."""
        from orchestrator.runtime.linux.network.ports import listening, port_conflicts
        published = [p for p in self._mgr().nft.published() if p.container not in freed]
        sockets = listening()
        return [f"{target}: {msg}" for target, ports in wanted
                for msg in port_conflicts(ports, sockets, published)]

    def close(self) -> None:
        with self._lock:
            try:
                if self._manager is not None:
                    self._manager.close()       # waits for the veth deletions handed to its reaper
            finally:
                self._manager = None
                for conn in (self._conn, self._reader):
                    if conn is not None:
                        conn.close()
                self._conn = self._reader = None

    def netns_for(self, dc: DesiredContainer) -> str:
        """The namespace path for the OCI config: "" = a new one (bridge/none) or none at all (host)."""
        net = dc.spec.network
        if net.mode != "container":
            return ""
        for rec in self.inventory.containers(dc.stack):
            if rec.service != net.container:
                continue
            try:
                st = self.runtime.state(rec.id)
            except RuntimeFailure:
                continue
            if st.status == Status.RUNNING and st.pid:
                return f"/proc/{st.pid}/ns/net"
        raise ReconcileError(f"{dc.slot}: network container:{net.container}: no running replica of "
                             f"{dc.stack}/{net.container} to join")

    def attach(self, dc: DesiredContainer, cid: str, pid: int) -> None:
        net = dc.spec.network
        if net.mode == "none":
            return          # lo only, which the container's init brings up itself
        if net.mode == "bridge":
            mgr = self._mgr()
            nets = {n.name: n for n in dc.stack_spec.networks}
            joined = []
            for name in net.networks:
                spec = nets.get(name) or Network(name)   # "default" may be implicit in the model
                aliases = (dc.service, f"{dc.service}-{dc.replica}")
                joined.append((self._ensure(mgr, dc.stack, spec), aliases))
            try:
                addresses = mgr.attach(cid, pid, joined)
            except NetworkError:
                # perhaps a bridge vanished behind our back: ensure the networks again next time
                with self._ensure_lock:
                    self._ensured.clear()
                raise
            if dc.spec.ports and addresses:
                mgr.publish(cid, addresses[net.networks[0]], dc.spec.ports)
            # before the container runs: its own names and its peers'; the peers learn its name now
            self.refresh_hosts({j.key for j, _aliases in joined})

    def _ensure(self, mgr: Any, stack: str, spec: Network) -> Any:
        """``ensure_network`` once per network per pass: it lists host routes and nftables rules (a
        subprocess), which would otherwise cost every replica tens of ms under the manager's lock.
        ``upkeep`` forgets the cache at the end of each pass, so the next pass checks again."""
        key = (stack, spec)
        with self._ensure_lock:
            info = self._ensured.get(key)
            if info is None:
                info = self._ensured[key] = mgr.ensure_network(stack, spec)
            return info

    def detach(self, cid: str) -> None:
        """After the runtime deleted ``cid``: its veths go on the manager's reaper thread (its
        namespace is dead; the kernel's ~20 ms per deletion need not hold up the pass); the pass's
        ``upkeep`` and ``close`` wait for them."""
        mgr = self._mgr()
        rows = mgr.inv.attachments(cid)
        if not rows:
            return      # none/host/container modes, or never attached: nothing was made for it
        try:
            mgr.unpublish(cid)
        finally:
            mgr.detach(cid, wait=False)
        self.refresh_hosts({r.network for r in rows})

    # -- discovery and upkeep -------------------------------------------------------------------------

    def refresh_hosts(self, networks: set[str] | None = None) -> int:
        """Rewrite (in place) every hosts file whose text changed, of the containers on ``networks``
        (all when None). Returns how many files were written."""
        if self.containers_dir is None:
            return 0
        with self._hosts_lock:
            # a replica whose latest probe failed leaves its service name (not its replica name)
            failing = {cid for cid, ok in self.inventory.last_health().items() if not ok}
            rows = [replace(r, healthy=False) if r.container in failing else r
                    for r in read_attachments(self._db())]
            if networks is not None:
                on = {r.container for r in rows if r.network in networks}
            else:
                on = {r.container for r in rows}
            hostnames: dict[str, str] = {}
            current: dict[str, str] = {}
            for cid in sorted(on):
                cdir = self.containers_dir / cid
                try:
                    hostnames[cid] = (cdir / "hostname").read_text().strip()
                    current[cid] = (cdir / "hosts").read_text()
                except FileNotFoundError:
                    hostnames.pop(cid, None)      # a leftover attachment (crash) or no bundle yet
                except OSError as exc:
                    raise ReconcileError(f"container {cid}: cannot read {cdir}/hosts: {exc.strerror}") \
                        from exc
            written = 0
            for cid, text in hosts_texts(rows, hostnames).items():
                if text != current[cid]:
                    try:
                        write_in_place(str(self.containers_dir / cid / "hosts"), text)
                    except NetworkError as exc:
                        raise ReconcileError(f"container {cid}: {exc}") from exc
                    written += 1
            return written

    def prune_networks(self, desired: DesiredState) -> list[str]:
        """Remove the networks a desired stack no longer wants once no container is attached to them
        (a stack that is not desired keeps its networks until ``forget_stack``). Returns their keys."""
        wanted = {name: wanted_networks(ds.model) for name, ds in desired.stacks.items()}
        attached = {r.network for r in read_attachments(self._db())}
        doomed = [r for r in read_networks(self._db())
                  if r.stack in wanted and r.name not in wanted[r.stack] and r.key not in attached]
        if not doomed:
            return []          # the common case reads two tables and opens no netlink socket
        mgr = self._mgr()
        for row in doomed:
            try:
                mgr.remove_network(row.stack, row.name)
            except NetworkError as exc:
                raise ReconcileError(f"stack {row.stack}: cannot remove network {row.name}: {exc}") from exc
        return [r.key for r in doomed]

    def upkeep(self, desired: DesiredState) -> None:
        """Once per pass, after the plan ran (or found nothing to do)."""
        with self._ensure_lock:
            self._ensured.clear()
        try:
            self.prune_networks(desired)
            self.finish_deletions()
        finally:
            self.refresh_hosts()        # whatever failed above, the hosts files stay current

    def finish_deletions(self) -> None:
        """The veths ``detach`` handed to the manager's reaper are deleted by the end of the pass, and
        so are those a process killed meanwhile recorded and never saw deleted (``net_doomed``)."""
        if not read_doomed(self._db()):
            return          # the common case reads one table and opens no netlink socket
        try:
            self._mgr().flush()
        except NetworkError as exc:
            raise ReconcileError(f"cannot delete the veths of deleted containers: {exc}") from exc

    def forget_stack(self, stack: str) -> None:
        mgr = self._mgr()
        with self._ensure_lock:
            self._ensured = {k: v for k, v in self._ensured.items() if k[0] != stack}
        for info in mgr.networks():
            if info.stack == stack:
                try:
                    mgr.remove_network(stack, info.name)
                except NetworkError as exc:
                    raise ReconcileError(f"stack {stack}: cannot remove network {info.name}: {exc}") from exc
