"""Execution on the fake runtime: dependency gating, health waits, failures named, rollback, pause."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from reconcile_helpers import World, dep, exec_hc, mem, sset, stack, svc

from orchestrator.manifest.model import RestartPolicy, UpdateConfig
from orchestrator.reconcile.execute import Options
from orchestrator.runtime.base import ExecResult


def flaky(fail_first: int) -> tuple[list[str], object]:
    seen: list[str] = []

    def handler(cid: str, argv: Sequence[str]) -> ExecResult:
        seen.append(cid)
        return ExecResult(0 if len(seen) > fail_first else 1, b"", b"not yet")
    return seen, handler


def test_dependent_waits_for_healthy_dependency(tmp_path: Path) -> None:
    w = World(tmp_path)
    _seen, handler = flaky(3)
    w.rt.exec_handler = handler  # type: ignore[assignment]
    ss = sset(stack("shop", svc("db", healthcheck=exec_hc(retries=10)),
                    svc("api", depends_on=(dep("db", "healthy"),))))
    assert w.apply(ss).ok
    ops = [op for op, cid in w.rt.calls if op in ("exec", "create")]
    assert ops == ["create", "exec", "exec", "exec", "exec", "create"]
    assert [h.ok for h in w.inv.health(w.running()["shop/db-1"])][-1] is True


def test_unhealthy_fails_naming_container_and_probe_output(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.rt.exec_handler = lambda cid, argv: ExecResult(1, b"", b"connection refused")
    ss = sset(stack("shop", svc("db", healthcheck=exec_hc(retries=2)),
                    svc("api", depends_on=(dep("db", "healthy"),))))
    r = w.apply(ss)
    assert not r.ok
    msgs = [f.message for f in r.failures]
    assert "shop/db-1: unhealthy after 2 failed probes: exit 1: connection refused" in msgs[0]
    assert msgs[1] == "dependency shop/db failed" and not w.rt.ops("create")[1:]
    assert r.requeue_after < 30


def test_exit_on_start_reports_exit_code_and_logs(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.rt.start_hook = lambda cid: 3
    r = w.apply(sset(stack("shop", svc("api"))))
    (f,) = r.failures
    assert f.target == "shop/api-1" and "shop/api-1: exited 3" in f.message
    assert "| exiting with 3" in f.message
    assert w.inv.stacks()[0].status == "failed"


def test_completed_dependency(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.rt.start_hook = lambda cid: 0 if cid.startswith("shop_migrate") else None
    ss = sset(stack("shop", svc("migrate", restart=RestartPolicy("never")),
                    svc("api", depends_on=(dep("migrate", "completed"),))))
    assert w.apply(ss).ok
    assert sorted(w.running()) == ["shop/api-1"] and not w.plan(ss)
    w2 = World(tmp_path / "b")
    w2.rt.start_hook = lambda cid: 2 if cid.startswith("shop_migrate") else None
    r = w2.apply(replace(ss, stacks=(replace(ss.stacks[0], services=(
        svc("api", depends_on=(dep("migrate", "completed"),)),
        svc("migrate", restart=RestartPolicy("never"), update=UpdateConfig(failure_action="pause")))),)))
    assert not r.ok and not w2.running()


def test_failed_update_rolls_back_to_previous_generation(tmp_path: Path) -> None:
    w = World(tmp_path)
    v1 = sset(stack("shop", svc("api", replicas=2), svc("db")))
    assert w.apply(v1).ok
    w.rt.start_hook = lambda cid: 1 if w.builder.images.get(cid) == "busybox:2" else None
    v2 = sset(stack("shop", svc("api", image="busybox:2", replicas=2), svc("db")))
    r = w.apply(v2)
    assert not r.ok and r.rolled_back == ("shop",)
    assert "shop/api-1: exited 1" in r.failures[0].message
    assert {rec.slot: rec.image for rec in w.inv.containers() if rec.id in w.running().values()} == {
        "shop/api-1": "busybox:1", "shop/api-2": "busybox:1", "shop/db-1": "busybox:1"}
    st = w.inv.stacks()[0]
    assert (st.status, st.generation) == ("rolled-back", 3) and "rolled back to generation 1" in st.message
    assert not w.plan(v1)       # the restored generation is the current one
    assert [e.reason for e in w.inv.events(objects=["shop"])][-1] == "rollback"


def test_failure_action_pause_keeps_state(tmp_path: Path) -> None:
    w = World(tmp_path)
    base = svc("api", replicas=2, update=UpdateConfig(failure_action="pause"))
    assert w.apply(sset(stack("shop", base))).ok
    w.rt.start_hook = lambda cid: 1 if w.builder.images.get(cid) == "busybox:2" else None
    r = w.apply(sset(stack("shop", replace(base, image="busybox:2"))))
    assert not r.ok and not r.rolled_back
    # paused at the first replica: the second still runs the old image
    assert sorted(w.running()) == ["shop/api-2"] and w.inv.stacks()[0].status == "failed"


def test_no_wait_skips_health(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.rt.exec_handler = lambda cid, argv: ExecResult(1)
    ss = sset(stack("shop", svc("db", healthcheck=exec_hc(retries=1))))
    assert w.apply(ss, options=Options(wait=False, settle_s=0.0)).ok and not w.rt.ops("exec")


def test_timeout_names_the_last_probe(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.rt.exec_handler = lambda cid, argv: ExecResult(1, b"booting")
    hc = replace(exec_hc(retries=1000), start_period_s=100.0)
    r = w.apply(sset(stack("shop", svc("db", healthcheck=hc))), options=Options(timeout_s=0.3, settle_s=0.0))
    assert "timed out waiting to become healthy; last probe: exit 1: booting" in r.failures[0].message


def test_runtime_error_on_create_leaves_nothing(tmp_path: Path) -> None:
    from orchestrator.errors import RuntimeFailure
    w = World(tmp_path)
    w.rt.fail_on[("create", "shop_api")] = RuntimeFailure("mount failed", op="mount", path="/x", errno=2)
    r = w.apply(sset(stack("shop", svc("api"))))
    assert "mount failed (op=mount, path=/x, errno=2)" in r.failures[0].message
    assert not w.inv.containers() and not w.rt.list() and w.builder.cleaned == w.builder.prepared


def test_restart_backoff_max_retries_and_reset(tmp_path: Path) -> None:
    import time

    w = World(tmp_path)
    policy = RestartPolicy("on-failure", max_retries=2, backoff_initial_s=0.2, backoff_max_s=0.3,
                       reset_after_s=60)
    ss = sset(stack("shop", svc("api", restart=policy)))
    assert w.apply(ss).ok

    def crash_and_pass() -> object:
        w.rt.crash(w.inv.containers()[0].id, 1)
        return w.apply(ss, enforce_restart=True)

    r = crash_and_pass()                        # 1st restart: wait 0.2s
    assert not r.plan and 0.1 < r.requeue_after <= 0.2
    assert "restart 1 in" in r.plan.deferred[0].reason and "(deferred)" in str(r.plan)
    time.sleep(0.25)
    r = w.apply(ss, enforce_restart=True)
    assert [a.reason for a in r.plan.actions] == ["crash: exited 1 (restart: on-failure)"]
    assert w.inv.containers()[0].restarts == 1
    r = crash_and_pass()                        # 2nd: the backoff doubles, capped at 0.3s
    assert 0.2 < r.requeue_after <= 0.3
    time.sleep(0.35)
    assert w.apply(ss, enforce_restart=True).plan and w.inv.containers()[0].restarts == 2
    r = crash_and_pass()                        # 3rd crash: maxRetries (2) reached
    time.sleep(0.35)
    r = w.apply(ss, enforce_restart=True)
    assert not r.plan and r.plan.deferred[0].wait_s is None and "gave up after 2 restarts" in str(r.plan)
    assert r.requeue_after == 30.0
    # an explicit apply restarts it anyway, still counting
    assert w.apply(ss).ok and w.inv.containers()[0].restarts == 3
    # a run longer than resetAfter resets the count
    cid = w.inv.containers()[0].id
    w.rt.containers[cid] = replace(w.rt.containers[cid], started_at=time.time() - 100)
    w.rt.crash(cid, 1)
    assert "restart 1 in" in w.apply(ss, enforce_restart=True).plan.deferred[0].reason
    time.sleep(0.25)
    assert w.apply(ss, enforce_restart=True).plan and w.inv.containers()[0].restarts == 1


def test_settle_catches_a_container_that_dies_right_after_start(tmp_path: Path) -> None:
    import threading

    w = World(tmp_path)

    def die_soon(cid: str) -> None:
        threading.Timer(0.05, w.rt.crash, (cid, 4)).start()
        return None
    w.rt.start_hook = die_soon  # type: ignore[assignment]
    r = w.apply(sset(stack("shop", svc("api"))), options=Options(timeout_s=5.0, settle_s=0.3))
    assert [f.message.split("\n")[0] for f in r.failures] == ["shop/api-1: exited 4 right after starting"]


def test_loop_restarts_an_unhealthy_container(tmp_path: Path) -> None:
    import time

    w = World(tmp_path)
    healthy = {"ok": True}
    w.rt.exec_handler = lambda cid, argv: ExecResult(0 if healthy["ok"] else 1, b"", b"disk full")
    hc = replace(exec_hc(retries=2), interval_s=0.0)
    ss = sset(stack("shop", svc("db", healthcheck=hc,
                                restart=RestartPolicy("always", backoff_initial_s=0.0))))
    assert w.apply(ss).ok
    old = w.running()["shop/db-1"]
    assert not w.apply(ss, enforce_restart=True).plan          # healthy: probed, nothing to do
    healthy["ok"] = False
    assert not w.apply(ss, enforce_restart=True).plan          # one failure: not yet (retries 2)
    time.sleep(0.01)
    r = w.apply(ss, enforce_restart=True)
    assert [(a.kind, a.reason) for a in r.plan.actions] == [
        ("recreate", "unhealthy: 2 failed probes: exit 1: disk full")]
    assert not r.ok            # the new one is unhealthy too (the wait says so)
    healthy["ok"] = True
    assert w.apply(ss).ok and w.running()["shop/db-1"] != old
    assert not w.apply(ss).plan                                  # an explicit apply never probes


def test_configs_and_secrets_delivered_recreated_or_rotated(tmp_path: Path) -> None:
    from orchestrator.manifest.model import Config, FileMount, Secret

    w = World(tmp_path)
    secret_file = tmp_path / "db.pass"
    secret_file.write_text("s3cret")

    def build(conf: str) -> object:
        api = svc("api", configs=(FileMount("app.conf", "/etc/app.conf"),),
                  secrets=(FileMount("db", "/run/secrets/db", on_change="signal", signal="SIGHUP"),))
        st = replace(stack("shop", api), configs=(Config("app.conf", content=conf),),
                     secrets=(Secret("db", file=str(secret_file)),))
        return sset(st)
    assert w.apply(build("a=1")).ok
    cid = w.running()["shop/api-1"]
    assert w.rt.files[cid] == {"/etc/app.conf": b"a=1", "/run/secrets/db": b"s3cret"}
    assert not w.plan(build("a=1"))
    # the config restarts on change (default): a recreate
    plan = w.plan(build("a=2"))
    assert [(a.kind, a.reason) for a in plan.actions if a.kind != "generation"] == [
        ("recreate", "config app.conf changed (sha256 c22f -> d304)")]    # sha256 of a=1, a=2
    assert w.apply(build("a=2")).ok
    cid = w.running()["shop/api-1"]
    # the secret says signal: rewritten in place, then SIGHUP; same container
    secret_file.write_text("n3w")
    plan = w.plan(build("a=2"))
    assert [(a.kind, a.reason) for a in plan.actions] == [
        ("update", "secret db changed (sha256 1ec1 -> 1dd4), onChange signal:SIGHUP")]
    w.rt.calls.clear()
    assert w.apply(build("a=2")).ok
    assert w.running()["shop/api-1"] == cid and w.rt.files[cid]["/run/secrets/db"] == b"n3w"
    assert w.rt.ops("update_files", "kill") == [("update_files", cid), ("kill", cid)]
    assert not w.plan(build("a=2"))


def test_no_wait_still_gates_healthy_dependencies(tmp_path: Path) -> None:
    w = World(tmp_path)
    _seen, handler = flaky(2)
    w.rt.exec_handler = handler  # type: ignore[assignment]
    ss = sset(stack("shop", svc("db", healthcheck=exec_hc(retries=10)),
                    svc("api", depends_on=(dep("db", "healthy"),))))
    assert w.apply(ss, options=Options(wait=False, settle_s=0.0)).ok
    assert [op for op, _ in w.rt.calls if op in ("exec", "create")] == ["create", "exec", "exec", "exec",
                                                                        "create"]


def test_runtime_supervised_restarts_are_not_raced(tmp_path: Path) -> None:
    w = World(tmp_path)
    ss = sset(stack("shop", svc("api")))
    assert w.apply(ss).ok
    cid = w.running()["shop/api-1"]
    w.rt.crash(cid, 1)
    ann = {"org.orchestrator.restarts": "2", "org.orchestrator.restarting": "true"}
    w.rt.containers[cid] = replace(w.rt.containers[cid], annotations=ann)
    plan = w.plan(ss)
    assert not plan and "the runtime restarts it" in plan.deferred[0].reason
    # the supervisor gave up (maxRetries): the loop leaves it, an explicit apply recreates it
    w.rt.containers[cid] = replace(w.rt.containers[cid], annotations={"org.orchestrator.restarts": "5"})
    r = w.apply(ss, enforce_restart=True)
    assert not r.plan and "gave up after 5 restarts" in r.plan.deferred[0].reason
    assert [a.kind for a in w.plan(ss).actions] == ["recreate"]


def test_loop_sees_limits_changed_outside(tmp_path: Path) -> None:
    w = World(tmp_path)
    ss = sset(stack("shop", mem(svc("api"), 64 << 20)))
    assert w.apply(ss).ok
    kernel = {"limits": (64 << 20, 4096)}
    w.ctl.limits = lambda cid: kernel["limits"]
    assert not w.apply(ss, enforce_restart=True).plan
    kernel["limits"] = (1 << 30, 4096)                 # someone raised the memory limit by hand
    r = w.apply(ss, enforce_restart=True)
    assert [(a.kind, a.reason) for a in r.plan.actions] == [
        ("update", "drift: memory limit 1Gi -> 64Mi (changed outside)")]
    assert w.rt.resources[w.running()["shop/api-1"]] == {"memory": {"limit": 64 << 20}}
    assert not w.apply(ss).plan                         # an explicit apply does not read the kernel
