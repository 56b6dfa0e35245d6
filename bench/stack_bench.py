"""Case: a 50-service stack from empty to running, then down; ours (``orchestrator apply -f`` / ``down``,
whole commands) vs ``podman run -d`` per service and sequential ``runc`` / ``crun run -d``.

Each service is busybox ``sleep 1000``; ours has ``stopSignal: SIGKILL`` because the peers are stopped
with ``delete -f`` / ``rm -f -t 0`` (SIGKILL at once; a bare ``sleep`` as PID 1 ignores SIGTERM). Ours
runs with a private ``ORCHESTRATOR_ROOT`` (busybox imported into it first, untimed) and ``apply`` returns
once every container runs. The peers are driven by this same script in ``--inner`` mode (one Python
process looping over the commands, crun and podman inside the crun mount namespace), which prints the up
and down times as JSON. Peers' bundles (one overlay per
container) are prepared before the clock starts; podman prepares its own storage (counted, it is part
of ``run``). With ``--network``: ours uses the manifest's default bridge network; podman its default
network; runc/crun have no network of their own and are not run.

    python3 bench/stack_bench.py [--services 50] [--runs 3] [--network]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import CRUN_NS, ORCH, PODMAN_RUN_FLAGS, Sample, report
from workspace import Podman, Workspace

HERE = Path(__file__).resolve()


def stack_yaml(name: str, services: int, network: bool) -> str:
    net = "" if network else "\n      network: none"
    body = "".join(f"""    s{i:02d}:
      image: busybox:latest
      command: ["sleep", "1000"]
      stopSignal: SIGKILL{net}
""" for i in range(services))
    return f"apiVersion: orchestrator/v1\nkind: Stack\nmetadata: {{name: {name}}}\nspec:\n  services:\n{body}"


class CliFailed(Exception):
    pass


def cli(env: dict[str, str], *args: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([*ORCH, *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if done.returncode != 0:
        raise CliFailed(f"orchestrator {' '.join(args)} failed ({done.returncode}): "
                        f"{done.stderr.strip()[-300:]}")
    return dt


def running_with_eth0(env: dict[str, str]) -> tuple[int, int]:
    """(running containers, of which with an eth0) as ``ps -o json`` and /proc see them."""
    out = subprocess.run([*ORCH, "-o", "json", "ps"], check=True, env=env, text=True,
                         capture_output=True).stdout
    rows = json.loads(out) if out.strip() else []
    rows = rows if isinstance(rows, list) else rows.get("items", [])
    running = [r for r in rows if str(r.get("state", "")).lower() == "running"]
    with_net = 0
    state_dir = Path(env["ORCHESTRATOR_ROOT"]) / "runtime"
    for d in state_dir.iterdir() if state_dir.is_dir() else []:
        try:
            pid = json.loads((d / "state.json").read_text()).get("pid", 0)
            with_net += "eth0" in Path(f"/proc/{pid}/net/dev").read_text()
        except (OSError, ValueError):
            pass
    return len(running), with_net


def ours(ws: Workspace, services: int, runs: int, network: bool) -> tuple[Sample, Sample, str, bool]:
    """Up and down samples, what was seen after each apply, and whether every container had an eth0."""
    root = ws.dir / "orch-root"
    env = {**os.environ, "ORCHESTRATOR_ROOT": str(root)}
    subprocess.run([*ORCH, "image", "import", str(ws.images_dir / "busybox.oci.tar"), "--name",
                    "busybox:latest"], check=True, env=env, stdout=subprocess.DEVNULL)
    path = ws.dir / "stack.yaml"
    path.write_text(stack_yaml("benchstack", services, network))
    ws.on_close(lambda: subprocess.run([*ORCH, "down", "benchstack"], env=env, check=False,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    up, down = Sample("ours: orchestrator apply -f (up)"), Sample("ours: orchestrator down")
    seen = ""
    all_net = True
    for i in range(runs):
        try:
            up.times_s.append(cli(env, "apply", "-f", str(path)))
        except CliFailed as exc:
            raise SystemExit(str(exc)) from exc
        n, with_net = running_with_eth0(env)
        seen = f"after apply: {n} running, {with_net} with an eth0"
        all_net = all_net and n == services and with_net == services
        try:
            down.times_s.append(cli(env, "down", "benchstack"))
        except CliFailed as exc:
            # keep the numbers of this run; say what failed; a second down must clean up
            seen += f"; run {i + 1}: {exc}"
            time.sleep(1)
            try:
                cli(env, "down", "benchstack")
            except CliFailed as again:
                raise SystemExit(f"{exc}; and again: {again}") from again
    return up, down, seen, all_net


# ---- peers, driven from one process (inside the crun namespace for crun and podman) -------------------

def inner(peer: str, names: list[str], bundles: list[str], runc_root: str, podman: list[str],
          network: bool) -> dict[str, float]:
    def sh(argv: list[str]) -> None:
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    if peer == "podman":
        net = [] if network else ["--network", "none"]
        up = [[*podman, "run", "-d", "--name", n, *net, *PODMAN_RUN_FLAGS, Podman.IMAGE, "sleep", "1000"]
              for n in names]
        down = [[*podman, "rm", "-f", "-t", "0", n] for n in names]
    else:
        base = ["runc", "--root", runc_root] if peer == "runc" else ["crun"]
        up = [[*base, "run", "-d", "--bundle", b, n] for n, b in zip(names, bundles, strict=True)]
        down = [[*base, "delete", "-f", n] for n in names]
    t0 = time.perf_counter()
    for argv in up:
        sh(argv)
    t1 = time.perf_counter()
    for argv in down:
        sh(argv)
    return {"up": t1 - t0, "down": time.perf_counter() - t1}


def peer_runs(ws: Workspace, peer: str, names: list[str], bundles: list[Path], runs: int,
              network: bool, podman: Podman | None) -> tuple[Sample, Sample]:
    up, down = Sample(f"{peer}: sequential run -d (up)"), Sample(f"{peer}: down")
    argv = [sys.executable, str(HERE), "--inner", peer, "--runc-root", str(ws.dir / "runc"),
            "--podman", json.dumps(podman.argv if podman else []), *(["--network"] if network else []),
            "--", *names, "--", *map(str, bundles)]
    prefix = list(CRUN_NS) if peer in ("crun", "podman") else []
    for _ in range(runs):
        out = subprocess.run([*prefix, *argv], check=True, text=True, capture_output=True).stdout
        r = json.loads(out)
        up.times_s.append(r["up"])
        down.times_s.append(r["down"])
    return up, down


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--podman-runs", type=int, default=1)
    ap.add_argument("--network", action="store_true")
    ap.add_argument("--inner", help=argparse.SUPPRESS)
    ap.add_argument("--runc-root", help=argparse.SUPPRESS)
    ap.add_argument("--podman", help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        cut = args.rest.index("--") if "--" in args.rest else len(args.rest)
        names, bundles = args.rest[:cut], args.rest[cut + 1:]
        print(json.dumps(inner(args.inner, names, bundles, args.runc_root, json.loads(args.podman),
                               args.network)))
        return 0
    n = args.services
    with Workspace("bench-stack-") as ws:
        up, down, seen, all_net = ours(ws, n, args.runs, args.network)
        podman = Podman(ws)
        names = [f"bench-{ws.tag}-{i:02d}" for i in range(n)]
        peers_up: list[Sample] = []
        peers_down: list[Sample] = []
        pu, pd = peer_runs(ws, "podman", names, [], args.podman_runs, args.network, podman)
        peers_up.append(pu)
        peers_down.append(pd)
        if not args.network:
            bundles = [ws.peer_bundle(nm, ["sleep", "1000"]) for nm in names]
            for peer in ("runc", "crun"):
                pu, pd = peer_runs(ws, peer, names, bundles, args.runs, False, None)
                peers_up.append(pu)
                peers_down.append(pd)
        what = "bridged network" if args.network else "network none"
        limit = 3.0 if args.network else 1.5
        bridged_ok = not args.network or all_net
        notes = [seen, "every container runs busybox `sleep 1000`; ours stops with stopSignal SIGKILL, the "
                 "peers with delete -f / rm -f -t 0",
                 "peers' overlay rootfs per container mounted before timing (ours mounts its own)"]
        if not bridged_ok:
            notes.append("not every container of ours had an eth0 after apply, so this row is NOT a "
                         "bridged measurement")
        report(f"{n}-service stack up, {what}", up, peers_up, f"under {limit:g} s up",
               met=(up.median_ms < limit * 1000) if bridged_ok else None, notes=notes)
        report(f"{n}-service stack down, {what}", down, peers_down, "(no target; for comparison)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
