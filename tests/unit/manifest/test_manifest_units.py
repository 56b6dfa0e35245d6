"""Units: sizes, CPUs, durations, modes, cpusets; and the schema's patterns match the parsers'."""

from __future__ import annotations

import re

import pytest

from orchestrator.manifest import units
from orchestrator.manifest.schema import load_schema


@pytest.mark.parametrize(("text", "expected"), [
    ("64Mi", 64 * 2**20), ("1G", 10**9), ("512k", 512_000), ("512K", 512_000), ("1Ki", 1024),
    ("1.5Gi", 3 * 2**29), ("100", 100), (4096, 4096), ("10MB", 10**7), ("2MiB", 2 * 2**20), ("-1", -1),
    (-1, -1), (2.0, 2), ("1 Gi", 2**30),
])
def test_parse_bytes(text: str | int, expected: int) -> None:
    assert units.parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["64Q", "Mi", "", "1.5.2G", "-5", True, 1.5, "1mi", -2])
def test_parse_bytes_rejects(bad: str | int | float) -> None:
    with pytest.raises(ValueError):
        units.parse_bytes(bad)


@pytest.mark.parametrize(("text", "expected"), [
    ("500ms", 0.5), ("5s", 5.0), ("1m30s", 90.0), ("1h", 3600.0), ("2h1m1.5s", 7261.5), ("250us", 0.00025),
    ("100ns", 1e-7), (2, 2.0), (0.25, 0.25),
])
def test_parse_duration(text: str | float, expected: float) -> None:
    assert units.parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["5 sec", "s", "", "1m30", "5S", "-1s", -1, False])
def test_parse_duration_rejects(bad: str | float) -> None:
    with pytest.raises(ValueError):
        units.parse_duration(bad)


@pytest.mark.parametrize(("text", "expected"), [("0.5", 0.5), (2, 2.0), ("500m", 0.5), (0.25, 0.25)])
def test_parse_cpus(text: str | float, expected: float) -> None:
    assert units.parse_cpus(text) == expected


def test_parse_mode_and_cpuset() -> None:
    assert units.parse_mode("0644") == 0o644
    assert units.parse_mode(0o400) == 0o400
    assert units.parse_cpuset("0-3,5") == (0, 1, 2, 3, 5)
    assert units.parse_cpuset("1,1,0") == (0, 1)
    for bad in ("3-1", "0-", "a", "1,,2", ""):
        with pytest.raises(ValueError):
            units.parse_cpuset(bad)
    with pytest.raises(ValueError):
        units.parse_mode("0999")


def test_format_bytes() -> None:
    assert units.format_bytes(64 * 2**20) == "64Mi"
    assert units.format_bytes(1000) == "1000"


def test_schema_patterns_are_the_parsers_patterns() -> None:
    defs = load_schema()["$defs"]
    assert defs["bytes"]["oneOf"][1]["pattern"] == units.BYTES_PATTERN
    assert defs["cpus"]["oneOf"][1]["pattern"] == units.CPUS_PATTERN
    assert defs["duration"]["oneOf"][1]["pattern"] == units.DURATION_PATTERN


@pytest.mark.parametrize("text", ["64Mi", "1G", "512k", "1.5Gi", "10MB", "7"])
def test_every_schema_valid_size_parses(text: str) -> None:
    assert re.search(units.BYTES_PATTERN, text)
    units.parse_bytes(text)
