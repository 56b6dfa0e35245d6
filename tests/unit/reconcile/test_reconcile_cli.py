"""The stack verbs end to end through ``orchestrator.cli.main``, on the fake runtime (no root): exit
codes, plan text and JSON, ps/describe output, down, the lock message and the fault hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from reconcile_helpers import NoNetwork

from orchestrator.cli import main
from orchestrator.runtime.fake import FakeRuntime

STACK = """\
apiVersion: orchestrator/v1
kind: Stack
metadata: {{name: demo}}
spec:
  services:
    db:
      rootfs: ./rootfs
      command: ["sleep", "1000"]
      network: none
      ports: ["8080:80"]
    api:
      rootfs: ./rootfs
      command: ["sleep", "{arg}"]
      replicas: {replicas}
      dependsOn: {{db: started}}
      network: none
"""


@pytest.fixture
def fake(state_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeRuntime:
    rt = FakeRuntime(state_root / "fake-runtime.json")
    monkeypatch.setattr("orchestrator.reconcile.session.open_runtime", lambda settings: rt)
    monkeypatch.setattr("orchestrator.reconcile.session.NetworkWiring", NoNetwork)
    (tmp_path / "rootfs").mkdir()
    return rt


def write(tmp_path: Path, replicas: int = 2, arg: str = "1000") -> str:
    path = tmp_path / "stack.yaml"
    path.write_text(STACK.format(replicas=replicas, arg=arg))
    return str(path)


def test_diff_apply_noop_exit_codes(fake: FakeRuntime, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path)
    assert main(["diff", "-f", f]) == 2
    out = capsys.readouterr().out
    assert "+ demo/db-1" in out and "plan: 3 create, 1 generation" in out
    assert main(["apply", "-f", f]) == 0
    assert len([c for c in fake.list() if c.status == "running"]) == 3
    assert main(["apply", "--dry-run", "-f", f]) == 0
    assert main(["plan", "-f", f]) == 0 and "no changes" in capsys.readouterr().out
    f = write(tmp_path, replicas=1, arg="5")
    assert main(["-o", "json", "diff", "-f", f]) == 2
    data = json.loads(capsys.readouterr().out)
    assert [(a["kind"], a["target"]) for a in data["actions"]] == [
        ("generation", "demo"), ("delete", "demo/api-2"), ("recreate", "demo/api-1")]
    assert data["actions"][2]["reason"] == "command: [sleep 1000] -> [sleep 5]"


def test_ps_describe_down(fake: FakeRuntime, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path)
    assert main(["apply", "-f", f]) == 0
    capsys.readouterr()
    assert main(["ps"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["STACK", "SERVICE", "REPLICA", "STATE", "HEALTH", "RESTARTS", "AGE", "IMAGE",
                                "PORTS"]
    assert lines[1].split()[:4] == ["demo", "api", "1", "running"] and lines[3].endswith("8080:80/tcp")
    assert main(["-o", "json", "get", "demo"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    cid = next(c.id for c in fake.list() if c.id.startswith("demo_db"))
    fake.crash(cid, 137, oom=True)
    assert main(["describe", "db"]) == 0
    out = capsys.readouterr().out
    assert "demo/db-1" in out and "exited 137 (OOMKilled)" in out and "create: new stack" in out
    assert main(["down", "nope"]) == 2
    assert "no such stack: nope" in capsys.readouterr().err
    assert main(["down", "demo"]) == 0
    assert fake.list() == []
    capsys.readouterr()
    assert main(["ps"]) == 0 and len(capsys.readouterr().out.splitlines()) == 1


def test_failed_apply_names_what_and_why(fake: FakeRuntime, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    fake.start_hook = lambda cid: 2 if cid.startswith("demo_db") else None
    assert main(["apply", "-f", write(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "error: demo/db-1: demo/db-1: exited 2" in err and "dependency demo/db failed" in err


def test_lock_is_reported(fake: FakeRuntime, tmp_path: Path, state_root: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.store.lock import ApplyLock
    with ApplyLock(state_root):
        assert main(["apply", "-f", write(tmp_path)]) == 1
    assert f"another apply is running (pid {os.getpid()}" in capsys.readouterr().err


def test_fault_hook_exits_137_and_next_apply_converges(fake: FakeRuntime, tmp_path: Path,
                                                       state_root: Path) -> None:
    f = write(tmp_path)
    code = ("import sys, pathlib; from orchestrator.runtime.fake import FakeRuntime; "
            "import orchestrator.reconcile.session as s; rt = FakeRuntime(pathlib.Path(sys.argv[1])); "
            f"sys.path.insert(0, {str(Path(__file__).parent)!r}); from reconcile_helpers import NoNetwork; "
            "s.open_runtime = lambda settings: rt; s.NetworkWiring = NoNetwork; "
            "from orchestrator.cli import main; "
            "sys.exit(main(sys.argv[2:]))")
    env = {**os.environ, "ORCHESTRATOR_FAULT_AFTER_STEP": "4"}
    r = subprocess.run([sys.executable, "-c", code, str(state_root / "fake-runtime.json"), "apply", "-f", f],
                       env=env, capture_output=True, text=True, check=False)
    assert r.returncode == 137 and "fault injected after step 4" in r.stderr
    rt = FakeRuntime(state_root / "fake-runtime.json")
    assert len(rt.list()) == 1            # killed half-way: the second container exists, not started
    fake.containers = rt.containers
    assert main(["apply", "-f", f]) == 0
    assert main(["diff", "-f", f]) == 0
    assert len(fake.list()) == 3


def test_apply_stackset_for_sources(fake: FakeRuntime, tmp_path: Path, state_root: Path) -> None:
    from dataclasses import replace

    from orchestrator import manifest
    from orchestrator.cli import stack_cmds
    from orchestrator.cli.context import Context
    from orchestrator.settings import Settings

    ctx = Context(Settings.from_env(str(state_root)))
    one = manifest.load([write(tmp_path)])
    two = replace(one, stacks=(*one.stacks, replace(one.stacks[0], name="other")))
    out = stack_cmds.apply_stackset(ctx, two)
    assert out.ok and out.changed == 8 and len(fake.list()) == 6
    # a partial pass (only_stacks) never prunes what it leaves out, even with a source
    out = stack_cmds.apply_stackset(ctx, one, only_stacks={"demo"}, source=stack_cmds.source_for(["x"]))
    assert out.ok and out.changed == 0 and len(fake.list()) == 6
    out = stack_cmds.apply_stackset(ctx, one, prune_stacks=["other"])
    assert out.ok and len(fake.list()) == 3 and "delete" in out.message
    stack_cmds._SESSIONS.pop(ctx.settings).close()
