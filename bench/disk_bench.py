"""Case: disk used by 20 running containers of one ~50 MB image, ours vs podman vs a plain copy each.

Builds busybox plus one 48 MB random-data layer (``bigimage``), imports it into a private
``ORCHESTRATOR_ROOT`` and runs one service with 20 replicas (each writes a small file, then sleeps), and
the same 20 containers with podman (private --root). Disk used is ``du`` of the whole state root (image
store, upper dirs, bundles, logs, database; hard links counted once), minus nothing. The plain-copy row is
computed: 20 x the unpacked image (what a runtime without shared layers, e.g. one rootfs copy per
container, would use). Target: under image size + 1 MB per container.

    python3 bench/disk_bench.py [--containers 20] [--mb 48]
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

from bigimage import LayerSpec, extend
from common import CRUN_NS, ORCH, PODMAN_RUN_FLAGS, Sample, report
from workspace import Podman, Workspace

CMD = "echo written-by-the-container > /hello; trap 'exit 0' TERM; sleep 100000 & wait"


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], check=True, text=True, capture_output=True).stdout
    return int(out.split()[0])


def mb(n: int) -> float:
    return n / 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=20)
    ap.add_argument("--mb", type=int, default=48)
    args = ap.parse_args()
    n = args.containers
    with Workspace("bench-disk-") as ws:
        big = ws.dir / "big.oci.tar"
        extend(ws.images_dir / "busybox.oci.tar", big, [LayerSpec(args.mb)], tag="big:latest")
        root = ws.dir / "orch-root"
        env = {**os.environ, "ORCHESTRATOR_ROOT": str(root)}
        subprocess.run([*ORCH, "image", "import", str(big), "--name", "big:latest"], check=True,
                       env=env, stdout=subprocess.DEVNULL)
        image_bytes = du_bytes(root / "images")
        path = ws.dir / "disk.yaml"
        path.write_text(f"""apiVersion: orchestrator/v1
kind: Stack
metadata: {{name: diskbench}}
spec:
  services:
    big:
      image: big:latest
      command: ["sh", "-c", "{CMD}"]
      replicas: {n}
      network: none
""")
        ws.on_close(lambda: subprocess.run([*ORCH, "down", "diskbench"], env=env, check=False,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        subprocess.run([*ORCH, "apply", "-f", str(path)], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ours_bytes = du_bytes(root)

        podman = Podman(ws)
        proot = podman.base / "root"
        subprocess.run([*CRUN_NS, *podman.argv, "load", "-q", "-i", str(big)], check=True,
                       stdout=subprocess.DEVNULL)
        before = du_bytes(proot)
        for i in range(n):
            podman(["run", "-d", "--name", f"disk-{ws.tag}-{i}", "--network", "none", *PODMAN_RUN_FLAGS,
                    "localhost/big:latest", "sh", "-c", CMD])
        pod_bytes = du_bytes(proot)

        unit = {"unit": "MB", "scale": 1.0}
        mine = Sample(f"ours: state root with {n} running", [mb(ours_bytes)], **unit)  # type: ignore[arg-type]
        peers = [Sample(f"podman: storage root with {n} running (busybox + big loaded: "
                        f"{mb(before):.1f} MB before run)", [mb(pod_bytes)], **unit),  # type: ignore[arg-type]
                 Sample(f"plain copy per container (computed: {n} x unpacked image)",
                        [mb(n * image_bytes)], **unit)]  # type: ignore[arg-type]
        limit = image_bytes + n * 1_000_000
        report(f"Disk used by {n} running containers of one {mb(image_bytes):.0f} MB image", mine, peers,
               f"under image + 1 MB per container (= {mb(limit):.1f} MB here)", met=ours_bytes < limit,
               notes=[f"image store alone after import: {mb(image_bytes):.1f} MB; per container above it: "
                      f"{mb(ours_bytes - image_bytes) / n * 1000:.0f} kB (upper dir, bundle, state, log)"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
