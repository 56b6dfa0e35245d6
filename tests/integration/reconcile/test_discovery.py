"""Service discovery in real stacks (root): containers on a bridge network resolve service names and
replica names through the /etc/hosts the reconciler bind-mounts from their bundle and keeps current in
place (scale up, a service added later); network ``none`` has ``lo`` up; a network dropped from a stack
that stays is removed; ``delete`` leaves no veth, bridge or nftables rule.

Fetches run busybox ``wget`` inside the container's mount and network namespaces via ``nsenter`` with a
subprocess timeout (busybox ``wget -T`` crashes in this build). Only names that exist are looked up, so
no query ever leaves for the host's resolvers.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from orchestrator import manifest as manifests
from orchestrator.manifest.model import StackSet
from orchestrator.reconcile.controller import Result
from orchestrator.reconcile.execute import Options
from orchestrator.reconcile.network import NetworkWiring
from orchestrator.reconcile.session import Session
from orchestrator.runtime.linux.network.inventory import read_attachments, read_networks
from orchestrator.settings import Settings

pytestmark = pytest.mark.root

HTTPD = ('["sh", "-c", "mkdir -p /www && echo $HOSTNAME > /www/index.html && '
         'exec httpd -f -p 8080 -h /www"]')


def stack_yaml(name: str, b_replicas: int = 1, with_c: bool = False, extra_net: bool = False,
               port: int = 0) -> str:
    text = f"""\
apiVersion: orchestrator/v1
kind: Stack
metadata: {{name: {name}}}
spec:
  services:
    a:
      rootfs: ./rootfs
      command: ["sleep", "1000"]
      stopGracePeriod: 100ms
      network: {{networks: [default{', extra' if extra_net else ''}]}}
    b:
      rootfs: ./rootfs
      command: {HTTPD}
      stopGracePeriod: 100ms
      replicas: {b_replicas}
"""
    if port:
        text += f'      ports: ["127.0.0.1:{port}:8080/tcp"]\n'
    if with_c:
        text += f"""\
    c:
      rootfs: ./rootfs
      command: {HTTPD}
      stopGracePeriod: 100ms
"""
    if extra_net:
        text += "  networks:\n    default: {}\n    extra: {}\n"
    return text


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    for d in ("bin", "etc", "proc", "dev", "sys", "tmp"):
        (root / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin/busybox")
    for tool in ("sh", "sleep", "cat", "httpd", "wget", "ip", "mkdir", "echo"):
        (root / "bin" / tool).symlink_to("busybox")
    return root


@pytest.fixture
def name() -> str:
    return f"disc{uuid.uuid4().hex[:6]}"


@pytest.fixture
def session(state_root: Path, name: str) -> Iterator[Session]:
    s = Session(Settings.from_env(str(state_root)))
    yield s
    try:
        assert s.controller.reconcile_once(StackSet(), prune=False, remove=frozenset({name})).ok
    finally:
        s.close()


@pytest.fixture
def apply(session: Session, tmp_path: Path, rootfs: Path, name: str) -> Callable[..., Result]:
    def run(**kw: bool | int) -> Result:
        path = tmp_path / "stack.yaml"
        path.write_text(stack_yaml(name, **kw))  # type: ignore[arg-type]
        r = session.controller.reconcile_once(manifests.load([path]), source=f"files:{path}",
                                              options=Options(timeout_s=30))
        assert r.ok, r.failures
        return r
    return run


def ids(s: Session, stack: str) -> dict[str, str]:
    return {rec.slot.split("/", 1)[1]: rec.id for rec in s.inventory.containers(stack)}


def fetch(s: Session, cid: str, url: str) -> str:
    pid = s.runtime.state(cid).pid
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run(["nsenter", "-t", str(pid), "-m", "-n", "-r", "-w", "--", "/bin/wget", "-q",
                              "-O-", url], capture_output=True, text=True, timeout=10, check=False,
                             env={"PATH": "/bin"})
        # the services have no health check: an apply returns once they started, and on a loaded
        # machine httpd may not listen yet. Only that is retried; a name that does not resolve is not.
        if out.returncode == 0 or "refused" not in out.stderr or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert out.returncode == 0, f"{url}: {out.stderr}"
    return out.stdout


def wiring(s: Session) -> NetworkWiring:
    net = s._network
    assert isinstance(net, NetworkWiring)
    return net


def test_names_resolve_and_follow_scale_up_and_new_services(session: Session, state_root: Path, name: str,
                                                            apply: Callable[..., Result]) -> None:
    apply()
    c = ids(session, name)
    assert fetch(session, c["a-1"], "http://b:8080/") == "b-1\n"
    assert fetch(session, c["a-1"], "http://b-1:8080/") == "b-1\n"
    assert fetch(session, c["b-1"], "http://b-1:8080/") == "b-1\n"          # its own name
    hosts = state_root / "containers" / c["a-1"] / "hosts"
    inode = hosts.stat().st_ino
    inside = session.runtime.exec(c["a-1"], ["cat", "/etc/hosts", "/etc/hostname"]).stdout.decode()
    assert inside.startswith(hosts.read_text()) and inside.endswith("a-1\n")

    # a no-op pass reads the hosts files but writes none of them
    assert not apply().changed
    assert wiring(session).refresh_hosts() == 0

    # scale b to 2: a (not recreated) lists both replicas under "b", in place (same inode)
    apply(b_replicas=2)
    c2 = ids(session, name)
    assert c2["a-1"] == c["a-1"] and hosts.stat().st_ino == inode
    with closing(sqlite3.connect(session.settings.db_path)) as conn:
        rows = read_attachments(conn)
    b_addrs = sorted(r.address for r in rows if r.container in (c2["b-1"], c2["b-2"]))
    lines = [ln.split() for ln in hosts.read_text().splitlines()]
    assert sorted(ln[0] for ln in lines if "b" in ln[1:]) == b_addrs and len(b_addrs) == 2
    assert fetch(session, c["a-1"], "http://b-2:8080/") == "b-2\n"

    # a service added later resolves from the existing container, without recreating it
    apply(b_replicas=2, with_c=True)
    assert ids(session, name)["a-1"] == c["a-1"]
    assert fetch(session, c["a-1"], "http://c:8080/") == "c-1\n"

    # scale down: the gone replica's names leave a's hosts file
    apply(b_replicas=1, with_c=True)
    assert "b-2" not in hosts.read_text().split()


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def _rules() -> str:
    return subprocess.run(["nft", "-a", "list", "table", "ip", "orchestrator"], capture_output=True,
                          text=True, check=False).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def published(port: int) -> bytes:
    """What the published port answers; retried while nothing listens yet (see ``fetch``)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                return bytes(resp.read())
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, ConnectionRefusedError) or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def test_dropped_network_is_removed_and_delete_leaves_nothing(session: Session, name: str,
                                                              apply: Callable[..., Result]) -> None:
    port = free_port()
    apply(extra_net=True, port=port)
    conn = sqlite3.connect(session.settings.db_path)
    nets = {r.name: r for r in read_networks(conn) if r.stack == name}
    assert set(nets) == {"default", "extra"}
    assert nets["extra"].bridge in _links()
    c = ids(session, name)
    out = session.runtime.exec(c["a-1"], ["ip", "-o", "-4", "addr"]).stdout.decode()
    assert "eth1" in out

    assert published(port) == b"b-1\n"

    apply(port=port)                           # extra dropped from the stack, which stays
    nets2 = {r.name: r for r in read_networks(conn) if r.stack == name}
    assert set(nets2) == {"default"}
    assert nets["extra"].bridge not in _links()
    ids_after = ids(session, name)
    assert fetch(session, ids_after["a-1"], "http://b:8080/") == "b-1\n"

    assert ids_after["b-1"] in _rules()       # its published port's rules, by container id
    veths = [r.host_ifname for r in read_attachments(conn)]
    assert veths and all(v in _links() for v in veths)
    assert session.controller.reconcile_once(StackSet(), prune=False, remove=frozenset({name})).ok
    links = _links()
    assert nets["default"].bridge not in links and not any(v in links for v in veths)
    assert not [r for r in read_networks(conn) if r.stack == name] and not read_attachments(conn)
    rules = _rules()
    assert name not in rules and not any(cid in rules for cid in {*c.values(), *ids_after.values()})
    conn.close()


NONE_STACK = """\
apiVersion: orchestrator/v1
kind: Stack
metadata: {{name: {name}}}
spec:
  services:
    solo:
      rootfs: ./rootfs
      command: ["sleep", "1000"]
      stopGracePeriod: 100ms
      network: none
"""


def test_network_none_has_only_lo_and_it_is_up(session: Session, tmp_path: Path, rootfs: Path,
                                               name: str) -> None:
    path = tmp_path / "none.yaml"
    path.write_text(NONE_STACK.format(name=name))
    assert session.controller.reconcile_once(manifests.load([path]), options=Options(timeout_s=30)).ok
    cid = ids(session, name)["solo-1"]
    links = session.runtime.exec(cid, ["ip", "-o", "link"]).stdout.decode().splitlines()
    assert len(links) == 1 and " lo: " in links[0] and ",UP" in links[0], links
    hosts = session.runtime.exec(cid, ["cat", "/etc/hosts"]).stdout.decode()
    assert hosts.splitlines()[0] == "127.0.0.1\tlocalhost solo-1"
