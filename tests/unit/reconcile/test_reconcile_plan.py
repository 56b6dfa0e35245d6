"""Pure diff/plan behaviour, driven through the controller on the fake runtime and a temp store."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from reconcile_helpers import World, dep, mem, sset, stack, svc

from orchestrator.manifest.model import RestartPolicy, UpdateConfig


def kinds(plan: object) -> list[tuple[str, str]]:
    return [(a.kind, a.target) for a in plan.actions]  # type: ignore[attr-defined]


def test_create_from_empty_orders_dependencies_first(tmp_path: Path) -> None:
    w = World(tmp_path)
    ss = sset(stack("shop", svc("api", replicas=2, depends_on=(dep("db", "healthy"),)), svc("db")))
    plan = w.plan(ss)
    assert kinds(plan) == [("generation", "shop"), ("create", "shop/db-1"), ("create", "shop/api-1"),
                           ("create", "shop/api-2")]
    api = plan.actions[2]
    assert api.after == (("db", "healthy"),) and api.level == 1
    text = str(plan)
    assert "+ shop/db-1" in text and "new stack" in text and text.endswith("plan: 3 create, 1 generation")
    data = json.loads(plan.to_json())
    assert data["changes"] == 4 and data["actions"][2]["after"] == [{"service": "db", "condition": "healthy"}]


def test_noop_plan_is_empty_and_apply_writes_nothing(tmp_path: Path) -> None:
    w = World(tmp_path)
    ss = sset(stack("shop", svc("api", replicas=2), svc("db")))
    assert w.apply(ss).ok
    calls, changes = len(w.rt.calls), w.inv.store.total_changes()
    db = tmp_path / "state.db"
    before = (db.stat().st_mtime_ns, (tmp_path / "state.db-wal").stat().st_size)
    r = w.apply(ss)
    assert not r.changed and not r.plan and str(r.plan) == "no changes"
    assert len(w.rt.calls) == calls                      # no runtime mutation at all
    assert w.inv.store.total_changes() == changes         # no store writes
    assert (db.stat().st_mtime_ns, (tmp_path / "state.db-wal").stat().st_size) == before


def test_image_change_recreates_with_field_reason(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.apply(sset(stack("shop", svc("api"))))
    old = w.running()["shop/api-1"]
    plan = w.plan(sset(stack("shop", svc("api", image="busybox:2"))))
    (a,) = [a for a in plan.actions if a.kind == "recreate"]
    assert a.target == "shop/api-1" and a.reason == "image: busybox:1 -> busybox:2" and a.container_id == old
    assert "~ shop/api-1  recreate    image: busybox:1 -> busybox:2" in str(plan)
    assert w.apply(sset(stack("shop", svc("api", image="busybox:2")))).ok
    assert w.running()["shop/api-1"] != old and old not in {c.id for c in w.rt.list()}


def test_command_change_reason_names_the_field(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.apply(sset(stack("shop", svc("api"))))
    plan = w.plan(sset(stack("shop", replace(svc("api"), command=("sleep", "5")))))
    assert [a.reason for a in plan.actions if a.kind == "recreate"] == ["command: [sleep 1000] -> [sleep 5]"]


def test_memory_change_is_update_in_place_not_recreate(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.apply(sset(stack("shop", mem(svc("api"), 64 << 20))))
    cid = w.running()["shop/api-1"]
    ss = sset(stack("shop", mem(svc("api"), 128 << 20)))
    plan = w.plan(ss)
    assert kinds(plan) == [("generation", "shop"), ("update", "shop/api-1")]
    assert plan.actions[1].reason == "resources.memory: 64Mi -> 128Mi" and plan.actions[1].resources
    assert w.apply(ss).ok
    assert w.running()["shop/api-1"] == cid
    assert w.rt.resources[cid] == {"memory": {"limit": 128 << 20}}
    assert not w.plan(ss)


def test_restart_policy_change_is_bookkeeping_update(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.apply(sset(stack("shop", svc("api"))))
    ss = sset(stack("shop", svc("api", restart=RestartPolicy("always"))))
    plan = w.plan(ss)
    (u,) = [a for a in plan.actions if a.kind == "update"]
    assert not u.resources and u.reason.startswith("restart.policy: on-failure -> always")
    assert w.apply(ss).ok and not w.rt.ops("update") and not w.plan(ss)


def test_adding_a_restart_policy_the_runtime_cannot_take_recreates(tmp_path: Path) -> None:
    """A runtime that restarts containers itself (native) says when one was made without a policy:
    never -> always then needs a new container. Where the reconciler restarts (the fake runtime here,
    runc), and for the way back, it is an in-place update."""
    import dataclasses
    w = World(tmp_path)
    w.apply(sset(stack("shop", svc("api", restart=RestartPolicy("never")))))
    cid = w.running()["shop/api-1"]
    ss = sset(stack("shop", svc("api", restart=RestartPolicy("always"))))
    assert [a.kind for a in w.plan(ss).actions if a.kind != "generation"] == ["update"]
    st = w.rt.containers[cid]
    w.rt.containers[cid] = dataclasses.replace(st, annotations={"org.orchestrator.restartable": "false"})
    plan = w.plan(ss)
    assert [(a.kind, a.reason) for a in plan.actions if a.kind != "generation"] == [
        ("recreate", "restart.policy: never -> always (the runtime sets restarts up at create)")]
    assert w.apply(ss).ok and w.running()["shop/api-1"] != cid and not w.plan(ss)
    back = sset(stack("shop", svc("api", restart=RestartPolicy("never"))))
    assert [a.kind for a in w.plan(back).actions if a.kind != "generation"] == ["update"]


def test_scale_up_and_down(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.apply(sset(stack("shop", svc("api", replicas=2))))
    plan = w.plan(sset(stack("shop", svc("api", replicas=4))))
    assert [(a.kind, a.target, a.reason) for a in plan.actions if a.kind == "create"] == [
        ("create", "shop/api-3", "scale: replicas 2 -> 4"),
        ("create", "shop/api-4", "scale: replicas 2 -> 4")]
    w.apply(sset(stack("shop", svc("api", replicas=4))))
    plan = w.plan(sset(stack("shop", svc("api", replicas=1))))
    dels = [(a.target, a.reason) for a in plan.actions if a.kind == "delete"]
    assert dels == [("shop/api-4", "scale: replicas 4 -> 1"), ("shop/api-3", "scale: replicas 4 -> 1"),
                    ("shop/api-2", "scale: replicas 4 -> 1")]
    assert not any(a.kind == "recreate" for a in plan.actions)
    assert w.apply(sset(stack("shop", svc("api", replicas=1)))).ok
    assert sorted(w.running()) == ["shop/api-1"] and len(w.rt.list()) == 1


def test_removed_service_pruned_and_no_prune_keeps_it(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.apply(sset(stack("shop", svc("api"), svc("old"))))
    ss = sset(stack("shop", svc("api")))
    assert not any(a.kind == "delete" for a in w.plan(ss, prune=False).actions)
    plan = w.plan(ss)
    assert [(a.target, a.reason) for a in plan.actions if a.kind == "delete"] == [
        ("shop/old-1", "removed from manifests")]
    w.apply(ss)
    assert sorted(w.running()) == ["shop/api-1"]


def test_prune_touches_only_our_inventory(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.apply(sset(stack("shop", svc("api"))))
    # a container someone else made on the same runtime, with a name that looks like ours
    w.rt.create("shop_old_1_abcdef", tmp_path)
    w.rt.start("shop_old_1_abcdef")
    w.apply(sset(stack("shop", svc("api"))))
    w.apply(sset(stack("other", svc("x"))), source="elsewhere")
    assert w.rt.state("shop_old_1_abcdef").status == "running"
    assert ("delete", "shop_old_1_abcdef") not in w.rt.calls


def test_stack_removed_from_same_source_is_pruned_other_sources_kept(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.apply(sset(stack("a", svc("x")), stack("b", svc("y"))), source="dir")
    w.apply(sset(stack("c", svc("z"))), source="file")
    plan = w.plan(sset(stack("a", svc("x"))), source="dir")
    assert kinds(plan) == [("delete", "b/y-1"), ("stack-forget", "b")]
    w.apply(sset(stack("a", svc("x"))), source="dir")
    assert sorted(w.running()) == ["a/x-1", "c/z-1"]
    assert [s.name for s in w.inv.stacks()] == ["a", "c"]


def test_prune_deletes_in_reverse_dependency_order(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.apply(sset(stack("s", svc("web", depends_on=(dep("api"),)), svc("api", depends_on=(dep("db"),)),
                       svc("db"))), source="d")
    plan = w.plan(sset(), source="d")
    assert [a.target for a in plan.actions if a.kind == "delete"] == ["s/web-1", "s/api-1", "s/db-1"]


def test_drift_killed_container_is_recreated_with_reason(tmp_path: Path) -> None:
    w = World(tmp_path)
    ss = sset(stack("shop", svc("api"), svc("job", restart=RestartPolicy("never"))))
    w.apply(ss)
    cid, job = w.running()["shop/api-1"], w.running()["shop/job-1"]
    w.rt.crash(cid, 137, sig=9)
    w.rt.crash(job, 0)
    plan = w.plan(ss)
    assert [(a.kind, a.target, a.reason) for a in plan.actions] == [
        ("recreate", "shop/api-1", "drift: killed by signal 9")]
    w.apply(ss)
    assert w.running()["shop/api-1"] != cid


def test_drift_vanished_and_oom(tmp_path: Path) -> None:
    w = World(tmp_path)
    ss = sset(stack("shop", svc("api"), svc("db")))
    w.apply(ss)
    ids = w.running()
    w.rt.vanish(ids["shop/api-1"])
    w.rt.crash(ids["shop/db-1"], 137, oom=True)
    reasons = {a.target: a.reason for a in w.plan(ss).actions}
    assert reasons == {"shop/api-1": "drift: container gone from the runtime",
                       "shop/db-1": "crash: exited 137 (OOMKilled) (restart: on-failure)"}
    assert w.apply(ss).ok and len(w.running()) == 2 and not w.plan(ss)


def test_created_but_not_started_is_started(tmp_path: Path) -> None:
    w = World(tmp_path)
    ss = sset(stack("shop", svc("api")))
    w.apply(ss)
    cid = w.running()["shop/api-1"]
    w.rt.containers[cid] = replace(w.rt.containers[cid], status="created")  # type: ignore[arg-type]
    assert [(a.kind, a.container_id) for a in w.plan(ss).actions] == [("start", cid)]


def test_rolling_update_one_replica_at_a_time_stop_first(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.apply(sset(stack("shop", svc("api", replicas=3))))
    w.rt.calls.clear()
    assert w.apply(sset(stack("shop", svc("api", image="busybox:2", replicas=3)))).ok
    seq = [(op, cid.split("_")[2]) for op, cid in w.rt.ops("create", "delete")]
    assert seq == [("delete", "1"), ("create", "1"), ("delete", "2"), ("create", "2"), ("delete", "3"),
                   ("create", "3")]


def test_rolling_update_start_first(tmp_path: Path) -> None:
    w = World(tmp_path)
    base = svc("api", replicas=2, update=UpdateConfig(order="start-first"))
    w.apply(sset(stack("shop", base)))
    w.rt.calls.clear()
    assert w.apply(sset(stack("shop", replace(base, image="busybox:2")))).ok
    seq = [(op, cid.split("_")[2]) for op, cid in w.rt.ops("create", "delete")]
    assert seq == [("create", "1"), ("delete", "1"), ("create", "2"), ("delete", "2")]


def test_down_removes_stack_keeps_volumes_unless_asked(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.apply(sset(stack("shop", svc("api"), volumes=["data"])))
    assert (tmp_path / "volumes" / "shop_data").is_dir()
    assert w.apply(sset(), remove=frozenset({"shop"})).ok
    assert not w.rt.list() and not w.inv.stacks() and (tmp_path / "volumes" / "shop_data").is_dir()
    w.apply(sset(stack("shop", svc("api"), volumes=["data"])))
    assert w.apply(sset(), remove=frozenset({"shop"}), remove_volumes=True).ok
    assert not (tmp_path / "volumes" / "shop_data").exists() and not w.inv.volumes()


def test_volume_removed_from_manifest_is_kept(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.apply(sset(stack("shop", svc("api"), volumes=["data"])))
    w.apply(sset(stack("shop", svc("api"))))
    assert (tmp_path / "volumes" / "shop_data").is_dir() and len(w.inv.volumes()) == 1
