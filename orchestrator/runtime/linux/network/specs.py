"""What the network layer needs to know of a network and of a port, as read-only Protocols.

``orchestrator.manifest.model.Network`` and ``.Port`` satisfy these structurally, so callers pass the
manifest's objects as they are, while the runtime does not import the manifest package (the layering
contract in pyproject's import-linter section: the runtime knows nothing of manifests).
"""

from __future__ import annotations

from typing import Protocol


class NetworkSpec(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def subnet(self) -> str | None: ...          # None = allocated from the pool

    @property
    def internal(self) -> bool: ...              # no default route, no published ports


class PortSpec(Protocol):
    @property
    def host_port(self) -> int: ...

    @property
    def container_port(self) -> int: ...

    @property
    def protocol(self) -> str: ...               # "tcp" | "udp"

    @property
    def host_ip(self) -> str: ...                # "" = every address of the host


def port_text(port: PortSpec) -> str:
    """``[host_ip:]host_port:container_port/protocol``, as the manifest writes it."""
    ip = f"{port.host_ip}:" if port.host_ip else ""
    return f"{ip}{port.host_port}:{port.container_port}/{port.protocol}"
