"""Compose value syntaxes: ports, volumes, durations and byte sizes."""

from __future__ import annotations

import pytest

from orchestrator.interop.compose_units import (
    format_bytes,
    format_duration,
    parse_bytes,
    parse_duration,
    parse_port,
    parse_volume,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("80", ["80:80/tcp"]),
    ("8080:80", ["8080:80/tcp"]),
    ("127.0.0.1:8080:80", ["127.0.0.1:8080:80/tcp"]),
    ("127.0.0.1::80", ["127.0.0.1:80:80/tcp"]),
    ("53:53/udp", ["53:53/udp"]),
    ("[::1]:8080:80", ["::1:8080:80/tcp"]),
    ("9090-9091:8080-8081", ["9090:8080/tcp", "9091:8081/tcp"]),
    ("8000-8010:80", ["8000:80/tcp"]),
    (8080, ["8080:8080/tcp"]),
])
def test_parse_port(text: str | int, expected: list[str]) -> None:
    assert [p.manifest() for p in parse_port(text)] == expected


@pytest.mark.parametrize("text", ["80/sctp", "0:80", "70000", "8080:80-81", "1-3:1-2", "abc"])
def test_parse_port_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_port(text)


def test_parse_volume_forms() -> None:
    assert parse_volume("/data") == parse_volume("/data")
    anon = parse_volume("/data")
    assert (anon.type, anon.source, anon.target) == ("volume", "", "/data")
    named = parse_volume("db:/var/lib/db:ro")
    assert (named.type, named.source, named.read_only) == ("volume", "db", True)
    bind = parse_volume("./conf:/etc/app:ro,z")
    assert (bind.type, bind.source, bind.read_only, bind.options) == ("bind", "./conf", True, ("z",))
    assert parse_volume("~/x:/x").type == "bind"
    with pytest.raises(ValueError):
        parse_volume("a:b:c:d")


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), ("1.5s", 1.5), (30, 30.0),
    ("1h2m3s", 3723.0),
])
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "abc", "5 s", "1d", float("inf"), float("nan")])
def test_parse_duration_errors(text: str | float) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(90.0) == "90s"
    assert format_duration(0.25) == "250ms"


@pytest.mark.parametrize(("text", "n"), [
    ("512m", 512 * 1024**2), ("1g", 1024**3), ("1gb", 1024**3), ("2048k", 2 * 1024**2), ("100", 100),
    (4096, 4096), ("256M", 256 * 1024**2), ("1.5g", int(1.5 * 1024**3)),
])
def test_parse_bytes(text: str | int, n: int) -> None:
    assert parse_bytes(text) == n


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_parse_bytes_refuses_non_finite_numbers(value: float) -> None:     # YAML's .inf / .nan
    with pytest.raises(ValueError, match="finite"):
        parse_bytes(value)


def test_format_bytes_picks_exact_binary_units() -> None:
    assert format_bytes(64 * 1024**2) == "64Mi"
    assert format_bytes(3 * 1024**3) == "3Gi"
    assert format_bytes(1000) == 1000
    assert format_bytes(-1) == -1
