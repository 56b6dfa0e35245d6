"""Case: supervision memory per running container, our monitor vs podman's conmon.

Starts N busybox ``sleep`` containers with ``orchestrator apply -f`` (private ``ORCHESTRATOR_ROOT``; the
CLI has exited, so its fork server is gone, as in real use) and N with ``podman run -d``, then reads each
supervisor's ``/proc/PID/smaps_rollup``: USS (Private_Clean + Private_Dirty, what stopping it frees) and
PSS (shared pages split between their users). Our monitors are forked from one Python fork server, so
their pages are shared copy-on-write between siblings: the USS of one monitor alone (N = 1) is reported
too, as the worst case.

    python3 bench/memory_bench.py [--containers 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

from common import ORCH, PODMAN_RUN_FLAGS, Sample, report
from workspace import Podman, Workspace


def smaps(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0].rstrip(":")] = int(parts[1])
    return out


def uss_pss(pids: list[int]) -> tuple[list[float], list[float]]:
    rows = [smaps(p) for p in pids]
    return ([float(r["Private_Clean"] + r["Private_Dirty"]) for r in rows], [float(r["Pss"]) for r in rows])


def ours(ws: Workspace, n: int, name: str) -> tuple[list[float], list[float]]:
    root = ws.dir / f"orch-{name}"
    env = {**os.environ, "ORCHESTRATOR_ROOT": str(root)}
    subprocess.run([*ORCH, "image", "import", str(ws.images_dir / "busybox.oci.tar"), "--name",
                    "busybox:latest"], check=True, env=env, stdout=subprocess.DEVNULL)
    body = "".join(f"    m{i:02d}:\n      image: busybox:latest\n"
                   f"      command: [sh, -c, \"trap 'exit 0' TERM; sleep 1000 & wait\"]\n"
                   f"      network: none\n" for i in range(n))
    path = ws.dir / f"{name}.yaml"
    path.write_text(f"apiVersion: orchestrator/v1\nkind: Stack\nmetadata: {{name: {name}}}\nspec:\n"
                    f"  services:\n{body}")
    ws.on_close(lambda: subprocess.run([*ORCH, "down", name], env=env, check=False,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    subprocess.run([*ORCH, "apply", "-f", str(path)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids = []
    for d in sorted((root / "runtime").iterdir()):
        if not (d / "state.json").is_file():
            continue
        rec = json.loads((d / "state.json").read_text())
        pids.append(int(rec["monitor_pid"]))
    if len(pids) != n:
        raise SystemExit(f"expected {n} monitors, found {len(pids)}")
    return uss_pss(pids)


def conmon(ws: Workspace, podman: Podman, n: int) -> tuple[list[float], list[float]]:
    names = [f"mem-{ws.tag}-{i}" for i in range(n)]
    for nm in names:
        podman(["run", "-d", "--name", nm, "--network", "none", *PODMAN_RUN_FLAGS, Podman.IMAGE,
                "sleep", "1000"])
    pids = [int(podman(["inspect", "--format", "{{.State.ConmonPid}}", nm], capture=True).strip())
            for nm in names]
    return uss_pss(pids)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=10)
    args = ap.parse_args()
    n = args.containers
    with Workspace("bench-mem-") as ws:
        podman = Podman(ws)
        one_uss, _ = ours(ws, 1, "memone")
        subprocess.run([*ORCH, "down", "memone"], env={**os.environ, "ORCHESTRATOR_ROOT":
                       str(ws.dir / "orch-memone")}, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        uss, pss = ours(ws, n, "memmany")
        c_uss, c_pss = conmon(ws, podman, n)
        kb = {"unit": "kB", "scale": 1.0}
        mine = Sample(f"ours: monitor USS, {n} running", uss, **kb)  # type: ignore[arg-type]
        peers = [Sample(f"conmon USS, {n} running", c_uss, **kb),  # type: ignore[arg-type]
                 Sample(f"ours: monitor PSS, {n} running", pss, **kb),  # type: ignore[arg-type]
                 Sample(f"conmon PSS, {n} running", c_pss, **kb),  # type: ignore[arg-type]
                 Sample("ours: monitor USS, 1 running (no siblings)", one_uss, **kb)]  # type: ignore[arg-type]
        worst = max(mine.median, one_uss[0])
        report("Supervision memory per running container", mine, peers, "under 1.5 MB (1536 kB) USS",
               met=worst < 1536, notes=["verdict uses the worse of the two USS rows of ours",
                                        "USS = Private_Clean + Private_Dirty from /proc/PID/smaps_rollup, "
                                        "after the launching CLI exited"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
