"""state.canonical: snapshots round-trip (rollback rebuilds the model from them), hashes split
recreate / in-place fields, field diffs read like the manifest; and the real bundle builder's files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from orchestrator.manifest.model import (
    Blkio,
    Config,
    Dependency,
    DeviceRate,
    FileMount,
    Healthcheck,
    Network,
    NetworkMode,
    Port,
    Resources,
    RestartPolicy,
    Secret,
    Security,
    Service,
    Stack,
    StackSet,
    Ulimit,
    UpdateConfig,
    UserNamespace,
    Volume,
    VolumeMount,
)
from orchestrator.reconcile.bundle import BundleBuilder, device_numbers
from orchestrator.settings import Settings
from orchestrator.state import canonical
from orchestrator.state.desired import desired_state


def rich_stack() -> Stack:
    api = Service(
        name="api", image="busybox:1", entrypoint=("/bin/sh", "-c"), command=("httpd -f",),
        env=(("A", "1"), ("B", "2")), working_dir="/srv", user="1000:1000", groups=(5, 6), replicas=2,
        restart=RestartPolicy("always", max_retries=3), resources=Resources(
            cpus=0.5, cpu_shares=512, cpuset_cpus="0", memory=64 << 20, pids=100,
            blkio=Blkio(weight=300, read_bps=(DeviceRate("/dev/null", 1 << 20),))),
        security=Security(cap_add=("CAP_NET_ADMIN",), userns=UserNamespace(), sysctls=(("net.x", "1"),)),
        ulimits=(Ulimit("nofile", 1, 2),), oom_score_adj=10,
        healthcheck=Healthcheck(kind="http", http_path="/h", port=80),
        depends_on=(Dependency("db", "healthy"),),
        ports=(Port(8080, 80),), volumes=(VolumeMount("volume", "/data", "data"),),
        network=NetworkMode("bridge", networks=("default", "back")), update=UpdateConfig(order="start-first"),
        labels=(("team", "web"),), configs=(FileMount("c", "/etc/c"),), secrets=(FileMount("s", "/run/s"),))
    return Stack(name="shop", services=(api, Service(name="db", rootfs="/srv/rootfs")),
                 volumes=(Volume("data"),), networks=(Network("back", internal=True), Network("default")),
                 configs=(Config("c", content="x"),), secrets=(Secret("s", env="S"),), labels=(("a", "b"),))


def test_snapshot_round_trips_to_an_equal_model() -> None:
    stack = rich_stack()
    _plain, text, h = canonical.stack_snapshot(stack)
    back = canonical.stack_from_snapshot(text)
    assert back == stack and canonical.stack_snapshot(back)[2] == h
    assert json.loads(text)["services"][0]["env"] == [["A", "1"], ["B", "2"]]


def test_hash_split_recreate_vs_in_place() -> None:
    base = canonical.to_plain(rich_stack().services[0])
    spec, res, cfg = canonical.service_hashes(base)
    more_mem = canonical.to_plain(replace(rich_stack().services[0], resources=Resources(memory=1)))
    assert canonical.service_hashes(more_mem)[0] == spec and canonical.service_hashes(more_mem)[1] != res
    scaled = canonical.to_plain(replace(rich_stack().services[0], replicas=5, restart=RestartPolicy("never")))
    s2, r2, c2 = canonical.service_hashes(scaled)
    assert (s2, r2) == (spec, res) and c2 != cfg
    new_image = canonical.to_plain(replace(rich_stack().services[0], image="busybox:2"))
    assert canonical.service_hashes(new_image)[0] != spec


def test_changed_fields_read_like_the_manifest() -> None:
    old = {"resources": {"memory_swap": 1 << 30, "cpu_shares": 2}, "env": [["A", "1"]]}
    new = {"resources": {"memory_swap": 2 << 30, "cpu_shares": 4}, "env": [["A", "2"]]}
    assert canonical.changed_fields(old, new) == ["resources.memorySwap: 1Gi -> 2Gi",
                                                  "resources.cpuShares: 2 -> 4", "env: [[\"A\",\"1\"]] -> "
                                                  "[[\"A\",\"2\"]]"]
    many = canonical.changed_fields({str(i): i for i in range(6)}, {str(i): -i - 1 for i in range(6)})
    assert len(many) == 5 and many[-1] == "... (2 more)"


def test_bundle_builder_writes_config_and_rootfs_overlay(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    settings = Settings(root=tmp_path / "state")
    b = BundleBuilder(settings)
    db = Service(name="db", rootfs=str(rootfs), command=("sleep", "1"),
                 resources=Resources(memory=1 << 26, blkio=Blkio(read_bps=(DeviceRate("/dev/null", 5),))))
    dc = desired_state(StackSet(stacks=(Stack(name="s", services=(db,)),))).containers["s/db-1"]
    bundle, mounts = b.prepare(dc, "s_db_1_abc")
    cfg = json.loads((bundle / "config.json").read_text())
    assert cfg["process"]["args"] == ["sleep", "1"] and cfg["hostname"] == "db-1"
    assert cfg["linux"]["seccomp"]["defaultAction"]            # the default profile, compiled at the edge
    assert cfg["linux"]["resources"]["blockIO"]["throttleReadBpsDevice"] == [
        {"major": 1, "minor": 3, "rate": 5}]
    (m,) = mounts
    assert m.type == "overlay" and f"lowerdir={rootfs}" in ",".join(m.options)
    assert device_numbers(db) == {"/dev/null": (1, 3)}
    assert b.resources(dc)["memory"] == {"limit": 1 << 26}
    b.cleanup("s_db_1_abc")
    assert not bundle.exists()
    vol = b.volume_path("s", "data")
    b.make_volume(vol)
    assert vol.is_dir() and vol == settings.volumes_dir / "s_data"
    b.remove_volume(vol)
    assert not vol.exists()
