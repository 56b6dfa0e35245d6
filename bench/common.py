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
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# BENCH_RESULTS redirects the dated results files (smoke runs that should not land in the repo)
RESULTS = Path(os.environ.get("BENCH_RESULTS") or Path(__file__).resolve().parent / "results")

# crun 1.8 refuses a hybrid cgroup host ("cgroups in hybrid mode not supported"): run it (and podman,
# whose default runtime it is) in a private mount namespace where the cgroup2 mount is gone. The host's
# mount table is untouched; everything the namespace mounted disappears with its last process.
CGROUP2 = "/sys/fs/cgroup/unified"
CRUN_NS: tuple[str, ...] = ("unshare", "-m", "--propagation", "private", "sh", "-c",
                            f'if mountpoint -q {CGROUP2}; then umount {CGROUP2}; fi; exec "$@"', "sh")

# podman on this host: cgroupfs (no systemd user session), file events (no journald), explicit ulimits
# (the default nproc/nofile maxima are refused by crun here)
PODMAN_FLAGS: tuple[str, ...] = ("--cgroup-manager=cgroupfs", "--events-backend=file")
PODMAN_RUN_FLAGS: tuple[str, ...] = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")

REPO = Path(__file__).resolve().parent.parent


def _orchestrator_python() -> str:
    """The interpreter of the product as ``scripts/setup.sh`` installs it (the venv on Debian's
    python3): the whole-command timings are the product's, not a development machine's (a pyenv shim
    alone adds ~50 ms to every command). Falls back to the interpreter running the benchmark."""
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


ORCH_PYTHON = _orchestrator_python()
ORCH: tuple[str, ...] = (ORCH_PYTHON, "-m", "orchestrator")


def orch_line(*args: str | Path) -> str:
    """One shell-free ``orchestrator`` command line for hyperfine -N (our temp paths have no spaces)."""
    return " ".join([*ORCH, *map(str, args)])


def compile_bytecode() -> None:
    """Write the package's .pyc files, as installing a wheel does: with PYTHONDONTWRITEBYTECODE set (as
    on these machines) every command would otherwise compile the modules it imports (~70 ms)."""
    subprocess.run([ORCH_PYTHON, "-m", "compileall", "-q", str(REPO / "orchestrator")], check=True,
                   stdout=subprocess.DEVNULL, env={k: v for k, v in os.environ.items()
                                                    if k != "PYTHONDONTWRITEBYTECODE"})


APPLETS = ("sh", "true", "false", "sleep", "echo", "cat", "ls", "id", "hostname", "httpd", "wget")


@dataclass
class Sample:
    """Measurements of one contender. ``times_s`` holds seconds for timings; for other quantities
    (memory, throughput) set ``unit`` and ``scale`` (1.0: values are already in ``unit``)."""

    name: str
    times_s: list[float] = field(default_factory=list)
    unit: str = "ms"
    scale: float = 1000.0
    note: str = ""
    # a summary printed by another script (median, p95, n) when its raw values are not available
    given: tuple[float, float, int] | None = None

    @property
    def n(self) -> int:
        return self.given[2] if self.given else len(self.times_s)

    @property
    def median_ms(self) -> float:
        if self.given:
            return self.given[0]
        return statistics.median(self.times_s) * self.scale

    @property
    def p95_ms(self) -> float:
        if self.given:
            return self.given[1]
        xs = sorted(self.times_s)
        return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))] * self.scale

    @property
    def median(self) -> float:
        """The median in ``unit`` (alias of ``median_ms`` that reads right for every unit)."""
        return self.median_ms


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


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def report(title: str, ours: Sample, peers: Sequence[Sample], target: str, out_dir: Path = RESULTS,
           met: bool | None = None, notes: Sequence[str] = ()) -> str:
    """Print one case's table and append it to ``out_dir/YYYY-MM-DD.md`` (header with the machine the
    first time). ``met`` is the verdict on ``target`` (None: not judged); ``notes`` are printed below."""
    u = ours.unit
    verdict = "" if met is None else f" — **{'met' if met else 'NOT met'}**"
    lines = [f"### {title}", "", f"target: {target}{verdict}", "",
             f"| case | median {u} | p95 {u} | n | ratio ours/peer |", "|---|---:|---:|---:|---:|",
             f"| **{ours.name}** | {ours.median_ms:.1f} | {ours.p95_ms:.1f} | {ours.n} | |"]
    for p in peers:
        if not p.n:
            lines.append(f"| {p.name} | n/a | n/a | 0 | {p.note or 'not run'} |")
            continue
        ratio = f"{ours.median_ms / p.median_ms:.2f}x" if ours.n and p.median_ms else ""
        lines.append(f"| {p.name} | {p.median_ms:.1f} | {p.p95_ms:.1f} | {p.n} | {ratio} |")
    # other work on the host skews every number: say how busy it was when the case finished
    notes = [*notes, f"load average (1/5/15 min) at the end of the case: {_loadavg()}"]
    lines += ["", *(f"- {n}" for n in notes)]
    text = "\n".join(lines) + "\n"
    print(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{time.strftime('%Y-%m-%d')}.md"
    header = "" if path.exists() else f"# Benchmarks {time.strftime('%Y-%m-%d')}\n\nmachine: {machine()}\n\n"
    with path.open("a") as f:
        f.write(header + text + "\n")
    return text


def kill_leftovers(root: Path) -> int:
    """SIGKILL every container supervisor (and its container) whose command line names ``root``: the
    last resort of a benchmark whose own ``down`` failed, before its state root is removed. By pid."""
    import signal as _signal

    killed = 0
    marker = str(root).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"orch-supervise" not in cmdline or marker not in cmdline:
                continue
            children = [int(c) for f in (entry / "task").glob("*/children") for c in f.read_text().split()]
        except OSError:
            continue
        for pid in [*children, int(entry.name)]:
            try:
                os.kill(pid, _signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def running_with(state_dir: Path, needle: bytes) -> bool:
    """Whether a container of the runtime state dir ``state_dir`` runs a process whose command line
    contains ``needle`` (read from each container's state.json and /proc)."""
    if not state_dir.is_dir():
        return False
    for d in state_dir.iterdir():
        try:
            pid = int(json.loads((d / "state.json").read_text()).get("pid", 0))
            if pid and needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except (OSError, ValueError):
            continue
    return False


def wait_for(state_dir: Path, needle: bytes, timeout_s: float, proc: subprocess.Popen[bytes]) -> float:
    """Poll (every millisecond) until ``running_with``; the perf_counter time it became true. Fails if
    ``proc`` (the watch or gitops loop under test) exits first."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if running_with(state_dir, needle):
            return time.perf_counter()
        if proc.poll() is not None:
            raise SystemExit(f"the process under test ({proc.args!r}) exited with {proc.returncode}")
        time.sleep(0.001)
    raise SystemExit(f"no container running {needle!r} after {timeout_s} s")


def stopper(proc: subprocess.Popen[bytes], log: Any) -> Callable[[], None]:
    """A clean-up that stops ``proc`` by its pid (SIGTERM, SIGKILL after 10 s) and closes its log."""
    import signal as _signal

    def stop() -> None:
        if proc.poll() is None:
            os.kill(proc.pid, _signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, _signal.SIGKILL)
                proc.wait()
        log.close()
    return stop
