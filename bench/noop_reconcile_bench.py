"""No-op reconcile pass over 500 services in 50 stacks: target under 50 ms in-process.

Builds the model directly (manifest loading has its own bench), applies it once through the controller
on the in-memory fake runtime and a real SQLite store in a temp dir, then times ``reconcile_once`` on the
unchanged model (rebuilt each run: equal values, new objects, as a watch loop reloading files gets):
desired state (hashes), observation (store read + runtime.list), diff and plan. Prints
median / p95 / max in ms and checks that the pass changed nothing (no store writes, no runtime calls).

    python3 bench/noop_reconcile_bench.py [--stacks 50] [--services 10] [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.manifest.model import Dependency, Healthcheck, Port, Resources, Service, Stack, StackSet
from orchestrator.reconcile.controller import Controller
from orchestrator.reconcile.execute import Options
from orchestrator.runtime.base import Mount
from orchestrator.runtime.fake import FakeRuntime
from orchestrator.state.desired import DesiredContainer
from orchestrator.store import open_store


class NullBuilder:
    """Bundles are not the point here: the fake runtime needs none."""

    def prepare(self, dc: DesiredContainer, cid: str, netns_path: str = "") -> tuple[Path, Sequence[Mount]]:
        return Path("/nonexistent"), ()

    def resources(self, dc: DesiredContainer) -> Mapping[str, Any]:
        return {}

    def cleanup(self, cid: str) -> None:
        pass

    def volume_path(self, stack: str, name: str) -> Path:
        return Path("/nonexistent") / f"{stack}_{name}"

    def make_volume(self, path: Path) -> None:
        pass

    def remove_volume(self, path: Path) -> None:
        pass


def build(stacks: int, services: int) -> StackSet:
    out = []
    for s in range(stacks):
        svcs = []
        for i in range(services):
            svcs.append(Service(
                name=f"svc{i:02d}", image="busybox:latest", command=("httpd", "-f", "-p", "8080"),
                env=(("MODE", "prod"), ("N", str(i))), resources=Resources(memory=64 << 20, cpus=0.5),
                healthcheck=Healthcheck(kind="exec", exec=("true",)),
                depends_on=(Dependency(f"svc{i - 1:02d}"),) if i else (),
                ports=(Port(20000 + s * services + i, 8080),)))
        out.append(Stack(name=f"stack{s:02d}", services=tuple(svcs)))
    return StackSet(stacks=tuple(out))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stacks", type=int, default=50)
    ap.add_argument("--services", type=int, default=10)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    ss = build(args.stacks, args.services)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rt, inv = FakeRuntime(), open_store(root / "state.db")
        ctl = Controller(rt, inv, NullBuilder(), resolve_image=lambda ref: "sha256:" + "a" * 64)
        t0 = time.perf_counter()
        first = ctl.reconcile_once(ss, source="bench", options=Options(wait=True))
        create_s = time.perf_counter() - t0
        assert first.ok and len(rt.list()) == args.stacks * args.services
        calls, changes = len(rt.calls), inv.store.total_changes()
        times = []
        for _ in range(args.runs):
            fresh = build(args.stacks, args.services)   # equal but new objects, as after a reload
            t = time.perf_counter()
            r = ctl.reconcile_once(fresh, source="bench")
            times.append((time.perf_counter() - t) * 1000)
            assert not r.changed
        assert len(rt.calls) == calls and inv.store.total_changes() == changes, "a no-op pass wrote"
    times.sort()
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    print(f"services={args.stacks * args.services} stacks={args.stacks} runs={args.runs} "
          f"first apply (fake runtime)={create_s * 1000:.0f} ms")
    print(f"no-op pass: median={statistics.median(times):.1f} ms p95={p95:.1f} ms max={times[-1]:.1f} ms "
          f"(target < 50 ms)")
    return 0 if statistics.median(times) < 50 else 1


if __name__ == "__main__":
    sys.exit(main())
