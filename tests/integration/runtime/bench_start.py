"""Benchmark: median start of a busybox ``true`` container, ours vs ``crun run`` vs ``runc run``, and the
unique memory (USS) of our per-container monitor.

Run as root: ``python3 tests/integration/runtime/bench_start.py`` (``BENCH_N`` rounds, default 40; the
three runtimes take turns in each round so host load hits them alike). Ours is measured in-process
(create + start + wait + delete, interpreter start-up excluded, the fork server already running); crun
and runc are timed as whole ``run`` commands from a Python driver (their process start is part of what
they cost). Every runtime gets the same spec: pid/net/ipc/uts/mount/cgroup
namespaces, the Docker default seccomp profile, three capabilities, an overlay root. crun 1.8 refuses
this hybrid cgroup host unless it runs in a mount namespace without /sys/fs/cgroup/unified.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.append(str(Path(__file__).parents[2]))          # tests/: rootfs_kit, which conftest imports
from conftest import Bundles, build_busybox_rootfs

from orchestrator.runtime.linux import seccomp_profiles
from orchestrator.runtime.linux.native import LinuxRuntime

N = int(os.environ.get("BENCH_N", "40"))
CRUN_DRIVER = """
import subprocess, sys, time
subprocess.run(["umount", "/sys/fs/cgroup/unified"], check=True)
bundle = sys.argv[1]
for line in sys.stdin:
    t = time.perf_counter()
    subprocess.run(["crun", "run", "--bundle", bundle, "bench-crun-" + line.strip()], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    print(time.perf_counter() - t, flush=True)
"""


def spec_edit(spec: dict[str, Any]) -> None:
    caps = spec["process"]["capabilities"]["bounding"]
    spec["linux"]["seccomp"] = seccomp_profiles.profile_to_oci(seccomp_profiles.default_profile(), caps)


def median_ms(ts: list[float]) -> float:
    return statistics.median(ts) * 1000


class Ours:
    def __init__(self, bundles: Bundles, state: Path) -> None:
        self.bundles, self.state = bundles, state
        self.rt = LinuxRuntime(state, cgroup_parent="orchestrator-bench")
        self.parts: dict[str, list[float]] = {"create": [], "start+wait": [], "delete": [], "total": []}

    def once(self, i: int, bundle: Path, rootfs: list[Any]) -> None:
        rt = self.rt
        t0 = time.perf_counter()
        rt.create(f"b{i}", bundle, rootfs)
        t1 = time.perf_counter()
        rt.start(f"b{i}")
        st = rt.wait(f"b{i}")
        t2 = time.perf_counter()
        rt.delete(f"b{i}")
        t3 = time.perf_counter()
        assert st.exit_code == 0, st
        for k, v in (("create", t1 - t0), ("start+wait", t2 - t1), ("delete", t3 - t2), ("total", t3 - t0)):
            self.parts[k].append(v)


def smaps(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields


def monitor_uss(rt: LinuxRuntime, bundles: Bundles) -> dict[str, float]:
    rt.create("uss", *bundles.make(["sleep", "60"], spec_edit))
    rt.start("uss")
    time.sleep(0.3)
    rec = json.loads((rt.state_dir / "uss" / "state.json").read_text())
    m = smaps(rec["monitor_pid"])
    return {"monitor_uss_kb": m["Private_Clean"] + m["Private_Dirty"], "monitor_rss_kb": m["Rss"],
            "monitor_pss_kb": m["Pss"]}


def uss_after_close(state: Path) -> float:
    """The same monitor once the fork server (and the API process's runtime) is gone."""
    time.sleep(0.3)
    rec = json.loads((state / "uss" / "state.json").read_text())
    m = smaps(rec["monitor_pid"])
    rt = LinuxRuntime(state, cgroup_parent="orchestrator-bench")
    rt.delete("uss", force=True)
    rt.close()
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if (hierarchy / "orchestrator-bench").is_dir():
            (hierarchy / "orchestrator-bench").rmdir()
    return float(m["Private_Clean"] + m["Private_Dirty"])


def prepared_bundle(bundles: Bundles) -> Path:
    bundle, rootfs = bundles.make(["true"], spec_edit)
    spec = json.loads((bundle / "config.json").read_text())
    spec["linux"]["cgroupsPath"] = "/orchestrator-bench-peer"
    (bundle / "config.json").write_text(json.dumps(spec))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", ",".join(rootfs[0].options),
                    str(bundle / "rootfs")], check=True)
    return bundle


def runc_once(bundle: Path, root: Path, i: int) -> float:
    t = time.perf_counter()
    subprocess.run(["runc", "--root", str(root), "run", "--bundle", str(bundle), f"bench-runc-{i}"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def interleaved(bundles: Bundles, tmp: Path) -> dict[str, Any]:
    """Ours, runc and crun one after the other in each round, so load on the host hits all three."""
    ours = Ours(bundles, tmp / "state")
    ours.once(-1, *bundles.make(["true"], spec_edit))                    # warm-up
    made = [bundles.make(["true"], spec_edit) for _ in range(N)]
    peer = prepared_bundle(bundles)
    crun = subprocess.Popen(["unshare", "-m", "--propagation", "private", sys.executable, "-c", CRUN_DRIVER,
                             str(peer)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert crun.stdin is not None and crun.stdout is not None
    runc_ts, crun_ts = [], []
    try:
        for i, (bundle, rootfs) in enumerate(made):
            ours.once(i, bundle, rootfs)
            runc_ts.append(runc_once(peer, tmp / "runc-root", i))
            crun.stdin.write(f"{i}\n")
            crun.stdin.flush()
            crun_ts.append(float(crun.stdout.readline()))
    finally:
        crun.stdin.close()
        crun.wait()
        subprocess.run(["umount", str(peer / "rootfs")], check=False)
    result: dict[str, Any] = {k: median_ms(v) for k, v in ours.parts.items()}
    result.update(monitor_uss(ours.rt, bundles))
    ours.rt.close()
    result["uss_kb_after_close"] = uss_after_close(tmp / "state")
    result["runc"], result["crun"] = median_ms(runc_ts), median_ms(crun_ts)
    return result


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-start-"))
    try:
        bundles = Bundles(tmp, build_busybox_rootfs(tmp / "lower"))
        r = interleaved(bundles, tmp)
        print(f"ours  create+start+wait+delete  median {r['total']:.1f} ms  (create {r['create']:.1f}, "
              f"start+wait {r['start+wait']:.1f}, delete {r['delete']:.1f})  n={N}")
        print(f"crun  run                       median {r['crun']:.1f} ms")
        print(f"runc  run                       median {r['runc']:.1f} ms")
        print(f"ours / crun = {r['total'] / r['crun']:.2f}x   ours / runc = {r['total'] / r['runc']:.2f}x")
        print(f"monitor: USS {r['monitor_uss_kb']:.0f} kB (fork server alive), "
              f"{r['uss_kb_after_close']:.0f} kB (fork server gone); RSS {r['monitor_rss_kb']:.0f} kB, "
              f"PSS {r['monitor_pss_kb']:.0f} kB")
    finally:
        for cg in Path("/sys/fs/cgroup").glob("*/orchestrator-bench-peer"):
            cg.rmdir()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
