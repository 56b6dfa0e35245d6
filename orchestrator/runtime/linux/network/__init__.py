"""Container networking on one host: per-stack bridge networks, veths, IPAM, published ports, discovery.

Modules: ``manager`` (the API: ``NetworkManager``), ``links`` (pyroute2: bridges, veths, netns sockets,
``setup_loopback``), ``ports`` (nftables table ``ip orchestrator``: DNAT, masquerade, isolation; port
conflicts), ``dns`` (a small authoritative DNS server on the bridge gateways), ``hosts`` (hosts file and
resolv.conf text), ``inventory`` (what we created, in SQLite), ``naming`` (stable names and rule tags),
``sysctl``. Addresses and subnets live in ``orchestrator.store.ipam``.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hosts import hosts_file, resolv_conf
    from .links import setup_loopback
    from .manager import NetworkInfo, NetworkManager

__all__ = ["NetworkInfo", "NetworkManager", "hosts_file", "resolv_conf", "setup_loopback"]

# imported on first use: pyroute2 (behind ``links`` and ``manager``) takes ~100 ms to import, and the
# pure modules (``hosts``, ``inventory``, ``dns``) are needed by every CLI command that builds bundles
_WHERE = {"NetworkInfo": "manager", "NetworkManager": "manager", "hosts_file": "hosts",
          "resolv_conf": "hosts", "setup_loopback": "links"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
