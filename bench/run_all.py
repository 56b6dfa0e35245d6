"""Run every benchmark case in one go (``make bench``), each as its own process, in a fixed order.

Each case script prints its table and appends it to ``bench/results/YYYY-MM-DD.md`` (machine description
in the file header). A case that fails (a missing peer, a feature not built yet) is reported as such in
the summary and in the results file, with the tail of its error output, and the others still run.
``--quick`` uses fewer runs and smaller sizes (a smoke run, not for publishing).

    sudo python3 bench/run_all.py [--quick] [--only start,stack,...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, machine

HERE = Path(__file__).resolve().parent

# name -> (script, full args, quick args)
CASES: dict[str, tuple[str, list[str], list[str]]] = {
    "start": ("start_bench.py", ["--runs", "30"], ["--runs", "8"]),
    "stack": ("stack_bench.py", ["--runs", "3"], ["--runs", "1", "--services", "10"]),
    "stack-net": ("stack_bench.py", ["--network", "--runs", "3"],
                  ["--network", "--runs", "1", "--services", "10"]),
    "memory": ("memory_bench.py", ["--containers", "10"], ["--containers", "3"]),
    "noop": ("noop_apply_bench.py", ["--runs", "20"], ["--stacks", "5", "--runs", "5"]),
    "validate": ("validate_bench.py", [], ["--runs", "3"]),
    "watch": ("watch_bench.py", ["--runs", "10"], ["--runs", "3"]),
    "disk": ("disk_bench.py", ["--containers", "20"], ["--containers", "5"]),
    "import": ("import_bench.py", ["--runs", "5"], ["--runs", "2"]),
}


def note_failure(name: str, rc: int, tail: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y-%m-%d')}.md"
    header = "" if path.exists() else f"# Benchmarks {time.strftime('%Y-%m-%d')}\n\nmachine: {machine()}\n\n"
    lines = tail.strip().splitlines()[-6:]
    with path.open("a") as f:
        f.write(header + f"### {name}: NOT RUN (exit {rc})\n\n```\n" + "\n".join(lines) + "\n```\n\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated case names: " + ",".join(CASES))
    args = ap.parse_args()
    wanted = [c for c in args.only.split(",") if c] or list(CASES)
    unknown = [c for c in wanted if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s): {', '.join(unknown)}")
    print(f"machine: {machine()}\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y-%m-%d')}.md"
    header = "" if path.exists() else f"# Benchmarks {time.strftime('%Y-%m-%d')}\n\nmachine: {machine()}\n\n"
    with path.open("a") as f:
        f.write(header + f"## run_all.py{' --quick' if args.quick else ''} started "
                f"{time.strftime('%H:%M:%S %Z')} ({', '.join(wanted)})\n\n")
    status: dict[str, str] = {}
    tables: list[tuple[str, str, str, str, str]] = []
    for name in wanted:
        script, full, quick = CASES[name]
        argv = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        print(f"== {name}: {' '.join(argv[1:])}", flush=True)
        t0 = time.perf_counter()
        rc, out, err = run_case(argv)
        took = time.perf_counter() - t0
        tables += parse_tables(out)
        if rc == 0 or (name == "validate" and rc == 1 and out.strip()):
            # validate_bench exits 1 when its median misses the target: a result, not a failure
            status[name] = f"ok ({took:.0f} s)"
            if name == "validate":
                note_validate(rc, out)
                tables.append(("Manifest load of 500 services (validate_bench.py)", "under 300 ms",
                               "met" if rc == 0 else "NOT met", out.strip(), ""))
        else:
            sys.stderr.write(err[-3000:])
            status[name] = f"FAILED (exit {rc}): {err.strip().splitlines()[-1:]}"
            note_failure(name, rc, err)
            tables.append((f"{name}: NOT RUN", "", "not run", (err.strip().splitlines() or [""])[-1], ""))
    print("\n== summary")
    for name, st in status.items():
        print(f"{name:10} {st}")
    summary = summary_table(tables)
    print("\n" + summary)
    with path.open("a") as f:
        f.write(f"### Summary of this run\n\n{summary}\n")
    return 0 if all(s.startswith("ok") for s in status.values()) else 1


def run_case(argv: list[str]) -> tuple[int, str, str]:
    """Run one case, echoing its stdout as it comes; stderr goes to a temp file (no pipe deadlock)."""
    with tempfile.TemporaryFile("w+") as errf:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errf, text=True)
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        rc = proc.wait()
        errf.seek(0)
        return rc, "".join(lines), errf.read()


def parse_tables(out: str) -> list[tuple[str, str, str, str, str]]:
    """(title, target, verdict, ours, peers) of each table a case printed (see ``common.report``)."""
    found = []
    for block in out.split("### ")[1:]:
        lines = block.splitlines()
        title, target, verdict, ours, peers, unit = lines[0].strip(), "", "", "", [], ""
        for line in lines[1:]:
            if line.startswith("| case | median "):
                unit = " " + line.split("|")[2].strip().removeprefix("median ")
                continue
            if line.startswith("target: "):
                target, _, v = line[len("target: "):].partition(" — ")
                verdict = v.strip("* ")
            elif line.startswith("| **"):
                cells = [c.strip() for c in line.strip("|").split("|")]
                ours = f"{cells[0].strip('*')}: {cells[1]}{unit}"
            elif line.startswith("| ") and not line.startswith(("| case", "|---")):
                cells = [c.strip() for c in line.strip("|").split("|")]
                if len(cells) >= 5:
                    value = f"{cells[1]}{unit}" if cells[1] != "n/a" else "n/a"
                    peers.append(f"{cells[0]}: {value}" + (f" ({cells[4]})" if cells[4] else ""))
        found.append((title, target, verdict or "—", ours, "; ".join(peers)))
    return found


def summary_table(rows: list[tuple[str, str, str, str, str]]) -> str:
    out = ["| case | target | verdict | ours (median) | peers (median, ours/peer) |", "|---|---|---|---|---|"]
    out += [f"| {t} | {tg} | {v} | {o} | {p} |" for t, tg, v, o, p in rows]
    return "\n".join(out) + "\n"


def note_validate(rc: int, out: str) -> None:
    """validate_bench prints one summary line (not a table); record it and its verdict."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y-%m-%d')}.md"
    header = "" if path.exists() else f"# Benchmarks {time.strftime('%Y-%m-%d')}\n\nmachine: {machine()}\n\n"
    with path.open("a") as f:
        f.write(header + "### Manifest load of 500 services in 50 files (bench/validate_bench.py)\n\n"
                f"target: under 300 ms — **{'met' if rc == 0 else 'NOT met'}**\n\n"
                f"```\n{out.strip()}\n```\n\n")


if __name__ == "__main__":
    raise SystemExit(main())
