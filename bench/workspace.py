"""A throw-away benchmark workspace: images, an image store, OCI specs and bundles, peers' state roots.

Every benchmark script opens one ``Workspace`` (a context manager): it builds the demo images with
``scripts/build_images.py`` into a temp dir, imports busybox into a private ``ImageStore``, and on exit
unmounts what it mounted, removes the cgroups it (or the peers it drove) created and deletes the temp dir.
Ours and the peers run the same ``config.json`` (pid/net/ipc/uts/mount/cgroup namespaces, three
capabilities, our default seccomp profile, rlimits, masked paths); ours gets its rootfs as overlay mounts
from the store (made inside the container's mount namespace), the peers get the same overlay mounted
once on the bundle's ``rootfs`` (runc and crun expect a ready root directory).

Neighbours: ``common`` (timing, tables), the per-case ``*_bench.py`` scripts.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from common import CRUN_NS, PODMAN_FLAGS, compile_bytecode

from orchestrator.fsutil import Trash
from orchestrator.images.model import Image
from orchestrator.images.store import ImageStore
from orchestrator.runtime.base import Mount
from orchestrator.runtime.linux import seccomp_profiles

REPO = Path(__file__).resolve().parent.parent
# the runtime tests' spec (pid/net/ipc/uts/mount/cgroup namespaces, three capabilities, rlimits,
# masked and read-only paths), so benchmarks and tests run the same container
sys.path.insert(0, str(REPO / "tests"))
from rootfs_kit import BASE_SPEC  # noqa: E402

CAPS = list(BASE_SPEC["process"]["capabilities"]["bounding"])


def spec(args: list[str], *, cgroups_path: str = "") -> dict[str, Any]:
    s = copy.deepcopy(BASE_SPEC)
    s["process"]["args"] = args
    s["hostname"] = "bench"
    s["linux"]["seccomp"] = seccomp_profiles.profile_to_oci(seccomp_profiles.default_profile(), CAPS)
    if cgroups_path:
        s["linux"]["cgroupsPath"] = cgroups_path
    return s


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, text=True, **kw)


def remove_cgroup_tree(name: str, wait_s: float = 3.0) -> None:
    """rmdir ``name`` (and its children, deepest first) in every hierarchy. A cgroup whose last process
    is still exiting is busy for a moment, so this retries until ``wait_s`` has passed."""
    deadline = time.monotonic() + wait_s
    while True:
        left = []
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            top = hierarchy / name
            if not top.is_dir():
                continue
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for d in [*dirs, top]:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(d)
        if not left:
            return
        if time.monotonic() > deadline:
            print(f"cgroups still busy, left in place: {', '.join(map(str, left[:4]))}", file=sys.stderr)
            return
        time.sleep(0.1)


class Workspace:
    """Temp dir + built images + an image store holding ``busybox:latest``."""

    def __init__(self, prefix: str = "bench-") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.tag = uuid.uuid4().hex[:8]
        self.cgroup_parent = f"orchestrator-bench-{self.tag}"
        self.peer_cgroup = f"orchestrator-bench-peer-{self.tag}"
        self._mounts: list[Path] = []
        self._cleanups: list[Any] = []
        self._trash: Trash | None = None
        # the CLI's containers live under the default parent cgroup "orchestrator": removed on close
        # when this run made it (and it is empty by then)
        self._made_default_parent = not any(Path("/sys/fs/cgroup").glob("*/orchestrator"))
        self.images_dir = self.dir / "img"
        compile_bytecode()
        run([sys.executable, str(REPO / "scripts" / "build_images.py"), str(self.images_dir)],
            stdout=subprocess.DEVNULL)
        self.store = ImageStore(self.dir / "images")
        self.image: Image = self.store.import_archive(self.images_dir / "busybox.oci.tar", "busybox:latest")

    # ---- bundles ------------------------------------------------------------------------------------

    def rootfs(self, name: str) -> list[Mount]:
        """Fresh upper/work dirs and the overlay mounts of busybox for container ``name``."""
        upper, work = self.dir / "rw" / name / "upper", self.dir / "rw" / name / "work"
        upper.mkdir(parents=True)
        work.mkdir()
        return list(self.store.rootfs_mounts(self.image, upper, work))

    def drop_rootfs(self, name: str) -> None:
        """As the reconciler drops a deleted container's dir (``BundleBuilder.cleanup``): renamed into
        a trash dir, its files unlinked by a background thread (which still competes for the CPUs)."""
        if self._trash is None:
            self._trash = Trash(self.dir / "trash")
            self.on_close(self._trash.close)
        self._trash.discard(self.dir / "rw" / name)

    def bundle(self, name: str, args: list[str], *, cgroups_path: str = "") -> Path:
        b = self.dir / "bundles" / name
        (b / "rootfs").mkdir(parents=True, exist_ok=True)
        (b / "config.json").write_text(json.dumps(spec(args, cgroups_path=cgroups_path)))
        return b

    def peer_bundle(self, name: str, args: list[str]) -> Path:
        """A bundle whose ``rootfs`` is the same overlay, mounted on the host (removed on close)."""
        b = self.bundle(name, args, cgroups_path=f"/{self.peer_cgroup}/{name}")
        (m,) = self.rootfs(name)
        run(["mount", "-t", m.type, m.source, "-o", ",".join(m.options), str(b / "rootfs")],
            cwd=m.cwd or None)
        self._mounts.append(b / "rootfs")
        return b

    def on_close(self, fn: Any) -> None:
        self._cleanups.append(fn)

    # ---- lifecycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception as exc:  # cleanup must go on; say what failed
                print(f"cleanup {fn}: {exc}", file=sys.stderr)
        for m in reversed(self._mounts):
            subprocess.run(["umount", str(m)], check=False)
        remove_cgroup_tree(self.cgroup_parent)
        remove_cgroup_tree(self.peer_cgroup)
        if self._made_default_parent:
            remove_cgroup_tree("orchestrator", wait_s=0.5)
        # a supervisor that was just killed (conmon, ours) may still write its exit file: retry a little
        for _ in range(20):
            shutil.rmtree(self.dir, ignore_errors=True)
            if not self.dir.exists():
                break
            time.sleep(0.25)
        else:
            print(f"could not remove {self.dir}", file=sys.stderr)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
NETAVARK_RULES = [
    ("filter", ["FORWARD", "-m", "comment", "--comment", "netavark firewall plugin rules", "-j",
                "NETAVARK_FORWARD"]),
    ("nat", ["PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "NETAVARK-HOSTPORT-DNAT"]),
    ("nat", ["OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "NETAVARK-HOSTPORT-DNAT"]),
    ("nat", ["POSTROUTING", "-j", "NETAVARK-HOSTPORT-MASQ"]),
]
NETAVARK_CHAINS = [("filter", "NETAVARK_FORWARD"), ("nat", "NETAVARK-HOSTPORT-DNAT"),
                   ("nat", "NETAVARK-HOSTPORT-MASQ"), ("nat", "NETAVARK-HOSTPORT-SETMARK")]


def netavark_chains_present() -> bool:
    out = subprocess.run(["iptables", "-t", "nat", "-S"], text=True, capture_output=True, check=False)
    return "NETAVARK" in out.stdout


def remove_netavark_chains() -> None:
    """Undo the jump rules and (flushed) chains netavark set up; -D/-F/-X of what is absent just fails."""
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": False}
    for table, rule in NETAVARK_RULES:
        subprocess.run(["iptables", "-t", table, "-D", *rule], **quiet)  # type: ignore[call-overload]
    for table, chain in NETAVARK_CHAINS:
        subprocess.run(["iptables", "-t", table, "-F", chain], **quiet)  # type: ignore[call-overload]
        subprocess.run(["iptables", "-t", table, "-X", chain], **quiet)  # type: ignore[call-overload]


class Podman:
    """podman with a private --root/--runroot under the workspace, busybox loaded from the OCI archive.
    Every call runs in the crun mount namespace (``CRUN_NS``): podman's default runtime is crun."""

    IMAGE = "localhost/busybox:latest"

    def __init__(self, ws: Workspace) -> None:
        self.base = ws.dir / "podman"
        # podman's cgroupfs manager makes /sys/fs/cgroup/*/libpod_parent; remove it after if it is ours
        self._made_parent = not Path("/sys/fs/cgroup/memory/libpod_parent").exists()
        # netavark (podman's default network) leaves its iptables chains and ip_forward=1 behind
        self._had_chains = netavark_chains_present()
        self._ip_forward = IP_FORWARD.read_text()
        for d in ("root", "runroot", "tmp"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        self.argv = ["podman", "--root", str(self.base / "root"), "--runroot", str(self.base / "runroot"),
                     "--tmpdir", str(self.base / "tmp"), *PODMAN_FLAGS]
        self(["load", "-q", "-i", str(ws.images_dir / "busybox.oci.tar")])
        ws.on_close(self.close)

    def __call__(self, args: list[str], *, capture: bool = False) -> str:
        out = subprocess.run([*CRUN_NS, *self.argv, *args], check=True, text=True,
                             stdout=subprocess.PIPE if capture else subprocess.DEVNULL)
        return out.stdout or ""

    def command(self, args: list[str]) -> str:
        """One shell-free command line for hyperfine -N (paths have no spaces: they are our temp dirs)."""
        return " ".join([*self.argv, *args])

    def close(self) -> None:
        subprocess.run([*CRUN_NS, *self.argv, "rm", "-af", "-t", "0"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # podman's storage mounts lived only in the namespaces above; the tree is plain files now
        if self._made_parent:
            remove_cgroup_tree("libpod_parent")
        if not self._had_chains:
            remove_netavark_chains()
        IP_FORWARD.write_text(self._ip_forward)
