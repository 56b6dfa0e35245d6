"""The reconciler on the real native runtime (root): apply, no-op, drift, recreate, scale, down, and a
kill -9 (fault hook) at every step of a two-service apply followed by a converging apply, with the
autouse leak check proving no mount or cgroup is left behind.

One ``Session`` (one native runtime, one fork server) is shared by each test's in-process passes; the
crashing applies run as ``python -m orchestrator apply`` subprocesses with ORCHESTRATOR_FAULT_AFTER_STEP."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator import manifest as manifests
from orchestrator.manifest.model import StackSet
from orchestrator.reconcile.controller import Result
from orchestrator.reconcile.execute import Options
from orchestrator.reconcile.session import Session
from orchestrator.runtime.linux.native import LinuxRuntime
from orchestrator.settings import Settings
from orchestrator.state.observed import observe

pytestmark = pytest.mark.root

STACK = """\
apiVersion: orchestrator/v1
kind: Stack
metadata: {{name: it}}
spec:
  services:
    db:
      rootfs: ./rootfs
      command: ["sleep", "1000"]
      stopGracePeriod: 200ms   # sleep as pid 1 ignores SIGTERM: do not wait the default 10s
      healthcheck: {{exec: ["true"], interval: 1s, retries: 3}}
      network: none
    api:
      rootfs: ./rootfs
      command: ["sleep", "{arg}"]
      stopGracePeriod: 200ms
      replicas: {replicas}
      dependsOn: {{db: healthy}}
      resources: {{memory: 64Mi, pids: 64}}
      network: none
"""


@pytest.fixture
def session(state_root: Path) -> Iterator[Session]:
    s = Session(Settings.from_env(str(state_root)))
    yield s
    s.controller.reconcile_once(StackSet(), prune=False, remove=frozenset({"it"}), remove_volumes=True)
    s.close()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., tuple[str, StackSet]]:
    for d in ("bin", "etc", "proc", "dev", "sys", "tmp"):
        (tmp_path / "rootfs" / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", tmp_path / "rootfs/bin/busybox")
    for tool in ("sh", "sleep", "true", "cat"):
        (tmp_path / "rootfs/bin" / tool).symlink_to("busybox")

    def write(replicas: int = 2, arg: str = "1000") -> tuple[str, StackSet]:
        path = tmp_path / "stack.yaml"
        path.write_text(STACK.format(replicas=replicas, arg=arg))
        return str(path), manifests.load([path])
    return write


def apply(s: Session, path: str, ss: StackSet, **kw: object) -> Result:
    return s.controller.reconcile_once(ss, source=f"files:{path}", options=Options(timeout_s=30), **kw)  # type: ignore[arg-type]


def entries(path: Path) -> list[str]:
    """Directory entries, without the runtime's own dot-files (its helper binaries)."""
    return sorted(e for e in os.listdir(path) if not e.startswith("."))


def states(s: Session) -> dict[str, str]:
    return {o.slot: str(o.status) for o in observe(s.inventory, s.runtime).all()}


def test_apply_noop_drift_recreate_scale_down(session: Session, write: Callable[..., tuple[str, StackSet]],
                                              state_root: Path) -> None:
    path, ss = write()
    r = apply(session, path, ss)
    assert r.ok, r.failures
    assert states(session) == {"it/api-1": "running", "it/api-2": "running", "it/db-1": "running"}
    t = time.perf_counter()
    r = apply(session, path, ss)
    print(f"no-op pass on the native runtime: {(time.perf_counter() - t) * 1000:.1f} ms")
    assert not r.changed
    # a crash (kill -9 behind our back): the runtime's supervisor restarts it in place (on-failure);
    # the reconciler sees it running again and leaves it alone
    api1 = next(o for o in observe(session.inventory, session.runtime).all() if o.slot == "it/api-1")
    os.kill(api1.state.pid, signal.SIGKILL)  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while True:
        st = session.runtime.state(api1.id)
        if st.status == "running" and st.pid != api1.state.pid:  # type: ignore[union-attr]
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.05)
    assert st.annotations.get("org.orchestrator.restarts") == "1"
    assert not session.controller.plan(ss, source=f"files:{path}")[0]
    # drift: the container deleted behind our back is recreated
    session.runtime.delete(api1.id, force=True)
    plan = session.controller.plan(ss, source=f"files:{path}")[0]
    assert [(a.kind, a.target, a.reason) for a in plan.actions] == [
        ("recreate", "it/api-1", "drift: container gone from the runtime")]
    assert apply(session, path, ss).ok
    assert set(states(session).values()) == {"running"}
    # a recreate-field change and a scale down in one apply
    path, ss = write(replicas=1, arg="999")
    r = apply(session, path, ss)
    assert r.ok and sorted(a.kind for a in r.plan.actions) == ["delete", "generation", "recreate"]
    assert states(session) == {"it/api-1": "running", "it/db-1": "running"}
    assert apply(session, path, StackSet(), prune=False, remove=frozenset({"it"})).ok
    assert states(session) == {} and entries(state_root / "runtime") == []
    assert entries(state_root / "containers") == []      # bundles and writable layers: in the trash,
    session.builder.close()                              # unlinked in the background until close
    assert entries(state_root / "trash") == []


def test_kill_at_every_step_then_apply_converges(session: Session, write: Callable[..., tuple[str, StackSet]],
                                                 state_root: Path) -> None:
    path, ss = write(replicas=1)
    n = 1
    while True:
        env = {**os.environ, "ORCHESTRATOR_FAULT_AFTER_STEP": str(n), "ORCHESTRATOR_ROOT": str(state_root)}
        r = subprocess.run([sys.executable, "-m", "orchestrator", "apply", "-f", path], env=env,
                           capture_output=True, text=True, check=False, timeout=60)
        assert r.returncode in (0, 137), r.stderr
        assert apply(session, path, ss).ok
        assert not session.controller.plan(ss, source=f"files:{path}")[0]
        assert states(session) == {"it/api-1": "running", "it/db-1": "running"}
        ids = sorted(rec.id for rec in session.inventory.containers())
        assert (entries(state_root / "runtime")) == ids       # no container left over
        assert entries(state_root / "containers") == ids    # no bundle left over
        assert apply(session, path, StackSet(), prune=False, remove=frozenset({"it"})).ok
        assert entries(state_root / "runtime") == []
        if r.returncode == 0:     # the fault came after the last step: every step has been covered
            break
        n += 1
    assert n > 5


def test_memory_change_updates_cgroup_in_place(session: Session, write: Callable[..., tuple[str, StackSet]]
                                               ) -> None:
    path, ss = write(replicas=1)
    assert apply(session, path, ss).ok
    before = {r.slot: r.id for r in session.inventory.containers()}
    text = Path(path).read_text().replace("memory: 64Mi", "memory: 96Mi")
    Path(path).write_text(text)
    ss2 = manifests.load([path])
    r = apply(session, path, ss2)
    assert r.ok and [(a.kind, a.reason) for a in r.plan.actions if a.kind == "update"] == [
        ("update", "resources.memory: 64Mi -> 96Mi")]
    assert {r.slot: r.id for r in session.inventory.containers()} == before   # same containers
    cgroups = session.runtime                 # the native runtime's update/stats: its one cgroup seam
    assert isinstance(cgroups, LinuxRuntime)
    stats = cgroups.stats(before["it/api-1"])
    assert stats.memory_limit_bytes == 96 << 20 and stats.pids_limit == 64
    # tampering: the limit raised behind our back is seen by the loop's pass and written back
    cgroups.update(before["it/api-1"], {"memory": {"limit": 200 << 20}})
    r = apply(session, path, ss2, enforce_restart=True)
    assert [a.reason for a in r.plan.actions] == ["drift: memory limit 200Mi -> 96Mi (changed outside)"]
    stats = cgroups.stats(before["it/api-1"])
    assert (stats.memory_limit_bytes, stats.pids_limit) == (96 << 20, 64)


def test_restart_policy_change_reaches_the_running_supervisor(session: Session,
                                                              write: Callable[..., tuple[str, StackSet]]
                                                              ) -> None:
    path, ss = write(replicas=1)
    assert apply(session, path, ss).ok
    before = {r.slot: r.id for r in session.inventory.containers()}
    text = Path(path).read_text().replace("      replicas: 1\n", "      replicas: 1\n      restart: never\n")
    Path(path).write_text(text)
    ss2 = manifests.load([path])
    r = apply(session, path, ss2)
    assert r.ok and [(a.kind, a.reason) for a in r.plan.actions if a.kind == "update"] == [
        ("update", "restart.policy: on-failure -> never")]
    assert {r.slot: r.id for r in session.inventory.containers()} == before   # same containers
    api = before["it/api-1"]
    st = session.runtime.state(api)
    assert st.annotations["org.orchestrator.restart.policy"] == "never"
    os.kill(st.pid, signal.SIGKILL)            # a crash: under "never" the supervisor leaves it down
    st = session.runtime.wait(api, timeout=10)
    time.sleep(0.3)
    st = session.runtime.state(api)
    assert st.status == "stopped" and st.annotations.get("org.orchestrator.restarts") == "0"
    assert not apply(session, path, ss2).changed        # and the reconciler agrees: never is never
    assert "org.orchestrator.restartable" not in st.annotations     # made with one: can take one again


NET_STACK = """\
apiVersion: orchestrator/v1
kind: Stack
metadata: {name: itnet}
spec:
  services:
    web:
      rootfs: ./rootfs
      command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
      stopGracePeriod: 200ms
      healthcheck: {http: {path: /index.html, port: 8080}, interval: 1s, retries: 3}
    side:
      rootfs: ./rootfs
      command: ["sleep", "1000"]
      stopGracePeriod: 200ms
      dependsOn: {web: healthy}
      healthcheck: {tcp: {port: 8080}, interval: 1s, retries: 2}
      network: container:web
"""


def test_bridge_network_http_tcp_probes_and_container_mode(
        session: Session, tmp_path: Path, write: Callable[..., tuple[str, StackSet]]) -> None:
    write()                                    # the rootfs
    for tool in ("httpd", "ip"):
        (tmp_path / "rootfs/bin" / tool).symlink_to("busybox")
    (tmp_path / "rootfs/www").mkdir()
    (tmp_path / "rootfs/www/index.html").write_text("hi\n")
    path = tmp_path / "net.yaml"
    path.write_text(NET_STACK)
    ss = manifests.load([path])
    try:
        r = apply(session, str(path), ss)
        assert r.ok, r.failures
        ids = {rec.slot: rec.id for rec in session.inventory.containers("itnet")}
        assert [h.ok for h in session.inventory.health(ids["itnet/web-1"])][-1]
        assert [h.output for h in session.inventory.health(ids["itnet/side-1"])][-1] == "tcp port 8080 open"
        out = session.runtime.exec(ids["itnet/web-1"], ["ip", "-o", "-4", "addr", "show", "eth0"])
        assert out.exit_code == 0 and b"inet 10." in out.stdout
        # side shares web's network namespace: it sees the same eth0 address
        side = session.runtime.exec(ids["itnet/side-1"], ["ip", "-o", "-4", "addr", "show", "eth0"])
        assert side.stdout.split()[3] == out.stdout.split()[3]
    finally:
        assert session.controller.reconcile_once(StackSet(), prune=False, remove=frozenset({"itnet"})).ok


FILES_STACK = """\
apiVersion: orchestrator/v1
kind: Stack
metadata: {name: itfiles}
spec:
  configs:
    app.conf: {content: "mode=1\\n"}
  secrets:
    db: {file: ./db.pass}
  services:
    app:
      rootfs: ./rootfs
      command: ["sleep", "1000"]
      stopGracePeriod: 200ms
      network: none
      configs: [{source: app.conf, target: /etc/app.conf}]
      secrets: [{source: db, target: /run/secrets/db, onChange: none}]
"""


def test_configs_and_secrets_delivered_and_rotated_in_place(
        session: Session, tmp_path: Path, state_root: Path,
        write: Callable[..., tuple[str, StackSet]]) -> None:
    write()
    (tmp_path / "db.pass").write_text("first-secret")
    path = tmp_path / "files.yaml"
    path.write_text(FILES_STACK)
    try:
        assert apply(session, str(path), manifests.load([path])).ok
        (rec,) = session.inventory.containers("itfiles")
        out = session.runtime.exec(rec.id, ["cat", "/etc/app.conf", "/run/secrets/db"])
        assert out.stdout == b"mode=1\nfirst-secret"
        (tmp_path / "db.pass").write_text("second-secret")
        r = apply(session, str(path), manifests.load([path]))
        assert r.ok and [a.kind for a in r.plan.actions] == ["update"]
        assert session.runtime.exec(rec.id, ["cat", "/run/secrets/db"]).stdout == b"second-secret"
        # the secret's content is nowhere under the state root
        for f in state_root.rglob("*"):
            if f.is_file() and not f.is_symlink():
                assert b"second-secret" not in f.read_bytes(), f
    finally:
        assert session.controller.reconcile_once(StackSet(), prune=False, remove=frozenset({"itfiles"})).ok
