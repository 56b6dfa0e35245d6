"""Spec hash: stable, and changed only by fields that need a recreate."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from orchestrator.manifest import load_text, model
from orchestrator.manifest.hashing import canonical, resources_hash, spec_hash

TEXT = """apiVersion: orchestrator/v1
kind: Stack
metadata: {name: shop}
spec:
  services:
    api:
      image: busybox:latest
      command: [httpd, -f]
      env: {B: "2", A: "1"}
      resources: {cpus: 0.5, memory: 64Mi}
      healthcheck: {exec: ["true"], interval: 5s}
      ports: ["8080:80", "9090:90"]
      configs: [motd]
  configs:
    motd: {content: hi}
  networks:
    default: {subnet: 10.88.0.0/24}
"""


def service() -> tuple[model.Stack, model.Service]:
    st = load_text(TEXT, "m.yaml").stacks[0]
    return st, st.services[0]


def test_same_input_same_hash_and_known_shape() -> None:
    st, svc = service()
    h = spec_hash(st, svc)
    assert h == spec_hash(*service())
    assert len(h) == 64 and int(h, 16) >= 0


def test_order_of_maps_and_unordered_lists_does_not_matter() -> None:
    st, svc = service()
    other = TEXT.replace('env: {B: "2", A: "1"}', 'env: [A=1, B=2]').replace(
        '["8080:80", "9090:90"]', '["9090:90", "8080:80"]')
    st2 = load_text(other, "elsewhere/m.yaml").stacks[0]
    assert spec_hash(st, svc) == spec_hash(st2, st2.services[0])


def test_stable_across_processes() -> None:
    # a fresh interpreter (new hash seed) must compute the same value
    code = ("import sys; from orchestrator.manifest import load_text; from orchestrator.manifest.hashing "
            "import spec_hash; st = load_text(sys.stdin.read(), 'm.yaml').stacks[0]; "
            "print(spec_hash(st, st.services[0]))")
    out = subprocess.run([sys.executable, "-c", code], input=TEXT, capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "123"}).stdout.strip()
    assert out == spec_hash(*service())


@pytest.mark.parametrize("change", [
    {"resources": model.Resources(cpus=1.0)}, {"replicas": 5}, {"restart": model.RestartPolicy("always")},
    {"healthcheck": None}, {"depends_on": (model.Dependency("db"),)}, {"labels": (("a", "b"),)},
    {"update": model.UpdateConfig(parallelism=3)}, {"stop_grace_period_s": 1.0},
])
def test_in_place_fields_do_not_change_spec_hash(change: dict[str, object]) -> None:
    st, svc = service()
    assert spec_hash(st, replace(svc, **change)) == spec_hash(st, svc)  # type: ignore[arg-type]


@pytest.mark.parametrize("change", [
    {"image": "busybox:1.36"}, {"command": ("httpd",)}, {"env": (("A", "2"),)}, {"user": "1000"},
    {"security": model.Security(read_only_rootfs=True)}, {"ports": ()},
    {"volumes": (model.VolumeMount("tmpfs", "/tmp"),)}, {"network": model.NetworkMode("host", networks=())},
    {"configs": (model.FileMount("motd", "/etc/motd"),)}, {"namespaces": model.Namespaces(pid="host")},
])
def test_recreate_fields_change_spec_hash(change: dict[str, object]) -> None:
    st, svc = service()
    assert spec_hash(st, replace(svc, **change)) != spec_hash(st, svc)  # type: ignore[arg-type]


def test_network_definition_enters_spec_hash() -> None:
    st, svc = service()
    st2 = replace(st, networks=(model.Network("default", subnet="10.99.0.0/24"),))
    assert spec_hash(st2, svc) != spec_hash(st, svc)


def test_resources_hash() -> None:
    _, svc = service()
    assert resources_hash(svc) == resources_hash(replace(svc, image="other"))
    assert resources_hash(svc) != resources_hash(replace(svc, resources=model.Resources(cpus=0.25)))


def test_canonical_floats_and_source_left_out() -> None:
    assert canonical(0.1 + 0.2) == "0.3"
    assert "source" not in canonical(model.Volume("v", source=model.SourceRef("f", 1, 1)))
