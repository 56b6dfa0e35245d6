"""NetworkManager: stack networks (bridges), container attachments (veths), published ports, discovery.

The one entry point of the network layer. It takes a ``sqlite3.Connection`` (the state store) and
namespace PATHS, so it depends neither on the runtime nor on the reconciler: the caller maps network modes
(``bridge`` -> ``ensure_network`` + ``attach``; ``none`` -> ``links.setup_loopback``; ``host`` -> nothing;
``container:NAME`` -> the runtime joins NAME's namespace, nothing here).

Ordering rules (why the code looks the way it does):
- ownership first: the network row / the IPAM address and attachment row are committed before the bridge
  / veth exist, so a crash at any point leaves a record that ``detach`` or ``gc`` acts on;
- every attach failure is undone by ``detach`` before the error propagates; ``detach``, ``unpublish``,
  ``remove_network`` and ``gc`` are idempotent and work from the inventory alone (a veth whose namespace
  died is already gone with it, which is not an error);
- sysctls we change are recorded with their original value and restored when the last network that
  needed them is removed (``sysctl`` explains which and why).

``step_hook`` is a test seam: it is called with the name of each step of ``attach`` ("allocated",
"veth-created", "configured"), so a test can kill the process between steps and check ``gc``.

``detach(wait=False)`` hands a dead container's veths to ``reaper``, a thread that deletes them while
the caller goes on (the kernel spends ~20 ms per deleted link); ``flush`` (and ``close``, ``gc``) waits
for it and deletes what a killed process recorded in ``net_doomed`` and never finished.

Neighbours: ``links`` (pyroute2), ``reaper`` (deletions off the caller's path), ``ports`` (nftables),
``dns`` / ``hosts`` (discovery), ``inventory`` and ``store.ipam`` (SQLite).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from orchestrator.errors import NetworkError, OrchestratorError
from orchestrator.store.ipam import DEFAULT_POOL, DEFAULT_PREFIXLEN, Ipam, transaction

from . import links, sysctl
from .dns import DNS_PORT, DnsServer, host_resolvers
from .hosts import HostsEntry, name_records
from .inventory import AttachmentRow, Inventory, NetworkRow
from .naming import bridge_name, container_ifname, network_key, network_tag, port_tag_prefix, veth_name
from .ports import Nft, listening, network_rules, port_comment, port_conflicts, port_rules
from .reaper import Doomed
from .specs import NetworkSpec, PortSpec

IP_FORWARD = "net.ipv4.ip_forward"


@dataclass(frozen=True)
class NetworkInfo:
    name: str
    bridge: str
    subnet: str
    gateway: str
    stack: str = ""
    internal: bool = False

    @property
    def key(self) -> str:
        return network_key(self.stack, self.name)

    @property
    def prefixlen(self) -> int:
        return int(self.subnet.rpartition("/")[2])


def _info(row: NetworkRow) -> NetworkInfo:
    return NetworkInfo(row.name, row.bridge, row.subnet, row.gateway, row.stack, row.internal)


class NetworkManager:
    def __init__(self, conn: sqlite3.Connection, *, pool: str = DEFAULT_POOL,
                 prefixlen: int = DEFAULT_PREFIXLEN, forwarding: bool = True, dns: bool = False,
                 dns_port: int = DNS_PORT, dns_upstreams: Sequence[tuple[str, int]] | None = None,
                 nft: Nft | None = None,
                 step_hook: Callable[[str], None] | None = None) -> None:
        self.conn = conn
        self.ipam = Ipam(conn, pool, prefixlen)
        self.inv = Inventory(conn)
        self.nft = nft or Nft()
        self.forwarding = forwarding
        self._hook = step_hook or (lambda _step: None)
        self._lock = threading.RLock()
        self._bridge_indexes: dict[str, int] = {}      # bridge name -> ifindex, checked on failure
        try:
            self.ipr = IPRoute()
        except (OSError, NetlinkError) as exc:
            raise NetworkError(f"cannot open rtnetlink: {exc}") from exc
        self._doomed = Doomed(self.inv, self.ipr)        # detach(wait=False)'s deletions
        self.dns: DnsServer | None = None
        if dns:
            upstreams = host_resolvers() if dns_upstreams is None else dns_upstreams
            self.dns = DnsServer(dns_port, upstreams)
            self.dns.start()
            for row in self.inv.networks():
                if links.link_index(self.ipr, row.bridge) is not None:
                    self._refresh_zone(row.key)

    def close(self) -> None:
        """Stop the DNS server and finish the deletions ``detach(wait=False)`` handed over (a link that
        could not be deleted keeps its ``net_doomed`` row for the next ``flush`` or ``gc``)."""
        with self._lock:
            if self.dns is not None:
                self.dns.stop()
                self.dns = None
            try:
                self.flush()
            except (OrchestratorError, sqlite3.Error):
                pass                    # recorded: the rows stay, the next flush or gc retries
            finally:
                self._doomed.close()
                self.ipr.close()

    def __enter__(self) -> NetworkManager:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- networks ------------------------------------------------------------------------------------

    def ensure_network(self, stack: str, net: NetworkSpec) -> NetworkInfo:
        """The network's bridge exists with its gateway, rules and sysctls. Idempotent."""
        key = network_key(stack, net.name)
        bridge = bridge_name(key)
        with self._lock:
            with transaction(self.conn):
                sub = self.ipam.allocate_subnet(key, net.subnet, avoid=self._host_routes())
                row = NetworkRow(key, stack, net.name, bridge, sub.subnet, sub.gateway, net.internal)
                self.inv.put_network(row)
            self._bridge_indexes[bridge] = links.ensure_bridge(self.ipr, bridge, sub.gateway, sub.prefixlen)
            if not net.internal:
                sysctl.write_iface("net.ipv4.conf", bridge, "route_localnet", "1")
                self._forwarding_on()
            tag = network_tag(key)
            have = sorted(r.comment for r in self.nft.rules() if r.comment == tag)
            want = network_rules(key, bridge, sub.subnet, net.internal, self.nft.table)
            if len(have) != len(want):
                self.nft.replace(want, wanted=[tag])
            self._refresh_zone(key)
            return _info(row)

    def network(self, stack: str, name: str) -> NetworkInfo | None:
        row = self.inv.network(network_key(stack, name))
        return _info(row) if row else None

    def networks(self) -> list[NetworkInfo]:
        return [_info(r) for r in self.inv.networks()]

    def remove_network(self, stack: str, name: str) -> None:
        """Remove the bridge, rules and subnet of a network that no container uses any more. Idempotent."""
        key = network_key(stack, name)
        with self._lock:
            users = sorted({a.container for a in self.inv.attachments(network=key)})
            if users:
                raise NetworkError(f"network {key}: still used by {', '.join(users)}")
            row = self.inv.network(key)
            bridge = row.bridge if row else bridge_name(key)
            if self.dns is not None and row is not None:
                self.dns.remove_zone(row.gateway)
            self.nft.replace(wanted=[network_tag(key)])
            self._bridge_indexes.pop(bridge, None)
            links.delete_link(self.ipr, bridge)
            with transaction(self.conn):
                self.ipam.release_network(key)
                self.inv.delete_network(key)
            remaining = self.inv.networks()
            if not any(not r.internal for r in remaining):
                self._restore_sysctls()
            if not remaining and not self.nft.published():
                self.nft.delete_table()

    # -- attachments ---------------------------------------------------------------------------------

    def attach(self, container: str, netns_path: str | int,
               networks: Sequence[tuple[NetworkInfo, Sequence[str]]]) -> dict[str, str]:
        """Give ``container`` (its network namespace at ``netns_path``, or a pid) one interface per
        network (eth0, eth1... in order), ``lo`` up and, for the first non-internal network, the default
        route. ``aliases`` are its DNS names on that network. Returns network name -> address."""
        path = links.netns_path(netns_path)
        with self._lock:
            self._doomed.forget_reaped()
            if {veth_name(container, info.key) for info, _a in networks} & set(self.inv.doomed()):
                self.flush()            # its old veth, same name: gone before the new one is made
            rows: list[tuple[NetworkInfo, AttachmentRow]] = []
            with transaction(self.conn):
                for i, (info, aliases) in enumerate(networks):
                    if self.inv.network(info.key) is None:
                        raise NetworkError(f"container {container}: network {info.key} does not exist")
                    address = self.ipam.allocate(info.key, container)
                    row = AttachmentRow(container, info.key, veth_name(container, info.key),
                                        container_ifname(i), address, tuple(aliases), True)
                    self.inv.put_attachment(row)
                    rows.append((info, row))
            self._hook("allocated")
            try:
                self._plumb(path, rows)
            except BaseException:
                self.detach(container)
                raise
            for info, _row in rows:
                self._refresh_zone(info.key)
            return {info.name: row.address for info, row in rows}

    def _plumb(self, path: str, rows: list[tuple[NetworkInfo, AttachmentRow]]) -> None:
        try:
            ns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NetworkError(f"netns {path}: cannot open: {exc}") from exc
        try:
            with links.ns_iproute(path) as ns_ipr:
                links.loopback_up(ns_ipr, path)
                routed = False
                for info, row in rows:
                    try:
                        links.create_veth(self.ipr, row.host_ifname, self._bridge_index(info), ns_fd,
                                          row.ifname)
                    except NetworkError:
                        # the fast path assumed no leftover veth and a cached bridge index; on failure
                        # check both (a crashed earlier attempt, a bridge recreated by someone) and retry
                        self._bridge_indexes.pop(info.bridge, None)
                        links.delete_link(self.ipr, row.host_ifname)
                        links.create_veth(self.ipr, row.host_ifname, self._bridge_index(info), ns_fd,
                                          row.ifname)
                    self._hook("veth-created")
                    # one default route only: the first network that may reach the outside
                    gateway = None if info.internal or routed else info.gateway
                    routed = routed or gateway is not None
                    links.configure_peer(ns_ipr, row.ifname, row.address, info.prefixlen, gateway, path)
                    self._hook("configured")
        finally:
            os.close(ns_fd)

    def _bridge_index(self, info: NetworkInfo) -> int:
        index = self._bridge_indexes.get(info.bridge)
        if index is None:
            index = links.link_index(self.ipr, info.bridge)
            if index is None:
                raise NetworkError(f"network {info.key}: bridge {info.bridge} is missing")
            self._bridge_indexes[info.bridge] = index
        return index

    def detach(self, container: str, *, wait: bool = True) -> None:
        """Remove the container's veths and release its addresses. Idempotent, crash-safe.

        ``wait=False`` is for a container whose processes are gone (the executor detaches after the
        runtime's delete): its veths are recorded as doomed and deleted on the reaper's thread, so the
        caller does not wait out the kernel's ~20 ms per deletion (see ``reaper``). Its addresses
        are free at once: nothing in a dead container's namespace uses them any more (and IPAM hands
        out a released address again only once the subnet has no never-used one left)."""
        with self._lock:
            self._doomed.forget_reaped()
            rows = self.inv.attachments(container)
            names = [row.host_ifname for row in rows]
            if wait:
                for name in names:
                    links.delete_link(self.ipr, name)
            with transaction(self.conn):
                if not wait and names:
                    self.inv.put_doomed(container, names)
                self.ipam.release(container)
                for row in rows:
                    self.inv.delete_attachment(container, row.network)
            if not wait and names:
                self._doomed.hand_over(names)
            for row in rows:
                self._refresh_zone(row.network)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Every veth ``detach(wait=False)`` handed over (or a killed process recorded) deleted; see
        ``reaper.Doomed.flush``."""
        with self._lock:
            self._doomed.flush(timeout_s)

    def addresses(self, container: str) -> dict[str, str]:
        return {a.network: a.address for a in self.inv.attachments(container)}

    def set_healthy(self, container: str, healthy: bool) -> None:
        """Unhealthy replicas drop out of their service names' DNS answers (not of the hosts file)."""
        with self._lock:
            with transaction(self.conn):
                nets = self.inv.set_healthy(container, healthy)
            for key in nets:
                self._refresh_zone(key)

    # -- discovery -----------------------------------------------------------------------------------

    def dns_records(self, key: str) -> dict[str, list[str]]:
        """Names of network ``key``: each alias and container name -> addresses, healthy ones only unless
        none of them is healthy (so a lone replica's own name always resolves)."""
        return name_records(self.inv.attachments(network=key))

    def hosts_entries(self, container: str) -> list[HostsEntry]:
        """Entries for ``hosts.hosts_file``: every container on the networks ``container`` is on."""
        out: list[HostsEntry] = []
        for mine in self.inv.attachments(container):
            for a in self.inv.attachments(network=mine.network):
                out.append((a.address, (a.container, *a.aliases)))
        return out

    def nameservers(self, container: str) -> list[str]:
        """The DNS server address for ``container`` (its first network's gateway) when DNS runs."""
        if self.dns is None:
            return []
        rows = self.inv.attachments(container)
        net = self.inv.network(rows[0].network) if rows else None
        return [net.gateway] if net else []

    def _refresh_zone(self, key: str) -> None:
        if self.dns is None:
            return
        row = self.inv.network(key)
        if row is not None:
            self.dns.set_zone(row.gateway, self.dns_records(key))

    # -- published ports -----------------------------------------------------------------------------

    def publish(self, container: str, address: str, ports: Sequence[PortSpec]) -> None:
        """DNAT ``ports`` to ``address``, replacing the container's previous set in one atomic batch;
        nothing is written when the rules already match."""
        with self._lock:
            for a in self.inv.attachments(container):
                net = self.inv.network(a.network)
                if a.address == address and net is not None and net.internal:
                    raise NetworkError(f"container {container}: cannot publish ports on internal "
                                       f"network {a.network}")
            prefix = port_tag_prefix(container)
            want = port_rules(container, address, ports, self.nft.table)
            # each port has two rules (prerouting and output) carrying the same comment
            wanted = sorted([port_comment(container, p, address) for p in ports] * 2)
            have = sorted(r.comment for r in self.nft.rules() if r.comment.startswith(prefix))
            if have != wanted:
                self.nft.replace(want, prefix=prefix)

    def unpublish(self, container: str) -> None:
        with self._lock:
            self.nft.replace(prefix=port_tag_prefix(container))
            if not self.inv.networks() and not self.nft.published():
                self.nft.delete_table()

    def port_conflicts(self, ports: Iterable[PortSpec], container: str = "") -> list[str]:
        """Plan-time check: ``ports`` against listening sockets and other containers' published ports."""
        return port_conflicts(ports, listening(), self.nft.published(), owner=container)

    # -- garbage collection --------------------------------------------------------------------------

    def gc(self, known_containers: Iterable[str],
           known_networks: Iterable[tuple[str, str]] | None = None) -> list[str]:
        """Clean what belongs to containers (and, if given, networks) that no longer exist: after a kill
        -9 in the middle of an attach or a delete. Goes by the inventory and our rule tags only."""
        known = set(known_containers)
        done: list[str] = []
        with self._lock:
            self.flush()
            for container in sorted(self.inv.containers() - known):
                self.detach(container)
                done.append(f"detached {container}")
            for owner in sorted(self.ipam.owners() - known):
                self.ipam.release(owner)
                done.append(f"released addresses of {owner}")
            for container in sorted({p.container for p in self.nft.published()} - known):
                self.unpublish(container)
                done.append(f"unpublished ports of {container}")
            if known_networks is not None:
                keep = {network_key(s, n) for s, n in known_networks}
                for row in self.inv.networks():
                    if row.key not in keep and not self.inv.attachments(network=row.key):
                        self.remove_network(row.stack, row.name)
                        done.append(f"removed network {row.key}")
        return done

    # -- host state ----------------------------------------------------------------------------------

    def _host_routes(self) -> list[str]:
        """Subnets routed on the host, except via our own bridges and default routes."""
        return links.host_routes(self.ipr, {r.bridge for r in self.inv.networks()})

    def _forwarding_on(self) -> None:
        if not self.forwarding:
            return
        current = sysctl.read(IP_FORWARD)
        if current != "1":
            with transaction(self.conn):
                self.inv.put_sysctl(IP_FORWARD, current)      # recorded before the change
            sysctl.write(IP_FORWARD, "1")

    def _restore_sysctls(self) -> None:
        original = self.inv.sysctl_original(IP_FORWARD)
        if original is not None:
            sysctl.write(IP_FORWARD, original)
            with transaction(self.conn):
                self.inv.delete_sysctl(IP_FORWARD)
