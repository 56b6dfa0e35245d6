"""Parse the units of manifests: sizes (``64Mi``), CPUs (``0.5``, ``500m``), durations (``1m30s``).

Pure functions over already schema-checked values. The regular expressions here are the same ones the
JSON schema uses (``schemas/stack.schema.json`` repeats them; a unit test keeps the two equal), so a
string that passed the schema always parses; the parsers still raise ``ValueError`` on bad input so that
they are safe to call on their own.

Conventions follow Kubernetes: ``k``/``M``/``G``/``T``/``P`` are powers of 1000, ``Ki``/``Mi``/``Gi``/
``Ti``/``Pi`` powers of 1024; an optional trailing ``B`` is allowed (``MB``, ``MiB``). A bare number is
bytes. CPUs are a positive number or millicores (``250m``). Durations are Go-style sequences
(``1h2m3.5s``, ``500ms``) or a bare number of seconds.

Neighbours: ``manifest.convert`` calls these; ``manifest.checks`` enforces ranges on the results.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# Shared with the schema (kept equal by tests/unit/manifest/test_units.py).
BYTES_PATTERN = r"^[0-9]+(\.[0-9]+)?\s*([kKMGTP]i?)?B?$"
CPUS_PATTERN = r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$"
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"

_BYTES_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([kKMGTP]i?)?B?$")
_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")

_BYTE_FACTORS: dict[str, int] = {
    "": 1,
    "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "P": 1000**5,
    "Ki": 1024, "ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "Pi": 1024**5,
}
_DURATION_FACTORS: dict[str, Decimal] = {
    "ns": Decimal("1e-9"), "us": Decimal("1e-6"), "ms": Decimal("1e-3"),
    "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600),
}


def parse_bytes(value: int | float | str) -> int:
    """``64Mi`` -> 67108864, ``1G`` -> 10**9, ``512k`` -> 512000, ``4096`` -> 4096 (bytes).

    Fractions round down to a whole byte (``1.5Ki`` -> 1536). ``-1`` (unlimited) passes through as -1.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {value!r}")
    if isinstance(value, int):
        if value < -1:
            raise ValueError(f"size must be >= 0, got {value}")
        return value
    if isinstance(value, float):
        if not value.is_integer() or value < -1:
            raise ValueError(f"size must be a whole number of bytes, got {value!r}")
        return int(value)
    text = value.strip()
    if text == "-1":
        return -1
    match = _BYTES_RE.match(text)
    if match is None:
        raise ValueError(f"expected a size like 64Mi, 1G or 512k, got {value!r}")
    number, suffix = match.group(1), match.group(2) or ""
    return int(Decimal(number) * _BYTE_FACTORS[suffix])


def parse_cpus(value: int | float | str) -> float:
    """``0.5`` -> 0.5, ``"1.5"`` -> 1.5, ``"250m"`` -> 0.25 (a number of CPUs)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number of CPUs, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        if text.endswith("m"):
            return float(Decimal(text[:-1]) / 1000)
        return float(Decimal(text))
    except InvalidOperation as exc:
        raise ValueError(f"expected a number of CPUs like 0.5 or 500m, got {value!r}") from exc


def parse_duration(value: int | float | str) -> float:
    """``500ms`` -> 0.5, ``5s`` -> 5.0, ``1m30s`` -> 90.0, ``2`` -> 2.0 (seconds)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must be >= 0, got {value!r}")
        return float(value)
    text = value.strip()
    pos, total = 0, Decimal(0)
    for match in _DURATION_PART_RE.finditer(text):
        if match.start() != pos:
            break
        total += Decimal(match.group(1)) * _DURATION_FACTORS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(text):
        raise ValueError(f"expected a duration like 500ms, 5s or 1m30s, got {value!r}")
    return float(total)


def parse_mode(value: int | str) -> int:
    """File mode: an integer (YAML ``0444`` is already octal) or an octal string ``"0444"``/``"444"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a file mode, got {value!r}")
    if isinstance(value, int):
        mode = value
    else:
        try:
            mode = int(value, 8)
        except ValueError as exc:
            raise ValueError(f"expected an octal file mode like 0444, got {value!r}") from exc
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"file mode must be between 0 and 07777, got {oct(mode)}")
    return mode


def format_bytes(n: int) -> str:
    """The shortest exact binary form: 67108864 -> ``64Mi``; for messages and the reference."""
    for suffix in ("Pi", "Ti", "Gi", "Mi", "Ki"):
        factor = _BYTE_FACTORS[suffix]
        if n >= factor and n % factor == 0:
            return f"{n // factor}{suffix}"
    return str(n)


def parse_cpuset(text: str) -> tuple[int, ...]:
    """``"0-3,5"`` -> (0, 1, 2, 3, 5). Raises ValueError on syntax errors or reversed ranges."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f'empty element in cpu list "{text}"')
        lo_s, sep, hi_s = part.partition("-")
        if not lo_s.isdigit() or (sep and not hi_s.isdigit()):
            raise ValueError(f'expected a cpu list like "0-3,5", got "{text}"')
        lo = int(lo_s)
        hi = int(hi_s) if sep else lo
        if hi < lo:
            raise ValueError(f'reversed range "{part}" in cpu list "{text}"')
        if hi - lo > 4096:
            raise ValueError(f'range "{part}" in cpu list "{text}" is too large')
        cpus.update(range(lo, hi + 1))
    return tuple(sorted(cpus))
