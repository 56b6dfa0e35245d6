"""Shared pieces of the benchmark scripts: timing, statistics, peer bundles, result tables.

Benchmarks are not tests: they are run by hand or by ``make bench`` (see the README), print one table
(our median and p95, each peer's, and the ratio, all measured in the same run) and append a dated
markdown file under ``bench/results/`` with the machine description, so regressions show in review.
Everything a script starts it stops, by pid.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

APPLETS = ("sh", "true", "false", "sleep", "echo", "cat", "ls", "id", "hostname", "httpd", "wget")


@dataclass
class Sample:
    name: str
    times_s: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_s) * 1000

    @property
    def p95_ms(self) -> float:
        xs = sorted(self.times_s)
        return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))] * 1000


def timed(fn: Callable[[], object], runs: int, warmup: int = 2, name: str = "") -> Sample:
    for _ in range(warmup):
        fn()
    s = Sample(name)
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        s.times_s.append(time.perf_counter() - t0)
    return s


def hyperfine(cmd: str, runs: int, name: str, *, prefix: Sequence[str] = (), warmup: int = 3) -> Sample:
    """Time a shell command with hyperfine (optionally run inside ``prefix``, e.g. a mount namespace)."""
    out = Path(f"/tmp/bench-hf-{os.getpid()}.json")
    # -N: no intermediate shell, so the shell's own start-up is not counted against the peer
    argv = [*prefix, "hyperfine", "-N", "--warmup", str(warmup), "--runs", str(runs),
            "--export-json", str(out), "--style", "none", cmd]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data = json.loads(out.read_text())
    out.unlink()
    return Sample(name, list(data["results"][0]["times"]))


def busybox_rootfs(dest: Path) -> Path:
    """A minimal rootfs: static busybox and a few applet links (what every peer runs)."""
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (dest / d).mkdir(exist_ok=True)
    shutil.copy2("/bin/busybox", dest / "bin" / "busybox")
    for a in APPLETS:
        link = dest / "bin" / a
        if not link.exists():
            link.symlink_to("busybox")
    return dest


def runc_bundle(dest: Path, args: Sequence[str] = ("/bin/true",)) -> Path:
    """An OCI bundle made by ``runc spec`` (the peers' own defaults), running ``args`` with no tty."""
    dest.mkdir(parents=True, exist_ok=True)
    busybox_rootfs(dest / "rootfs")
    if (dest / "config.json").exists():
        (dest / "config.json").unlink()
    subprocess.run(["runc", "spec", "--bundle", str(dest)], check=True)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = list(args)
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    return dest


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.node()} · {platform.system()} {platform.release()} · {cpu} · {os.cpu_count()} cpus"
            f" · Python {platform.python_version()}")


def report(title: str, ours: Sample, peers: Sequence[Sample], target: str, out_dir: Path) -> str:
    lines = [f"### {title}", "", f"target: {target}", "",
             "| case | median ms | p95 ms | ratio ours/peer |", "|---|---:|---:|---:|",
             f"| **{ours.name}** | {ours.median_ms:.1f} | {ours.p95_ms:.1f} | |"]
    for p in peers:
        lines.append(f"| {p.name} | {p.median_ms:.1f} | {p.p95_ms:.1f} | "
                     f"{ours.median_ms / p.median_ms:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{time.strftime('%Y-%m-%d')}.md"
    header = "" if path.exists() else f"# Benchmarks {time.strftime('%Y-%m-%d')}\n\nmachine: {machine()}\n\n"
    with path.open("a") as f:
        f.write(header + text + "\n")
    return text
