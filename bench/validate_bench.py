"""Benchmark: load() of 500 services across 50 files, in-process. Target: median under 300 ms.

Generates 50 stack files of 10 services each (realistic services: resources, healthcheck, ports,
volumes, dependencies, env) in a temporary directory, then times ``orchestrator.manifest.load`` on the
directory several times (after one warm-up run that also builds the schema validator) and prints the
median, min and max. Exit status 1 when the median misses the target, so CI can run it.

Usage: python3 bench/validate_bench.py [--runs N] [--files 50] [--services 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.manifest import load

TARGET_MS = 300.0


def service_yaml(stack: int, i: int, n: int) -> str:
    deps = f"\n      dependsOn: {{svc-{i - 1}: healthy}}" if i else ""
    replicas = 1 + i % 3
    # a published host port can only be bound by one replica
    port = f"127.0.{stack}.{1 + i}:{20000 + stack * 100 + i}:{8000 + i}/tcp"
    ports = f'\n      ports: ["{port}"]' if replicas == 1 else ""
    return f"""    svc-{i}:
      image: busybox:latest
      command: ["httpd", "-f", "-p", "{8000 + i}", "-h", "/www"]
      env: {{MODE: prod, INDEX: "{i}", STACK: "s{stack}"}}
      replicas: {replicas}
      restart: {{policy: on-failure, maxRetries: 5, backoff: {{initial: 500ms, max: 1m}}}}
      resources:
        cpus: 0.25
        cpuShares: 512
        memory: 64Mi
        memoryReservation: 32Mi
        pids: 128
        blkio: {{weight: 500}}
      security: {{seccomp: default, capabilities: {{drop: [NET_RAW, MKNOD]}}, readOnlyRootfs: true}}
      healthcheck:
        {{exec: ["wget", "-q", "-O-", "localhost:{8000 + i}"], interval: 5s, retries: 3}}{deps}{ports}
      volumes:
        - {{type: volume, source: data, target: /data}}
        - {{type: tmpfs, target: /tmp, tmpfs: {{size: 16Mi}}}}
      labels: {{tier: web, index: "{i}"}}
"""


def write_stacks(root: Path, files: int, services: int) -> None:
    for f in range(files):
        body = "".join(service_yaml(f, i, services) for i in range(services))
        (root / f"stack-{f:03d}.yaml").write_text(
            f"apiVersion: orchestrator/v1\nkind: Stack\nmetadata: {{name: stack-{f}}}\n"
            f"spec:\n  services:\n{body}  volumes:\n    data: {{}}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--services", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_stacks(root, args.files, args.services)
        loaded = load([root])  # warm-up: imports, schema compilation
        n = sum(len(s.services) for s in loaded.stacks)
        times, cpu = [], []
        for _ in range(args.runs):
            t0, c0 = time.perf_counter(), time.process_time()
            load([root])
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    median = statistics.median(times)
    # CPU time is printed too: on a shared, loaded machine wall time also measures the neighbours
    print(f"load(): {n} services in {args.files} files: median {median:.1f} ms wall "
          f"(min {min(times):.1f}, max {max(times):.1f}), median {statistics.median(cpu):.1f} ms cpu, "
          f"{args.runs} runs, load average {os.getloadavg()[0]:.2f}; target < {TARGET_MS:.0f} ms")
    return 0 if median < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
