"""Container networking on one host: per-stack bridge networks, veths, IPAM, published ports, discovery.

Modules: ``manager`` (the API: ``NetworkManager``), ``links`` (pyroute2: bridges, veths, netns sockets,
``setup_loopback``), ``ports`` (nftables table ``ip orchestrator``: DNAT, masquerade, isolation; port
conflicts), ``dns`` (a small authoritative DNS server on the bridge gateways), ``hosts`` (hosts file and
resolv.conf text), ``inventory`` (what we created, in SQLite), ``naming`` (stable names and rule tags),
``sysctl``. Addresses and subnets live in ``orchestrator.store.ipam``.
"""

from .hosts import hosts_file, resolv_conf
from .links import setup_loopback
from .manager import NetworkInfo, NetworkManager

__all__ = ["NetworkInfo", "NetworkManager", "hosts_file", "resolv_conf", "setup_loopback"]
