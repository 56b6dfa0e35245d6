"""``orchestrator watch`` end to end on the real runtime (root): a background ``watch`` subprocess over a
directory; atomic saves apply, an invalid save keeps the old container and reports file:line:col, the
next valid save applies, a removed stack file prunes that stack, a container killed from outside runs
again, a memory limit changed outside is restored by the periodic resync with a drift message naming
what differed, the polling fallback applies a save, SIGTERM stops the loop and leaves the containers
running."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.root


def test_watch_applies_saves_keeps_last_good_heals_and_stops(orch: Any, tmp_path: Path) -> None:
    d = tmp_path / "stacks"
    d.mkdir()
    f = d / "app.yaml"
    f.write_text(orch.stack_yaml("wlive", "1001"))
    (d / "notes.txt").write_text("not a manifest")
    log = tmp_path / "watch.log"
    proc = orch.start("watch", "-f", str(d), "--resync", "1s", "--debounce", "50ms", log=log)

    first, _ = orch.wait_running("sleep 1001")

    # an atomic save (temp file + rename) with a new command: a new container runs it
    orch.atomic_write(f, orch.stack_yaml("wlive", "1002"))
    second, _ = orch.wait_running("sleep 1002", gone="sleep 1001")
    assert second != first

    # an invalid edit: nothing torn down, the error names file:line:col
    orch.atomic_write(f, orch.stack_yaml("wlive", "1003", extra="      replicas: two\n"))
    orch.wait_for(lambda: "replicas" in log.read_text(), what="the invalid-edit error")
    time.sleep(1.5)                                      # at least one resync over the bad file too
    text = log.read_text()
    assert f"{f}:12:17:" in text, text
    assert "nothing changed" in text
    assert text.count("replicas: expected") == 1, "an unchanged error must not be repeated every resync"
    running = orch.processes()
    assert [cmd for _pid, cmd in running.values()] == ["sleep 1002"]
    assert second in running

    # the next valid save applies
    orch.atomic_write(f, orch.stack_yaml("wlive", "1004"))
    third, pid = orch.wait_running("sleep 1004", gone="sleep 1002")
    # the pass ends after the rollout's monitor window; a kill inside it fails (and rolls back) the rollout
    orch.wait_for(lambda: "-> [sleep 1004]" in log.read_text(), what="the pass applying 1004 to end")

    # killed from outside: running again (the runtime's supervisor restarts it in place; the resync
    # pass checks it converged and changes nothing while that restart is pending)
    os.kill(pid, signal.SIGKILL)
    orch.wait_for(lambda: any(p != pid and "sleep 1004" in c for p, c in orch.processes().values()),
                  what="the killed container to run again")

    # a second stack file appears, then is deleted: that stack is pruned (it was applied from this dir)
    (d / "extra.yaml").write_text(orch.stack_yaml("wextra", "1100"))
    orch.wait_running("sleep 1100")
    orch.wait_for(lambda: "wextra/web-1 create" in log.read_text(), what="the extra stack's pass to end")
    (d / "extra.yaml").unlink()
    orch.wait_for(lambda: {r["stack"] for r in orch.ps()} == {"wlive"}, what="the extra stack pruned")
    assert not any("sleep 1100" in cmd for _p, cmd in orch.processes().values())

    # graceful stop: exit 0, and the container keeps running
    assert orch.stop(proc) == 0
    rows = orch.ps()
    assert [(r["stack"], r["service"], r["state"]) for r in rows] == [("wlive", "web", "running")]
    assert third in orch.processes()


def test_watch_polling_fallback_applies_a_save(orch: Any, tmp_path: Path) -> None:
    d = tmp_path / "stacks"
    (d / "nested").mkdir(parents=True)
    f = d / "nested" / "app.yaml"
    f.write_text(orch.stack_yaml("wpoll", "8001"))
    proc = orch.start("watch", "-f", str(d), "--poll", log=tmp_path / "watch.log")
    orch.wait_running("sleep 8001")
    orch.wait_for(lambda: "create: new stack" in (tmp_path / "watch.log").read_text(), what="first pass")
    orch.atomic_write(f, orch.stack_yaml("wpoll", "8002"))
    orch.wait_running("sleep 8002", timeout=15, gone="sleep 8001")    # one poll interval (1 s) + the pass
    assert orch.stop(proc) == 0


def test_watch_resync_heals_a_limit_changed_outside(orch: Any, tmp_path: Path) -> None:
    d = tmp_path / "stacks"
    d.mkdir()
    (d / "app.yaml").write_text(orch.stack_yaml("wlim", "9001", extra="      resources: {memory: 64Mi}\n"))
    log = tmp_path / "watch.log"
    proc = orch.start("watch", "-f", str(d), "--resync", "1s", log=log)
    cid, _pid = orch.wait_running("sleep 9001")
    orch.wait_for(lambda: "create: new stack" in log.read_text(), what="the first pass to end")
    limit = Path("/sys/fs/cgroup/memory/orchestrator") / cid / "memory.limit_in_bytes"
    assert int(limit.read_text()) == 64 << 20
    limit.write_text(str(128 << 20))                     # changed outside the orchestrator
    orch.wait_for(lambda: int(limit.read_text()) == 64 << 20, timeout=15, what="the resync to restore it")
    orch.wait_for(lambda: "resync: wlim/web-1 update: drift: memory limit" in log.read_text(), timeout=10,
                  what="the drift message")
    assert cid in orch.processes()                       # healed in place: the same container
    assert orch.stop(proc) == 0


def test_watch_resync_heals_container_and_monitor_killed(orch: Any, tmp_path: Path) -> None:
    import json
    d = tmp_path / "stacks"
    d.mkdir()
    (d / "app.yaml").write_text(orch.stack_yaml("wheal", "2001", extra="      restart: always\n"))
    log = tmp_path / "watch.log"
    orch.start("watch", "-f", str(d), "--resync", "1s", log=log)
    cid, pid = orch.wait_running("sleep 2001")
    orch.wait_for(lambda: "create: new stack" in log.read_text(), what="the first pass to end")
    state = json.loads((orch.root / "runtime" / cid / "state.json").read_text())
    os.kill(state["monitor_pid"], signal.SIGKILL)       # nobody restarts it in place any more
    os.kill(pid, signal.SIGKILL)
    orch.wait_for(lambda: any(p != pid and "sleep 2001" in c for p, c in orch.processes().values()),
                  timeout=15, what="the container to be recreated by a resync")
    orch.wait_for(lambda: "resync: wheal/web-1 recreate" in log.read_text(), timeout=10,
                  what="the drift message of the resync")
