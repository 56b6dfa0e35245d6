"""The network layer on the real kernel: bridges, veths, names, published ports, isolation, crash
cleanup. Every "container" is a named netns made by the test (traffic never leaves them and our bridges).
"""

from __future__ import annotations

import json
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from netfixtures import Namespaces, host_fetch

from orchestrator.errors import NetworkError
from orchestrator.manifest.model import Network, Port
from orchestrator.runtime.linux.network import NetworkManager, dns, hosts_file, resolv_conf, setup_loopback
from orchestrator.runtime.linux.network.ports import listening

pytestmark = pytest.mark.root


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def _table_exists() -> bool:
    return subprocess.run(["nft", "list", "table", "ip", "orchestrator"], capture_output=True,
                          check=False).returncode == 0


def test_fetch_by_ip_and_by_name_through_hosts_file(manager: NetworkManager, nss: Namespaces,
                                                    stack: str) -> None:
    net = manager.ensure_network(stack, Network("default"))
    a, b = nss.add(), nss.add()
    addr_a = manager.attach("app-1", nss.path(a), [(net, ["app"])])["default"]
    addr_b = manager.attach("web-1", nss.path(b), [(net, ["web"])])["default"]
    assert addr_a != addr_b and addr_b.startswith(net.subnet.rsplit(".", 1)[0])
    nss.etc(a, "hosts", hosts_file(manager.hosts_entries("app-1"), hostname="app-1"))
    nss.httpd(b, "hello from web\n")
    assert nss.fetch(a, f"http://{addr_b}:8080/") == "hello from web\n"
    assert nss.fetch(a, "http://web:8080/") == "hello from web\n"
    assert nss.fetch(a, "http://web-1:8080/") == "hello from web\n"
    routes = nss.run(a, "ip", "route").stdout
    assert f"default via {net.gateway} dev eth0" in routes
    manager.detach("app-1")
    manager.detach("web-1")
    manager.remove_network(stack, "default")


def test_dns_round_robin_over_healthy_replicas(db: Path, nss: Namespaces, stack: str) -> None:
    with NetworkManager(sqlite3.connect(db), dns=True, dns_upstreams=[]) as mgr:
        try:
            net = mgr.ensure_network(stack, Network("default"))
            client = nss.add()
            mgr.attach("client-1", nss.path(client), [(net, ["client"])])
            for i in (1, 2):
                ns = nss.add()
                mgr.attach(f"api-{i}", nss.path(ns), [(net, ["api", f"api-{i}"])])
                nss.httpd(ns, f"replica {i}\n")
            nss.etc(client, "resolv.conf", resolv_conf(mgr.nameservers("client-1")))
            nss.etc(client, "hosts", "127.0.0.1 localhost\n")            # names come from DNS only
            seen = {nss.fetch(client, "http://api:8080/") for _ in range(4)}
            assert seen == {"replica 1\n", "replica 2\n"}
            assert nss.fetch(client, "http://api-2:8080/") == "replica 2\n"
            out = nss.run(client, "busybox", "nslookup", "api-1", net.gateway).stdout
            assert mgr.addresses("api-1")[net.key] in out
            assert nss.fetch(client, "http://nothere:8080/", timeout=1) is None
            mgr.set_healthy("api-1", False)
            seen = {nss.fetch(client, "http://api:8080/") for _ in range(3)}
            assert seen == {"replica 2\n"}
        finally:
            mgr.gc([], known_networks=[])


def _free_port() -> int:
    busy = {p for _proto, _addr, p in listening()}
    while True:
        port = random.randint(20000, 40000)
        if port not in busy:
            return port


def test_published_port_reachable_on_localhost(manager: NetworkManager, nss: Namespaces,
                                               stack: str) -> None:
    net = manager.ensure_network(stack, Network("default"))
    ns = nss.add()
    addr = manager.attach("web-1", nss.path(ns), [(net, ["web"])])["default"]
    nss.httpd(ns, "published\n")
    host_port = _free_port()
    ports = [Port(host_port, 8080)]
    assert manager.port_conflicts(ports) == []
    manager.publish("web-1", addr, ports)
    assert host_fetch(f"http://127.0.0.1:{host_port}/") == "published\n"
    assert manager.port_conflicts(ports, container="other") == \
        [f"port {host_port}:8080/tcp: already published by container web-1"]
    assert manager.port_conflicts(ports, container="web-1") == []
    manager.unpublish("web-1")
    assert host_fetch(f"http://127.0.0.1:{host_port}/", timeout=1) is None
    manager.detach("web-1")
    manager.remove_network(stack, "default")
    assert not _table_exists()


def test_port_conflict_with_a_listening_socket(manager: NetworkManager) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        found = manager.port_conflicts([Port(port, 80)])
    assert found == [f"port {port}:80/tcp: tcp port {port} is already in use on 127.0.0.1"]


def test_two_networks_are_isolated(manager: NetworkManager, nss: Namespaces, stack: str) -> None:
    one = manager.ensure_network(stack, Network("one"))
    two = manager.ensure_network(stack, Network("two"))
    assert one.bridge != two.bridge and one.subnet != two.subnet
    a, b, c = nss.add(), nss.add(), nss.add()
    manager.attach("a-1", nss.path(a), [(one, ["a"])])
    addr_b = manager.attach("b-1", nss.path(b), [(two, ["b"])])["two"]
    both = manager.attach("c-1", nss.path(c), [(one, ["c"]), (two, ["c"])])
    nss.httpd(b, "b\n")
    assert nss.fetch(a, f"http://{addr_b}:8080/", timeout=1) is None       # routed via the host: dropped
    assert nss.fetch(c, f"http://{addr_b}:8080/") == "b\n"                   # c is on both
    assert set(both) == {"one", "two"} and "eth1" in nss.run(c, "ip", "-o", "link").stdout
    for name in ("a-1", "b-1", "c-1"):
        manager.detach(name)
    manager.remove_network(stack, "one")
    manager.remove_network(stack, "two")


def test_internal_network_has_no_default_route(manager: NetworkManager, nss: Namespaces,
                                               stack: str) -> None:
    net = manager.ensure_network(stack, Network("back", internal=True))
    ns = nss.add()
    manager.attach("db-1", nss.path(ns), [(net, ["db"])])
    assert "default" not in nss.run(ns, "ip", "route").stdout
    manager.detach("db-1")
    manager.remove_network(stack, "back")


def test_mode_none_only_loopback(nss: Namespaces) -> None:
    ns = nss.add()
    setup_loopback(nss.path(ns))
    out = nss.run(ns, "ip", "-o", "link").stdout
    assert "lo:" in out and "UP" in out and "eth0" not in out


_CRASHER = """
import os, signal, sqlite3, sys
from orchestrator.manifest.model import Network
from orchestrator.runtime.linux.network import NetworkManager
db, stack, ns, step = sys.argv[1:5]
def hook(name):
    if name == step:
        os.kill(os.getpid(), signal.SIGKILL)
mgr = NetworkManager(sqlite3.connect(db), step_hook=hook)
net = mgr.ensure_network(stack, Network("default"))
mgr.attach("victim-1", ns, [(net, ["victim"])])
"""


@pytest.mark.parametrize("step", ["allocated", "veth-created"])
def test_crash_mid_attach_is_cleaned_by_gc(manager: NetworkManager, nss: Namespaces, stack: str,
                                           db: Path, step: str) -> None:
    ns = nss.add()
    done = subprocess.run([sys.executable, "-c", _CRASHER, str(db), stack, nss.path(ns), step],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    leftovers = manager.inv.attachments("victim-1")
    assert len(leftovers) == 1                                   # recorded before the veth existed
    if step == "veth-created":
        assert leftovers[0].host_ifname in _links()
    removed = manager.gc(["someone-else"])
    assert "detached victim-1" in removed
    assert leftovers[0].host_ifname not in _links()
    assert manager.ipam.owners() == set()
    # the next attach of the same name works and gets the same address back
    net = manager.network(stack, "default")
    assert net is not None
    again = manager.attach("victim-1", nss.path(ns), [(net, ["victim"])])
    assert again["default"] == leftovers[0].address
    manager.detach("victim-1")
    manager.remove_network(stack, "default")


def test_failed_attach_is_undone(manager: NetworkManager, nss: Namespaces, stack: str) -> None:
    net = manager.ensure_network(stack, Network("default"))
    with pytest.raises(NetworkError, match="cannot open"):
        manager.attach("ghost-1", "/proc/999999999/ns/net", [(net, ["ghost"])])
    assert manager.inv.attachments("ghost-1") == [] and manager.ipam.owners() == set()
    manager.remove_network(stack, "default")


def test_delete_leaves_nothing_behind(manager: NetworkManager, nss: Namespaces, stack: str) -> None:
    before_links = _links()
    net = manager.ensure_network(stack, Network("default"))
    ns = nss.add()
    addr = manager.attach("x-1", nss.path(ns), [(net, ["x"])])["default"]
    manager.publish("x-1", addr, [Port(_free_port(), 80, "udp")])
    with pytest.raises(NetworkError, match="still used by x-1"):
        manager.remove_network(stack, "default")
    manager.unpublish("x-1")
    manager.detach("x-1")
    manager.detach("x-1")                                          # idempotent
    manager.remove_network(stack, "default")
    manager.remove_network(stack, "default")
    assert _links() == before_links
    assert not _table_exists()
    assert "10.89." not in subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    assert manager.ipam.subnets() == [] and manager.inv.networks() == []


def test_attach_time(db: Path, nss: Namespaces, stack: str) -> None:
    """Network setup per container (attach: IPAM commit + veth + addresses + routes). The target is under
    10 ms; the assertion is looser because other suites share these 2 cores. WAL + synchronous=NORMAL
    is how the state store is expected to be opened (a commit still survives a kill -9)."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    with NetworkManager(conn) as manager:
        net = manager.ensure_network(stack, Network("default"))
        names = [nss.add() for _ in range(30)]
        times = []
        for i, ns in enumerate(names):
            start = time.perf_counter()
            manager.attach(f"bench-{i}", nss.path(ns), [(net, ["bench"])])
            times.append((time.perf_counter() - start) * 1000)
        median = statistics.median(times)
        print(json.dumps({"attach_ms_median": round(median, 2), "attach_ms_max": round(max(times), 2)}))
        for i in range(len(names)):
            manager.detach(f"bench-{i}")
        manager.remove_network(stack, "default")
    assert median < 20.0


def test_publish_is_idempotent_and_refused_on_internal(manager: NetworkManager, nss: Namespaces,
                                                      stack: str) -> None:
    net = manager.ensure_network(stack, Network("default"))
    back = manager.ensure_network(stack, Network("back", internal=True))
    ns = nss.add()
    addrs = manager.attach("w-1", nss.path(ns), [(net, ["w"]), (back, ["w"])])
    ports = [Port(_free_port(), 80), Port(_free_port(), 53, "udp", "127.0.0.1")]
    manager.publish("w-1", addrs["default"], ports)
    handles = [r.handle for r in manager.nft.rules()]
    manager.publish("w-1", addrs["default"], ports)
    assert [r.handle for r in manager.nft.rules()] == handles          # nothing rewritten
    manager.publish("w-1", addrs["default"], ports[:1])
    assert sum(1 for r in manager.nft.rules() if r.comment.startswith("port w-1 ")) == 2
    with pytest.raises(NetworkError, match="internal"):
        manager.publish("w-1", addrs["back"], ports)
    manager.unpublish("w-1")
    manager.detach("w-1")
    manager.remove_network(stack, "default")
    manager.remove_network(stack, "back")


def test_attach_replaces_the_leftover_of_a_crashed_attempt(manager: NetworkManager, nss: Namespaces,
                                                           stack: str, db: Path) -> None:
    ns = nss.add()
    subprocess.run([sys.executable, "-c", _CRASHER, str(db), stack, nss.path(ns), "veth-created"],
                   capture_output=True, timeout=30, check=False)
    net = manager.network(stack, "default")
    assert net is not None
    addr = manager.attach("victim-1", nss.path(ns), [(net, ["victim"])])["default"]
    assert addr in nss.run(ns, "ip", "-o", "addr", "show", "eth0").stdout
    manager.detach("victim-1")
    manager.remove_network(stack, "default")


def test_published_port_from_another_host(manager: NetworkManager, nss: Namespaces, stack: str) -> None:
    """An "outside" namespace linked to the host by a plain veth (not one of our bridges) reaches the
    published port through prerouting DNAT and forwarding."""
    net = manager.ensure_network(stack, Network("default"))
    ns, outside = nss.add(), nss.add()
    addr = manager.attach("web-1", nss.path(ns), [(net, ["web"])])["default"]
    nss.httpd(ns, "from outside\n")
    host_end = f"orct{outside[-8:]}"
    ip = ["ip"]
    subprocess.run([*ip, "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", outside],
                   check=True)
    try:
        subprocess.run([*ip, "addr", "add", "172.31.254.1/30", "dev", host_end], check=True)
        subprocess.run([*ip, "link", "set", host_end, "up"], check=True)
        subprocess.run([*ip, "-n", outside, "addr", "add", "172.31.254.2/30", "dev", "eth0"], check=True)
        subprocess.run([*ip, "-n", outside, "link", "set", "eth0", "up"], check=True)
        port = _free_port()
        manager.publish("web-1", addr, [Port(port, 8080)])
        assert nss.fetch(outside, f"http://172.31.254.1:{port}/") == "from outside\n"
        manager.unpublish("web-1")
        assert nss.fetch(outside, f"http://172.31.254.1:{port}/", timeout=1) is None
    finally:
        # ours, not the manager's: deleted now rather than left to the namespace's asynchronous
        # teardown, which the leak check could otherwise catch half done
        subprocess.run([*ip, "link", "del", host_end], check=False)
    manager.detach("web-1")
    manager.remove_network(stack, "default")


def test_dns_relays_other_names_upstream(db: Path, nss: Namespaces, stack: str) -> None:
    """Dotted names no zone knows go to the upstream resolver: here a fake one on 127.0.0.1 that answers
    every A query with 192.0.2.77 (built with the same codec); single-label unknown names never leave."""
    upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    upstream.bind(("127.0.0.1", 0))
    upstream.settimeout(0.2)
    seen: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                packet, peer = upstream.recvfrom(512)
            except TimeoutError:
                continue
            query = dns.decode(packet)
            seen.append(query.name)
            addrs = ["192.0.2.77"] if query.qtype == dns.QTYPE_A else []
            upstream.sendto(dns.encode(query, dns.RCODE_OK, addrs), peer)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with NetworkManager(sqlite3.connect(db), dns=True,
                            dns_upstreams=[upstream.getsockname()]) as mgr:
            try:
                net = mgr.ensure_network(stack, Network("default"))
                client = nss.add()
                mgr.attach("client-1", nss.path(client), [(net, ["client"])])
                out = nss.run(client, "busybox", "nslookup", "pkg.example.test", net.gateway).stdout
                assert "192.0.2.77" in out
                nss.run(client, "busybox", "nslookup", "nosuchservice", net.gateway)
                assert "pkg.example.test" in seen and "nosuchservice" not in seen
            finally:
                mgr.gc([], known_networks=[])
    finally:
        stop.set()
        thread.join()
        upstream.close()


def test_detach_after_the_namespace_died(manager: NetworkManager, nss: Namespaces, stack: str) -> None:
    net = manager.ensure_network(stack, Network("default"))
    ns = nss.add()
    manager.attach("gone-1", nss.path(ns), [(net, ["gone"])])
    host_end = manager.inv.attachments("gone-1")[0].host_ifname
    subprocess.run(["ip", "netns", "del", ns], check=True)       # the container's namespace is gone
    nss.names.remove(ns)
    for _ in range(50):                                            # the kernel frees it asynchronously
        if host_end not in _links():
            break
        time.sleep(0.02)
    manager.detach("gone-1")
    assert manager.inv.attachments("gone-1") == [] and host_end not in _links()
    manager.remove_network(stack, "default")


def test_detach_without_waiting_hands_the_veth_to_the_reaper(manager: NetworkManager, nss: Namespaces,
                                                             stack: str) -> None:
    """``wait=False`` (the executor's detach, after the runtime's delete): the address and the row go
    at once, the veth on the reaper's thread; ``flush`` waits for it and forgets the doomed row."""
    before_links = _links()
    net = manager.ensure_network(stack, Network("default"))
    ends = []
    for i in range(3):
        manager.attach(f"r-{i}", nss.path(nss.add()), [(net, ["r"])])
        ends.append(manager.inv.attachments(f"r-{i}")[0].host_ifname)
    for i in range(3):
        manager.detach(f"r-{i}", wait=False)
        assert manager.inv.attachments(f"r-{i}") == [] and f"r-{i}" not in manager.ipam.owners()
    manager.flush()
    assert not any(end in _links() for end in ends)                 # even with the namespaces alive
    assert manager.inv.doomed() == []
    manager.detach("r-0", wait=False)                              # idempotent: nothing left to hand over
    manager.remove_network(stack, "default")
    assert _links() == before_links


def test_a_doomed_veth_left_by_a_crash_is_deleted_by_gc(manager: NetworkManager, nss: Namespaces,
                                                         stack: str, db: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A process killed after detach(wait=False) committed and before its reaper deleted the veth:
    the doomed row is there, and the next manager's ``gc`` or ``flush`` (a pass's upkeep runs it while
    a doomed row is left) deletes it."""
    from orchestrator.runtime.linux.network import reaper
    net = manager.ensure_network(stack, Network("default"))
    manager.attach("k-1", nss.path(nss.add()), [(net, ["k"])])
    end = manager.inv.attachments("k-1")[0].host_ifname
    with monkeypatch.context() as m:
        m.setattr(reaper.LinkReaper, "delete", lambda self, names: None)     # killed before it ran
        manager.detach("k-1", wait=False)
    assert end in _links() and manager.inv.doomed() == [end]
    with NetworkManager(sqlite3.connect(db)) as later:
        later.gc(["someone-else"])
        assert end not in _links() and later.inv.doomed() == []
    manager.remove_network(stack, "default")


def test_attaching_a_name_still_doomed_deletes_the_old_veth_first(manager: NetworkManager, nss: Namespaces,
                                                                  stack: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The same container id attached again while its old veth (same name) waits for deletion: the
    old one goes first, and nothing deletes the new one afterwards."""
    from orchestrator.runtime.linux.network import reaper
    net = manager.ensure_network(stack, Network("default"))
    manager.attach("s-1", nss.path(nss.add()), [(net, ["s"])])
    end = manager.inv.attachments("s-1")[0].host_ifname
    with monkeypatch.context() as m:
        m.setattr(reaper.LinkReaper, "delete", lambda self, names: None)     # still queued, say
        manager.detach("s-1", wait=False)
    assert manager.inv.doomed() == [end]
    ns2 = nss.add()
    manager.attach("s-1", nss.path(ns2), [(net, ["s"])])
    assert manager.inv.doomed() == []
    manager.flush()
    assert end in _links()                                         # the new veth, same name
    assert "eth0" in nss.run(ns2, "ip", "-o", "link").stdout
    manager.detach("s-1")
    manager.remove_network(stack, "default")
