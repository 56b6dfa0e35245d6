"""Crash injection: kill the applying process (os._exit, like kill -9) after every step of a
multi-service apply, then apply again in a fresh process state: it must converge with no leak.

The child is a fork of the test process running the controller on a file-backed fake runtime and the
real SQLite store; nothing of the child's memory survives, exactly as with kill -9."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from reconcile_helpers import World, dep, exec_hc, sset, stack, svc

from orchestrator.manifest.model import StackSet, UpdateConfig
from orchestrator.reconcile.execute import Options
from orchestrator.runtime.fake import FakeRuntime

V1 = sset(stack("shop", svc("db", healthcheck=exec_hc()), svc("api", replicas=2,
                                                                  depends_on=(dep("db", "healthy"),)),
                svc("old"), volumes=["data"]),
          stack("blog", svc("web")))
V2 = sset(stack("shop", svc("db", image="busybox:2", healthcheck=exec_hc()),
                svc("api", replicas=1, depends_on=(dep("db", "healthy"),)),
                svc("new", replicas=2, update=UpdateConfig(order="start-first")), volumes=["data"]),
          stack("blog", replace(svc("web", image="busybox:2"), update=UpdateConfig(order="start-first"))))


def world(root: Path) -> World:
    return World(root, FakeRuntime(root / "runtime.json"))


def count_steps(root: Path, *sets: StackSet) -> int:
    steps: list[int] = []
    w = world(root)
    for i, ss in enumerate(sets):
        last = i == len(sets) - 1
        opts = Options(timeout_s=5.0, settle_s=0.0, workers=1,
                       on_step=(lambda n, _w: steps.append(n)) if last else None)
        assert w.apply(ss, options=opts).ok
    return len(steps)


def crash_child(root: Path, ss: StackSet, after: int) -> None:
    pid = os.fork()
    if pid == 0:  # the child: apply until step ``after``, then die without any clean-up
        try:
            def hook(n: int, _what: str) -> None:
                if n == after:
                    os._exit(137)
            world(root).apply(ss, options=Options(timeout_s=5.0, settle_s=0.0, workers=2, on_step=hook))
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) in (0, 137)


def assert_converged(root: Path, ss: StackSet) -> None:
    w = world(root)
    r = w.apply(ss)
    assert r.ok, r.failures
    assert not w.plan(ss), str(w.plan(ss))
    want = {dc for dc in w.ctl.desired(ss).containers}
    assert set(w.running()) == want
    records = {r.id for r in w.inv.containers()}
    runtime = {c.id for c in w.rt.list()}
    assert records == runtime, f"leaked: runtime-only {runtime - records}, record-only {records - runtime}"
    assert {p.name for p in (root / "containers").iterdir()} == records   # no leaked bundle dirs
    assert not w.inv.open_journal()


@pytest.mark.parametrize("scenario", ["from-empty", "update"])
def test_kill_at_every_step_converges(tmp_path: Path, scenario: str) -> None:
    sets = (V1,) if scenario == "from-empty" else (V1, V2)
    total = count_steps(tmp_path / "count", *sets)
    assert total > 10
    interrupted = 0
    for n in range(1, total + 1):
        root = tmp_path / f"n{n}"
        root.mkdir()
        if scenario == "update":
            assert world(root).apply(V1).ok
        crash_child(root, sets[-1], n)
        interrupted += bool(world(root).plan(sets[-1]))   # the kill really left work undone
        assert_converged(root, sets[-1])
    assert interrupted >= total - 2, (interrupted, total)
