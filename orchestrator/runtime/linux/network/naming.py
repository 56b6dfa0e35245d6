"""Stable kernel names and rule tags for our network objects (pure).

Interface names must fit IFNAMSIZ (15 characters) and be derivable again after a crash from what the
inventory holds, so they are short hashes of our own keys: a network key is ``"<stack>/<network>"``, its
bridge ``orc-<hash8>``; a container's host-side veth end on that network is ``orv<hash10>``. Inside the
container the interfaces are ``eth0``, ``eth1``... in the order the networks are given to ``attach``.

nftables rules carry a comment naming their owner so that removal deletes exactly them:
``net <key>`` for a network's rules, ``port <container> <host_ip|*> <host_port>/<proto> <addr>:<port>`` for
a published port (parsed back by ``ports.parse_port_comment`` for conflict checks and idempotence).

Neighbours: used by ``ports`` and ``manager``.
"""

from __future__ import annotations

import hashlib

IFNAMSIZ = 15
BRIDGE_PREFIX = "orc-"
VETH_PREFIX = "orv"


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def network_key(stack: str, name: str) -> str:
    return f"{stack}/{name}"


def bridge_name(key: str) -> str:
    """``orc-`` + 8 hex digits of the network key: 12 characters."""
    return BRIDGE_PREFIX + _digest(key, 8)


def veth_name(container: str, key: str) -> str:
    """Host end of ``container``'s veth on network ``key``: ``orv`` + 10 hex digits (13 characters)."""
    return VETH_PREFIX + _digest(f"{container}\0{key}", 10)


def container_ifname(index: int) -> str:
    return f"eth{index}"


def network_tag(key: str) -> str:
    return f"net {key}"


def port_tag_prefix(container: str) -> str:
    return f"port {container} "
