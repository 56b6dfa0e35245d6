"""Case: no-op ``apply`` of 500 services (50 stacks of 10): the whole command, and one in-process pass.

Writes 50 stack files of 10 busybox services into a temp dir, applies them once for real (500 running
containers under a private ``ORCHESTRATOR_ROOT``; this first apply is timed too, for information), then:
- times the whole ``orchestrator apply -f DIR`` (interpreter start, load, observe, diff, plan) with
  hyperfine -N; every run must print "no changes";
- times one in-process pass on the real runtime and store (``Session.controller.reconcile_once`` on the
  already-loaded manifests, the way ``watch`` runs it);
- runs the reconcile helper's ``bench/noop_reconcile_bench.py`` (same shape, fake runtime) and reports its
  summary.
Then ``orchestrator down`` every stack. The peers have no declarative no-op to compare with.

    python3 bench/noop_apply_bench.py [--stacks 50] [--services 10] [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from common import ORCH, Sample, hyperfine, orch_line, report
from workspace import Workspace

HERE = Path(__file__).resolve().parent


def write_stacks(d: Path, stacks: int, services: int) -> list[str]:
    d.mkdir(parents=True)
    names = []
    for s in range(stacks):
        name = f"noop{s:02d}"
        body = "".join(f"""    svc{i:02d}:
      image: busybox:latest
      command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
      env: {{MODE: prod, INDEX: "{i}"}}
      resources: {{memory: 32Mi, pids: 64}}
      network: none
""" for i in range(services))
        (d / f"{name}.yaml").write_text("apiVersion: orchestrator/v1\nkind: Stack\n"
                                        f"metadata: {{name: {name}}}\nspec:\n  services:\n{body}")
        names.append(name)
    return names


def in_process(root: Path, stack_dir: Path, runs: int) -> Sample:
    from orchestrator import manifest
    from orchestrator.reconcile.session import Session
    from orchestrator.settings import Settings
    source = "files:" + str(stack_dir.absolute())
    s = Sample("ours: one in-process pass, real runtime + store")
    with Session(Settings.from_env(str(root))) as session:
        ss = manifest.load([str(stack_dir)])
        for i in range(runs + 2):
            t0 = time.perf_counter()
            r = session.controller.reconcile_once(ss, source=source)
            dt = time.perf_counter() - t0
            if r.plan:
                raise SystemExit(f"in-process pass was not a no-op: {r.plan}")
            if i >= 2:
                s.times_s.append(dt)
    return s


def helper_bench(stacks: int, services: int, runs: int) -> Sample:
    out = subprocess.run([sys.executable, str(HERE / "noop_reconcile_bench.py"), "--stacks", str(stacks),
                          "--services", str(services), "--runs", str(runs)], text=True,
                         capture_output=True)
    m = re.search(r"median=([\d.]+) ms p95=([\d.]+) ms", out.stdout)
    s = Sample("noop_reconcile_bench.py (in-process, fake runtime)")
    if m:
        s.given = (float(m.group(1)), float(m.group(2)), runs)
    else:
        s.note = f"failed (exit {out.returncode}): {(out.stderr or out.stdout)[-200:].strip()}"
    return s


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stacks", type=int, default=50)
    ap.add_argument("--services", type=int, default=10)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    total = args.stacks * args.services
    with Workspace("bench-noop-") as ws:
        root = ws.dir / "orch-root"
        env = {**os.environ, "ORCHESTRATOR_ROOT": str(root)}
        subprocess.run([*ORCH, "image", "import", str(ws.images_dir / "busybox.oci.tar"), "--name",
                        "busybox:latest"], check=True, env=env, stdout=subprocess.DEVNULL)
        stack_dir = ws.dir / "stacks"
        names = write_stacks(stack_dir, args.stacks, args.services)
        ws.on_close(lambda: subprocess.run([*ORCH, "down", *names], env=env, check=False,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        t0 = time.perf_counter()
        subprocess.run([*ORCH, "apply", "-f", str(stack_dir)], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first_s = time.perf_counter() - t0
        check = subprocess.run([*ORCH, "apply", "-f", str(stack_dir)], env=env, text=True,
                               capture_output=True)
        if "no changes" not in check.stdout + check.stderr:
            raise SystemExit(f"second apply was not a no-op: {check.stdout[-500:]} {check.stderr[-500:]}")
        os.environ["ORCHESTRATOR_ROOT"] = str(root)     # hyperfine -N inherits our environment
        try:
            whole = hyperfine(orch_line("apply", "-f", stack_dir), args.runs,
                              f"ours: orchestrator apply -f (no-op, {total} services)")
            # the same command cut short, to show where the time goes
            parts = [hyperfine(orch_line("--help"), args.runs, "orchestrator --help (interpreter + CLI)"),
                     hyperfine(orch_line("validate", "-f", stack_dir), args.runs,
                               "orchestrator validate -f (+ load and check the manifests)")]
        finally:
            del os.environ["ORCHESTRATOR_ROOT"]
        inproc = in_process(root, stack_dir, args.runs)
        helper = helper_bench(args.stacks, args.services, args.runs)
        t1 = time.perf_counter()
        subprocess.run([*ORCH, "down", *names], check=True, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        down_s = time.perf_counter() - t1
        report(f"No-op apply of {total} services, whole command", whole, parts, "under 300 ms",
               met=whole.median_ms < 300,
               notes=[f"first (real) apply of {total} services: {first_s:.1f} s; "
                      f"down of all: {down_s:.1f} s"])
        report(f"No-op reconcile pass of {total} services, in-process", inproc, [helper], "under 50 ms",
               met=inproc.median_ms < 50 and (helper.n == 0 or helper.median_ms < 50),
               notes=["the ratio column compares our real-runtime pass with the fake-runtime pass"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
