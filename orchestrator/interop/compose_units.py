"""Compose's value syntaxes, parsed into plain values: durations, byte sizes, ports, volume strings.

Pure string work with no knowledge of the file: each parser raises ``ValueError`` with a short reason, and
``interop.compose_service`` turns that into a located problem. Formatters write values back in the units
our manifest accepts (``90s``, ``500ms``, ``64Mi``), so converted stacks read naturally.

Neighbours: ``interop.compose_service`` (the only caller).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_BYTES = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)", re.IGNORECASE)
_BYTE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_duration(value: object) -> float:
    """Go-style duration (``1m30s``, ``500ms``, ``2h``) or a bare number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):     # YAML's .inf / .nan
        raise ValueError(f"expected a finite duration, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if not text:
        raise ValueError("expected a duration, got an empty string")
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise ValueError(f"expected a duration like 10s or 1m30s, got {text!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return total


def format_duration(seconds: float) -> str:
    """Seconds -> ``90s`` when whole, else ``1500ms`` (whole milliseconds)."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def parse_bytes(value: object) -> int:
    """Docker byte size (``512m``, ``1g``, ``1gb``, ``2048k``, an int of bytes) -> bytes (powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a byte size, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite byte size, got {value!r}")
        return int(value)
    m = _BYTES.fullmatch(str(value).strip())
    if m is None:
        raise ValueError(f"expected a byte size like 512m or 1g, got {value!r}")
    return int(float(m.group(1)) * 1024 ** _BYTE_POWERS[m.group(2).lower()])


def format_bytes(n: int) -> str | int:
    """Bytes -> the largest exact binary unit (``64Mi``); a plain int when no unit divides it."""
    if n <= 0:
        return n
    for suffix, power in (("Ti", 4), ("Gi", 3), ("Mi", 2), ("Ki", 1)):
        if n % 1024 ** power == 0:
            return f"{n // 1024 ** power}{suffix}"
    return n


@dataclass(frozen=True)
class PortSpec:
    host_ip: str
    host_port: int | None             # None = an ephemeral port chosen by the engine
    container_port: int
    protocol: str

    def manifest(self) -> str:
        """Our ``[IP:]HOST:CONTAINER/proto``; an ephemeral host port becomes the container port."""
        host = self.host_port if self.host_port is not None else self.container_port
        ip = f"{self.host_ip}:" if self.host_ip else ""
        return f"{ip}{host}:{self.container_port}/{self.protocol}"


def _port_range(text: str) -> list[int]:
    first, _, last = text.partition("-")
    try:
        lo = int(first)
        hi = int(last) if last else lo
    except ValueError:
        raise ValueError(f"expected a port or range, got {text!r}") from None
    if not (0 < lo <= hi <= 65535):
        raise ValueError(f"port out of range: {text!r}")
    return list(range(lo, hi + 1))


def parse_port(value: object) -> list[PortSpec]:
    """Short port syntax ``[IP:][HOST[-HOST]:]CONTAINER[-CONTAINER][/proto]``; ranges expand."""
    text = str(value).strip()
    body, _, proto = text.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise ValueError(f"unsupported protocol {proto!r} (tcp or udp)")
    host_ip = ""
    if body.startswith("["):                       # [::1]:8080:80
        close = body.find("]")
        if close < 0:
            raise ValueError(f"unterminated IPv6 address in {text!r}")
        host_ip, body = body[1:close], body[close + 2:]
    parts = body.rsplit(":", 2)
    if len(parts) == 3:
        host_ip = host_ip or parts[0]
        parts = parts[1:]
    container = _port_range(parts[-1])
    if len(parts) == 1 or parts[0] == "":
        return [PortSpec(host_ip, None, c, proto) for c in container]
    host = _port_range(parts[0])
    if len(host) == 1 and len(container) > 1:
        raise ValueError(f"one host port for a range of container ports: {text!r}")
    if len(host) != len(container):
        if len(container) == 1:                   # Compose: first free port of the host range
            return [PortSpec(host_ip, host[0], container[0], proto)]
        raise ValueError(f"host and container port ranges differ in length: {text!r}")
    return [PortSpec(host_ip, h, c, proto) for h, c in zip(host, container, strict=True)]


@dataclass(frozen=True)
class VolumeSpec:
    type: str                          # bind | volume | tmpfs
    source: str
    target: str
    read_only: bool
    options: tuple[str, ...]           # mode flags we did not use (z, Z, cached, rprivate, ...)


def parse_volume(value: object) -> VolumeSpec:
    """Short volume syntax ``[SOURCE:]TARGET[:MODE]``; a SOURCE that looks like a path is a bind."""
    parts = str(value).split(":")
    if len(parts) > 3 or not parts[-1 if len(parts) == 1 else 1]:
        raise ValueError(f"expected [SOURCE:]TARGET[:MODE], got {value!r}")
    if len(parts) == 1:
        return VolumeSpec("volume", "", parts[0], False, ())
    source, target = parts[0], parts[1]
    flags = tuple(f for f in (parts[2].split(",") if len(parts) == 3 else []) if f)
    read_only = "ro" in flags
    rest = tuple(f for f in flags if f not in ("ro", "rw"))
    kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
    return VolumeSpec(kind, source, target, read_only, rest)
