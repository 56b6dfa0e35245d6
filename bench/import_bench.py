"""Case: import of a multi-layer OCI archive, throughput in MB/s (archive bytes / wall time).

The archive is busybox plus ``--layers`` gzip layers of ``--mb`` MB of random data and 200 small files
each (``bigimage``). Ours: ``ImageStore.import_archive`` in-process into a fresh store (verify digests and
diff_ids, unpack each layer once with our safe extraction, whiteouts), and the whole ``orchestrator image
import`` command. Peer: ``skopeo copy oci-archive:X oci:DIR:tag`` followed by ``umoci unpack`` into a
bundle (the closest pair of Debian tools doing the same job: verify and store blobs, then unpack the
layers into a root filesystem). Every run starts from an empty destination.

    python3 bench/import_bench.py [--layers 5] [--mb 10] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time

from bigimage import LayerSpec, extend
from common import ORCH, Sample, report
from workspace import Workspace

from orchestrator.images.store import ImageStore


def throughput(name: str, size: int, runs: int, fn: object, fresh: object) -> Sample:
    s = Sample(name, unit="MB/s", scale=1.0)
    for i in range(runs + 1):
        fresh()  # type: ignore[operator]
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        dt = time.perf_counter() - t0
        if i:                                   # the first run warms the page cache
            s.times_s.append(size / 1e6 / dt)
    fresh()  # type: ignore[operator]
    return s


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--mb", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with Workspace("bench-import-") as ws:
        archive = ws.dir / "multi.oci.tar"
        extend(ws.images_dir / "busybox.oci.tar", archive, [LayerSpec(args.mb)] * args.layers,
               tag="multi:latest")
        size = archive.stat().st_size
        dest = ws.dir / "dest"

        def fresh() -> None:
            shutil.rmtree(dest, ignore_errors=True)

        def ours() -> None:
            ImageStore(dest).import_archive(archive, "multi:latest")

        env = {**os.environ, "ORCHESTRATOR_ROOT": str(dest)}

        def ours_cli() -> None:
            subprocess.run([*ORCH, "image", "import", str(archive), "--name", "multi:latest"],
                           check=True, env=env, stdout=subprocess.DEVNULL)

        def peer() -> None:
            dest.mkdir()
            subprocess.run(["skopeo", "copy", "-q", f"oci-archive:{archive}", f"oci:{dest / 'layout'}:multi"],
                           check=True, stdout=subprocess.DEVNULL)
            subprocess.run(["umoci", "unpack", "--image", f"{dest / 'layout'}:multi", str(dest / "bundle")],
                           check=True, stdout=subprocess.DEVNULL)

        mine = throughput("ours: ImageStore.import_archive (in-process)", size, args.runs, ours, fresh)
        cli = throughput("ours: orchestrator image import (whole command)", size, args.runs, ours_cli, fresh)
        sk = throughput("skopeo copy + umoci unpack", size, args.runs, peer, fresh)
        report(f"Image import, {args.layers + 1}-layer OCI archive of {size / 1e6:.1f} MB", mine, [cli, sk],
               "no number in the issue; higher is better (ratio > 1: ours is faster)",
               met=None,
               notes=["throughput = archive bytes / wall time; every run into an empty destination"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
