"""Hosts-file discovery without the kernel: the text of a container's /etc/hosts from the network
inventory (pure), the bundle's discovery files, modes and bind mounts, and ``NetworkWiring``'s refresh
and network pruning over a temp SQLite store and temp bundle directories (no netlink socket is opened
when there is nothing to remove)."""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

from reconcile_helpers import World, sset, stack, svc

from orchestrator.manifest.model import Network, NetworkMode, Service, Stack, StackSet
from orchestrator.reconcile.bundle import BundleBuilder
from orchestrator.reconcile.network import NetworkWiring, wanted_networks
from orchestrator.runtime.fake import FakeRuntime
from orchestrator.runtime.linux.network.hosts import container_hosts
from orchestrator.runtime.linux.network.inventory import AttachmentRow, Inventory, NetworkRow
from orchestrator.settings import Settings
from orchestrator.state.desired import desired_state
from orchestrator.store import open_store


def row(cid: str, aliases: tuple[str, ...], address: str, network: str = "s/default",
        healthy: bool = True) -> AttachmentRow:
    return AttachmentRow(cid, network, f"v{cid}", "eth0", address, aliases, healthy)


ROWS = [
    row("s_a_1", ("a", "a-1"), "10.0.0.2"),
    row("s_b_1", ("b", "b-1"), "10.0.0.3"),
    row("s_b_2", ("b", "b-2"), "10.0.0.4"),
    row("s_x_1", ("x", "x-1"), "10.0.1.2", network="s/other"),
]


def test_container_hosts_lists_every_replica_of_its_networks_only() -> None:
    text = container_hosts("s_a_1", ROWS, "a-1")
    assert text.splitlines() == [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "10.0.0.2\ta a-1 s_a_1",
        "10.0.0.3\tb b-1 s_b_1",
        "10.0.0.4\tb b-2 s_b_2",
    ]
    assert "x" not in text.split()                     # another network: not reachable, not listed


def test_service_name_lists_healthy_replicas_unless_none_is() -> None:
    rows = [ROWS[0], row("s_b_1", ("b", "b-1"), "10.0.0.3", healthy=False), ROWS[2]]
    lines = container_hosts("s_a_1", rows, "a-1").splitlines()
    assert "10.0.0.3\tb-1 s_b_1" in lines and "10.0.0.4\tb b-2 s_b_2" in lines
    rows = [ROWS[0], row("s_b_1", ("b", "b-1"), "10.0.0.3", healthy=False)]
    assert "10.0.0.3\tb b-1 s_b_1" in container_hosts("s_a_1", rows, "a-1").splitlines()


def test_custom_hostname_goes_on_own_address_and_no_network_on_localhost() -> None:
    assert "10.0.0.2\ta a-1 box s_a_1" in container_hosts("s_a_1", ROWS, "box").splitlines()
    assert container_hosts("s_n_1", ROWS, "n-1").splitlines()[0] == "127.0.0.1\tlocalhost n-1"


def _stack(network: NetworkMode, networks: tuple[Network, ...] = ()) -> Stack:
    return Stack(name="s", services=(Service(name="a", rootfs="/", command=("sleep", "1"),
                                             network=network),), networks=networks)


def test_bundle_writes_discovery_files_with_private_modes(tmp_path: Path) -> None:
    settings = Settings(root=tmp_path / "state")
    dc = desired_state(StackSet(stacks=(_stack(NetworkMode()),))).containers["s/a-1"]
    bundle, _ = BundleBuilder(settings).prepare(dc, "s_a_1_abc")
    assert (settings.root.stat().st_mode & 0o777, settings.containers_dir.stat().st_mode & 0o777,
            bundle.stat().st_mode & 0o777) == (0o711, 0o700, 0o700)
    cfg = json.loads((bundle / "config.json").read_text())
    binds = {m["destination"]: m for m in cfg["mounts"] if m["destination"].startswith("/etc/")}
    assert set(binds) == {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}
    assert binds["/etc/hosts"]["source"] == str(bundle / "hosts") and "ro" in binds["/etc/hosts"]["options"]
    assert cfg["mounts"][-3:] == list(binds.values())         # last: a volume on /etc cannot hide them
    assert (bundle / "hostname").read_text() == "a-1\n"
    assert (bundle / "hosts").read_text().startswith("127.0.0.1\tlocalhost a-1\n")

    host = desired_state(StackSet(stacks=(_stack(NetworkMode(mode="host")),))).containers["s/a-1"]
    bundle, _ = BundleBuilder(settings).prepare(host, "s_a_1_host")
    cfg = json.loads((bundle / "config.json").read_text())
    assert {m["source"] for m in cfg["mounts"] if m["destination"] == "/etc/hosts"} == {"/etc/hosts"}
    assert not (bundle / "hosts").exists()


def test_bundle_leaves_an_existing_state_root_mode_alone(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    os.chmod(root, 0o755)
    dc = desired_state(StackSet(stacks=(_stack(NetworkMode()),))).containers["s/a-1"]
    BundleBuilder(Settings(root=root)).prepare(dc, "s_a_1_abc")
    assert root.stat().st_mode & 0o777 == 0o755 and (root / "containers").stat().st_mode & 0o777 == 0o700


def _wiring(tmp_path: Path) -> tuple[NetworkWiring, Inventory, Path]:
    db = tmp_path / "state.db"
    inv = open_store(db)
    net_inv = Inventory(sqlite3.connect(db, isolation_level=None))
    containers = tmp_path / "containers"
    for r in ROWS[:3]:
        net_inv.put_attachment(r)
        (containers / r.container).mkdir(parents=True)
        (containers / r.container / "hostname").write_text(f"{r.aliases[1]}\n")
        (containers / r.container / "hosts").write_text("127.0.0.1\tlocalhost\n")
    return NetworkWiring(db, FakeRuntime(), inv, containers), net_inv, containers


def test_refresh_rewrites_in_place_only_what_changed(tmp_path: Path) -> None:
    w, net_inv, containers = _wiring(tmp_path)
    hosts = containers / "s_a_1" / "hosts"
    inode = hosts.stat().st_ino
    assert w.refresh_hosts() == 3
    assert "10.0.0.4\tb b-2 s_b_2" in hosts.read_text().splitlines() and hosts.stat().st_ino == inode
    before = {p: p.stat().st_mtime_ns for p in containers.glob("*/hosts")}
    assert w.refresh_hosts() == 0                                   # up to date: nothing written
    assert {p: p.stat().st_mtime_ns for p in containers.glob("*/hosts")} == before
    net_inv.delete_attachment("s_b_2", "s/default")                  # b-2 went away
    assert w.refresh_hosts({"s/default"}) == 2                      # a-1 and b-1; b-2's bundle is stale
    assert "b-2" not in hosts.read_text().split() and hosts.stat().st_ino == inode
    assert w.refresh_hosts({"s/other"}) == 0
    net_inv.put_attachment(ROWS[2])                                  # b-2 is back
    w.inventory.record_health("s_b_1", False, "probe failed")         # b-1 leaves the service name "b"
    assert w.refresh_hosts() == 3
    assert "10.0.0.4\tb b-2 s_b_2" in hosts.read_text().splitlines()
    assert "10.0.0.3\tb-1 s_b_1" in hosts.read_text().splitlines()
    w.close()


def test_refresh_and_prune_on_a_store_without_network_tables_write_nothing(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    inv = open_store(db)
    changes = inv.store.total_changes()
    w = NetworkWiring(db, FakeRuntime(), inv, tmp_path / "containers")
    ds = desired_state(StackSet(stacks=(_stack(NetworkMode()),)))
    w.upkeep(ds)
    assert w._manager is None and inv.store.total_changes() == changes
    with closing(sqlite3.connect(db)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not any(t.startswith("net_") for t in tables)
    w.close()


def test_prune_keeps_wanted_and_attached_networks_without_opening_netlink(tmp_path: Path) -> None:
    w, net_inv, _ = _wiring(tmp_path)
    net_inv.put_network(NetworkRow("s/default", "s", "default", "orc-x", "10.0.0.0/24", "10.0.0.1", False))
    net_inv.put_network(NetworkRow("t/gone", "t", "gone", "orc-y", "10.0.2.0/24", "10.0.2.1", False))
    ds = desired_state(StackSet(stacks=(_stack(NetworkMode(networks=("default",))),)))
    # s/default is wanted; t/gone belongs to a stack that is not desired (kept until forget_stack)
    assert w.prune_networks(ds) == [] and w._manager is None
    assert wanted_networks(_stack(NetworkMode(networks=("front",)), (Network("back"),))) == {"front", "back"}
    w.close()


def test_controller_runs_upkeep_on_every_pass_including_no_op(tmp_path: Path) -> None:
    w = World(tmp_path)
    seen: list[list[str]] = []
    w.ctl.upkeep = lambda desired: seen.append(sorted(desired.containers))
    ss = sset(stack("shop", svc("api")))
    assert w.apply(ss).changed
    changes = w.inv.store.total_changes()
    assert not w.apply(ss).changed                         # the no-op pass still keeps hosts current
    assert w.inv.store.total_changes() == changes
    assert seen == [["shop/api-1"], ["shop/api-1"]]
    w.ctl.reconcile_once(ss, source="test", dry_run=True)   # a dry run changes nothing, not even hosts
    assert len(seen) == 2
