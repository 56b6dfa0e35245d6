"""Semantic checks over whole stack sets; each problem located at the declaring node."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ManifestError
from orchestrator.manifest import load, load_text
from orchestrator.manifest.checks import CHECKS, Host

HEAD = "apiVersion: orchestrator/v1\nkind: Stack\nmetadata: {{name: {name}}}\nspec:\n  services:\n"


def stack(services: str, name: str = "shop", extra: str = "") -> str:
    return HEAD.format(name=name) + services + extra


def messages(text: str, cpus: int = 2) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_text(text, "m.yaml", host=Host(cpus=cpus))
    return [p.message for p in info.value.problems]


def test_checks_are_named_and_unique() -> None:
    names = [n for n, _ in CHECKS]
    assert len(names) == len(set(names)) >= 8


def test_valid_stack_passes_all_checks() -> None:
    text = stack("    db: {image: busybox:latest, healthcheck: {tcp: {port: 5432}}}\n"
                 "    api: {image: busybox:latest, dependsOn: {db: healthy}, ports: ['8080:80']}\n"
                 "    side: {image: busybox:latest, network: 'container:api'}\n")
    st = load_text(text, "m.yaml", host=Host(cpus=2)).stacks[0]
    assert [s.name for s in st.services] == ["api", "db", "side"]
    assert [n.name for n in st.networks] == ["default"]


def test_cycle_is_named() -> None:
    text = stack("    a: {image: busybox:latest, dependsOn: [b]}\n"
                 "    b: {image: busybox:latest, dependsOn: [a]}\n")
    assert messages(text) == ["dependency cycle: a -> b -> a"]


def test_two_cycles_are_both_reported() -> None:
    text = stack("    a: {image: i, dependsOn: [b]}\n    b: {image: i, dependsOn: [a]}\n"
                 "    c: {image: i, dependsOn: [d]}\n    d: {image: i, dependsOn: [c]}\n")
    assert messages(text) == ["dependency cycle: a -> b -> a", "dependency cycle: c -> d -> c"]


def test_long_dependency_chain_and_its_cycle() -> None:
    n = 1000   # deeper than Python's default recursion limit
    body = "".join(f"    s{i}: {{image: i, dependsOn: [s{i + 1}]}}\n" for i in range(n - 1))
    load_text(stack(body + f"    s{n - 1}: {{image: i}}\n"), "m.yaml")
    with pytest.raises(ManifestError) as info:
        load_text(stack(body + f"    s{n - 1}: {{image: i, dependsOn: [s0]}}\n"), "m.yaml")
    (p,) = info.value.problems
    assert p.message.startswith("dependency cycle: s0 -> s1 -> s2 -> ")
    assert p.message.endswith(" -> s999 -> s0")


def test_port_conflicts_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(stack("    web: {image: i, ports: ['80:80']}\n", name="a"))
    (tmp_path / "b.yaml").write_text(stack("    web: {image: i, ports: ['127.0.0.1:80:8080']}\n", name="b"))
    (tmp_path / "c.yaml").write_text(stack("    dns: {image: i, ports: ['80:53/udp']}\n", name="c"))
    with pytest.raises(ManifestError) as info:
        load([tmp_path], host=Host(cpus=2))
    (p,) = info.value.problems
    assert p.file.endswith("b.yaml") and (p.line, p.col) == (6, 29)
    assert p.message.startswith("host port 80/tcp is already published by a/web at ")


def test_different_ips_do_not_conflict() -> None:
    text = stack("    a: {image: i, ports: ['127.0.0.1:80:80']}\n"
                 "    b: {image: i, ports: ['127.0.0.2:80:80']}\n")
    load_text(text, "m.yaml")


def test_cpuset_and_cpus_against_the_host() -> None:
    text = stack("    a: {image: i, resources: {cpuset: '0-3', cpus: 3}}\n")
    assert messages(text, cpus=2) == ["cpu 3 does not exist: this host has 2 (0-1)",
                                      "cpus must be > 0 and <= 2 (the CPUs of this host), got 3"]
    load_text(text, "m.yaml", host=Host(cpus=4))


def test_references() -> None:
    text = stack("    a:\n      image: i\n      volumes: ['data:/d', 'logs:/l', './here:/h']\n"
                 "      network: {networks: [front]}\n      configs: [c]\n      secrets: [s]\n",
                 extra="  volumes: {data: {}}\n")
    assert messages(text) == ['unknown volume "logs"; declare it under spec.volumes',
                              'unknown network "front"', 'unknown config "c"', 'unknown secret "s"']


def test_relative_paths_resolve_against_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "motd").write_text("hi")
    (tmp_path / "m.yaml").write_text(stack("    a:\n      image: i\n      volumes: ['./www:/www:ro']\n"
                                           "      configs: [motd]\n",
                                           extra="  configs: {motd: {file: motd}}\n"))
    st = load([tmp_path / "m.yaml"]).stacks[0]
    (mount,) = st.services[0].volumes
    assert (mount.type, mount.source, mount.read_only) == ("bind", str(tmp_path / "www"), True)
    assert st.configs[0].file == str(tmp_path / "motd")


def test_secret_env_and_mounts() -> None:
    text = stack("    a:\n      image: i\n      env: {TOKEN: x}\n"
                 "      secrets: [{source: t, env: TOKEN, target: /run/t}]\n"
                 "      volumes: [{type: tmpfs, target: /run/t}]\n",
                 extra="  secrets: {t: {env: T}}\n")
    assert sorted(messages(text)) == ['environment variable "TOKEN" is already set',
                                      'target "/run/t" is mounted twice']


def test_limits() -> None:
    text = stack("    a: {image: i, resources: {memory: 2Mi, memoryReservation: 3Mi, memorySwap: 1Mi}}\n"
                 "    b: {image: i, resources: {memorySwap: 1Gi}}\n"
                 "    c: {image: i, ulimits: {nofile: {soft: 10, hard: 5}}}\n")
    assert messages(text) == [
        "memory limit 2Mi is below the minimum 4Mi", "reservation 3Mi exceeds the memory limit 2Mi",
        "memorySwap 1Mi is below memory 2Mi (it is memory plus swap)", "memorySwap needs memory to be set",
        "soft limit 10 exceeds hard limit 5"]


def test_unique_stack_names_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(stack("    a: {image: i}\n"))
    (tmp_path / "b.yaml").write_text(stack("    b: {image: i}\n"))
    with pytest.raises(ManifestError) as info:
        load([tmp_path])
    (p,) = info.value.problems
    assert p.file.endswith("b.yaml") and 'stack "shop" is already defined at ' in p.message
