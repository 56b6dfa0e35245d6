"""Kernel links through pyroute2 (IPRoute; no IPDB): bridges, veth pairs, netlink sockets in a netns.

- ``ns_iproute(path)`` opens an rtnetlink socket *inside* a network namespace: a short-lived thread
  setns()es into it and creates the socket (a socket stays in the namespace it was created in), so the
  calling thread never changes namespace and no helper process is forked (pyroute2's own ``netns=``
  forks one, which costs more than our whole 10 ms budget per container).
- ``ensure_bridge`` / ``attach_veth`` / ``delete_link`` are the only places that create or delete links;
  ``OSError``/``NetlinkError`` become ``NetworkError`` naming the link and the operation. ``reaper``
  calls ``delete_link`` from its own thread, with its own IPRoute.
- ``host_routes``: the host's routed subnets, which a new network's subnet must avoid.

Neighbours: ``manager`` decides what to create and records it first; ``sysctl`` for per-bridge settings.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from orchestrator.errors import NetworkError

CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0
LOOPBACK_IFINDEX = 1          # the kernel gives "lo" index 1 in every network namespace

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(target: str | int) -> str:
    """A namespace path from a path or the pid of a process inside it."""
    return f"/proc/{target}/ns/net" if isinstance(target, int) else target


def _socket_in(path: str) -> socket.socket:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            # SOCK_DGRAM: netlink treats it like SOCK_RAW, and asyncio (inside pyroute2) insists on it
            box["sock"] = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
        except OSError as exc:
            box["err"] = exc

    thread = threading.Thread(target=run, name="orchestrator-setns")
    thread.start()
    thread.join()
    if "err" in box:
        raise NetworkError(f"netns {path}: cannot open a netlink socket inside it: {box['err']}") \
            from box["err"]
    sock: socket.socket = box["sock"]
    return sock


@contextmanager
def ns_iproute(path: str) -> Iterator[IPRoute]:
    fd = _socket_in(path).detach()          # IPRoute owns the descriptor from here and closes it
    try:
        ipr = IPRoute(fileno=fd)
    except (OSError, NetlinkError) as exc:
        os.close(fd)
        raise NetworkError(f"netns {path}: cannot start rtnetlink: {exc}") from exc
    try:
        yield ipr
    finally:
        ipr.close()


def link_index(ipr: IPRoute, name: str) -> int | None:
    try:
        found = ipr.link_lookup(ifname=name)
    except NetlinkError as exc:
        raise NetworkError(f"link {name}: lookup failed: {exc}") from exc
    return int(found[0]) if found else None


def loopback_up(ipr: IPRoute, where: str) -> None:
    try:
        ipr.link("set", index=LOOPBACK_IFINDEX, state="up")
    except NetlinkError as exc:
        raise NetworkError(f"netns {where}: cannot bring lo up: {exc}") from exc


def setup_loopback(netns: str | int) -> None:
    """Network mode ``none``: only ``lo``, up."""
    path = netns_path(netns)
    with ns_iproute(path) as ipr:
        loopback_up(ipr, path)


def ensure_bridge(ipr: IPRoute, name: str, gateway: str, prefixlen: int) -> int:
    """The bridge ``name`` exists, carries ``gateway/prefixlen`` and is up. Idempotent. Returns its index."""
    try:
        index = link_index(ipr, name)
        if index is None:
            ipr.link("add", ifname=name, kind="bridge")
            index = link_index(ipr, name)
            if index is None:
                raise NetworkError(f"bridge {name}: created but not found")
        try:
            ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        ipr.link("set", index=index, state="up")
    except NetlinkError as exc:
        raise NetworkError(f"bridge {name}: cannot set up with {gateway}/{prefixlen}: {exc}") from exc
    return index


def delete_link(ipr: IPRoute, name: str) -> bool:
    """Delete link ``name`` (for a veth, its peer goes with it). Returns False when it did not exist."""
    index = link_index(ipr, name)
    if index is None:
        return False
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise NetworkError(f"link {name}: cannot delete: {exc}") from exc
    return True


def create_veth(ipr: IPRoute, host_name: str, bridge_index: int, ns_fd: int, peer_name: str) -> None:
    """A veth pair whose host end is enslaved to the bridge and up, and whose peer is created directly
    inside the namespace behind ``ns_fd`` under its final name (no temporary host-side name)."""
    try:
        ipr.link("add", ifname=host_name, kind="veth", master=bridge_index, state="up",
                 peer={"ifname": peer_name, "net_ns_fd": ns_fd})
    except NetlinkError as exc:
        raise NetworkError(f"veth {host_name}: cannot create with peer {peer_name} in the container: "
                           f"{exc}") from exc


def configure_peer(ns_ipr: IPRoute, ifname: str, address: str, prefixlen: int, gateway: str | None,
                   where: str) -> None:
    """Inside the container: address on ``ifname``, link up, default route via ``gateway`` if given."""
    index = link_index(ns_ipr, ifname)
    if index is None:
        raise NetworkError(f"netns {where}: interface {ifname} missing after veth creation")
    try:
        ns_ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
        ns_ipr.link("set", index=index, state="up")
        if gateway:
            ns_ipr.route("add", dst="0.0.0.0/0", gateway=gateway, oif=index)
    except NetlinkError as exc:
        raise NetworkError(f"netns {where}: cannot configure {ifname} as {address}/{prefixlen}: "
                           f"{exc}") from exc


def host_routes(ipr: IPRoute, except_via: set[str]) -> list[str]:
    """Subnets routed on the host (``a.b.c.d/n``), except default routes and those via the links named
    in ``except_via`` (our own bridges)."""
    try:
        routes = ipr.get_routes(family=socket.AF_INET)
        names = {int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}
    except NetlinkError as exc:
        raise NetworkError(f"cannot read host routes: {exc}") from exc
    out = []
    for r in routes:
        dst, length = r.get_attr("RTA_DST"), int(r["dst_len"])
        if dst and length and names.get(int(r.get_attr("RTA_OIF") or 0)) not in except_via:
            out.append(f"{dst}/{length}")
    return out
