"""Whole-command timings on the native runtime (root): a 50-service stack (network none, busybox rootfs)
from empty to all running, then a no-op ``apply`` (target < 300 ms including interpreter start), then
``down``. Each is one ``python -m orchestrator`` process, timed from outside, in a temp state root.

    sudo python3 bench/apply_bench.py [--services 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ORCH, compile_bytecode, kill_leftovers


def stack_yaml(n: int) -> str:
    lines = ["apiVersion: orchestrator/v1", "kind: Stack", "metadata: {name: bench}", "spec:", "  services:"]
    for i in range(n):
        lines += [f"    s{i:02d}:", "      rootfs: ./rootfs", '      command: ["sleep", "100000"]',
                  "      stopGracePeriod: 100ms", "      network: none"]
    return "\n".join(lines) + "\n"


def run(env: dict[str, str], *argv: str) -> float:
    t = time.perf_counter()
    r = subprocess.run([*ORCH, *argv], env=env, capture_output=True, text=True,
                       check=False)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"orchestrator {' '.join(argv)} failed ({r.returncode}):\n{r.stderr}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    compile_bytecode()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for d in ("bin", "proc", "dev", "sys", "tmp", "etc"):
            (base / "rootfs" / d).mkdir(parents=True)
        shutil.copy("/bin/busybox", base / "rootfs/bin/busybox")
        (base / "rootfs/bin/sleep").symlink_to("busybox")
        manifest = base / "stack.yaml"
        manifest.write_text(stack_yaml(args.services))
        env = {**os.environ, "ORCHESTRATOR_ROOT": str(base / "state")}
        ups, noops, downs = [], [], []
        try:
            for _ in range(args.runs):
                ups.append(run(env, "apply", "-f", str(manifest)))
                noops += [run(env, "apply", "-f", str(manifest)) for _ in range(3)]
                downs.append(run(env, "down", "bench"))
        finally:
            # a failed run must not leave 50 containers behind when the temp root goes
            subprocess.run([*ORCH, "down", "bench"], env=env,
                           capture_output=True, check=False)
            if kill_leftovers(base / "state"):
                print("warning: down left containers running; killed them by pid", file=sys.stderr)
    print(f"{args.services} services, network none, {args.runs} runs")
    print(f"apply from empty to all running: median {statistics.median(ups):.2f} s  (all: "
          f"{', '.join(f'{x:.2f}' for x in ups)}; target < 1.5 s)")
    print(f"no-op apply, whole command:      median {statistics.median(noops) * 1000:.0f} ms "
          "(target < 300 ms)")
    print(f"down:                            median {statistics.median(downs):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
