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

Neighbours: ``reconcile.execute`` (calls it through the ``NetworkHook`` protocol), the networking
helper's ``runtime.linux.network.manager`` and ``store.ipam``.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from orchestrator.errors import NetworkError, ReconcileError, RuntimeFailure, StateError
from orchestrator.manifest.model import Network
from orchestrator.runtime.base import Runtime, Status
from orchestrator.state.desired import DesiredContainer
from orchestrator.store.inventory import Inventory


class NetworkWiring:
    def __init__(self, db_path: Path, runtime: Runtime, inventory: Inventory) -> None:
        self.db_path, self.runtime, self.inventory = db_path, runtime, inventory
        self._manager: Any = None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _mgr(self) -> Any:
        with self._lock:
            if self._manager is None:
                from orchestrator.runtime.linux.network.manager import NetworkManager
                try:
                    self._conn = sqlite3.connect(str(self.db_path), timeout=10.0, isolation_level=None,
                                                 check_same_thread=False)
                except sqlite3.Error as exc:
                    raise StateError(f"cannot open {self.db_path} for the network layer: {exc}") from exc
                self._manager = NetworkManager(self._conn)
            return self._manager

    def close(self) -> None:
        with self._lock:
            if self._manager is not None:
                self._manager.close()
                self._manager = None
            if self._conn is not None:
                self._conn.close()
                self._conn = None

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
            from orchestrator.runtime.linux.network import links
            links.setup_loopback(pid)
        elif net.mode == "bridge":
            mgr = self._mgr()
            nets = {n.name: n for n in dc.stack_spec.networks}
            joined = []
            for name in net.networks:
                spec = nets.get(name) or Network(name)   # "default" may be implicit in the model
                aliases = (dc.service, f"{dc.service}-{dc.replica}")
                joined.append((mgr.ensure_network(dc.stack, spec), aliases))
            addresses = mgr.attach(cid, pid, joined)
            if dc.spec.ports and addresses:
                mgr.publish(cid, addresses[net.networks[0]], dc.spec.ports)

    def detach(self, cid: str) -> None:
        mgr = self._mgr()
        if not mgr.inv.attachments(cid):
            return      # none/host/container modes, or never attached: nothing was made for it
        try:
            mgr.unpublish(cid)
        finally:
            mgr.detach(cid)

    def forget_stack(self, stack: str) -> None:
        mgr = self._mgr()
        for info in mgr.networks():
            if info.stack == stack:
                try:
                    mgr.remove_network(stack, info.name)
                except NetworkError as exc:
                    raise ReconcileError(f"stack {stack}: cannot remove network {info.name}: {exc}") from exc
