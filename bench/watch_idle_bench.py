"""Case: an idle ``orchestrator watch`` over a tree of 10,000 files: CPU and memory.

The watched directory is what a real config repository looks like: one stack manifest (one running
service) at the top, and 10,000 other files under ``assets/`` (100 directories x 100 files: html, conf
and json, the content a service mounts), which are in the watched tree — inotify watches every
directory, and every resync pass walks the tree for manifests — but are not manifests. After the first
pass has run the service, nothing changes for ``--seconds`` (default 30): the CPU used over that window
(utime+stime from /proc/PID/stat, for the watch process and its helper processes, e.g. the runtime's
fork server; never the containers) and the resident memory (VmRSS from /proc/PID/status) are reported.
The default resync (30 s) runs inside the window, so the number includes one full reconcile pass.
Targets: under 1% of one core and under 60 MB RSS. ``--poll`` measures the polling fallback instead.

    python3 bench/watch_idle_bench.py [--seconds 30] [--files 10000] [--poll]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from common import ORCH, Sample, report, stopper
from workspace import Workspace

STACK = """apiVersion: orchestrator/v1
kind: Stack
metadata: {name: idlebench}
spec:
  services:
    web:
      image: busybox:latest
      command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
      network: none
"""
TICK = os.sysconf("SC_CLK_TCK")


def make_tree(root: Path, files: int) -> None:
    root.mkdir(parents=True)
    (root / "stack.yaml").write_text(STACK)
    per_dir = 100
    for i in range(files):
        d = root / "assets" / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        ext = ("html", "conf", "json")[i % 3]
        (d / f"f{i:05d}.{ext}").write_text(f"asset {i}\n")


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants that are not containers (their cgroup is not one of ours)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            cg = Path(f"/proc/{p}/cgroup").read_text()
        except OSError:
            continue
        if "/orchestrator/" in cg or b"orch-supervise" in Path(f"/proc/{p}/cmdline").read_bytes():
            continue                                 # a container or its monitor: they outlive the watch
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pid: int) -> int:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(f[11]) + int(f[12])                   # utime, stime (fields 14 and 15)


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid: int) -> int:
    """Proportional set size: pages shared with the forked fork server are counted once in the sum."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:60].strip()
    except OSError:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--poll", action="store_true", help="measure the polling fallback")
    args = ap.parse_args()
    with Workspace("bench-watchidle-") as ws:
        root = ws.dir / "orch-root"
        env = {**os.environ, "ORCHESTRATOR_ROOT": str(root)}
        orch = list(ORCH)
        subprocess.run([*orch, "image", "import", str(ws.images_dir / "busybox.oci.tar"), "--name",
                        "busybox:latest"], check=True, env=env, stdout=subprocess.DEVNULL)
        d = ws.dir / "config"
        make_tree(d, args.files)
        nfiles = sum(len(f) for _r, _d, f in os.walk(d))
        ndirs = sum(len(x) for _r, x, _f in os.walk(d)) + 1
        ws.on_close(lambda: subprocess.run([*orch, "down", "idlebench"], env=env, check=False,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        log_path = ws.dir / "watch.log"
        log = log_path.open("wb")
        poll = ["--poll"] if args.poll else []
        proc = subprocess.Popen([*orch, "--log-level", "info", "watch", "-f", str(d), *poll], env=env,
                                stdout=log, stderr=subprocess.STDOUT)

        stop = stopper(proc, log)
        ws.on_close(stop)
        t0 = time.monotonic()
        while b"create: new stack" not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() - t0 > 60:
                raise SystemExit(f"watch did not run the stack: {log_path.read_text()}")
            time.sleep(0.05)
        time.sleep(2.0)                              # let the first pass's aftermath settle
        pids = tree(proc.pid)
        before = {p: cpu_ticks(p) for p in pids}
        start = time.monotonic()
        time.sleep(args.seconds)
        wall = time.monotonic() - start
        used = {p: cpu_ticks(p) - before[p] for p in pids}
        rss = {p: status_kb(p, "VmRSS") for p in pids}
        pss = {p: pss_kb(p) for p in pids}
        names = {p: comm(p) for p in pids}
        hwm = status_kb(proc.pid, "VmHWM")
        passes = log_path.read_text().count("trigger=resync")
        stop()
        cpu_pct = sum(used.values()) / TICK / wall * 100
        mode = "polling" if args.poll else "inotify"
        cpu = Sample(f"ours: idle watch ({mode}), CPU % of one core, {wall:.0f} s", [cpu_pct], unit="%",
                     scale=1.0)
        mem = Sample(f"ours: idle watch ({mode}), VmRSS of the watch process", [rss[proc.pid] / 1024],
                     unit="MB", scale=1.0)
        helpers = [Sample(f"helper pid {p}: {names[p][:50]}", [rss[p] / 1024], unit="MB", scale=1.0)
                   for p in pids if p != proc.pid]
        notes = [f"{nfiles} files in {ndirs} directories watched (1 manifest, the rest non-manifest assets)",
                 "per process over the window: " + "; ".join(
                     f"{names[p][:50]!r} cpu {used[p] / TICK:.2f}s rss {rss[p] / 1024:.1f}MB "
                     f"pss {pss[p] / 1024:.1f}MB" for p in pids),
                 f"watch and helpers together: PSS {sum(pss.values()) / 1024:.1f} MB (shared pages once)",
                 f"watch process peak RSS (VmHWM): {hwm / 1024:.1f} MB",
                 f"resync passes inside the window: {passes} (each walks the tree and re-observes)"]
        report(f"watch: idle over {nfiles} files ({mode}), CPU", cpu, [], "under 1% of one core",
               met=cpu_pct < 1.0, notes=notes)
        report(f"watch: idle over {nfiles} files ({mode}), memory", mem, helpers, "under 60 MB RSS",
               met=rss[proc.pid] / 1024 < 60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
