"""The image store on the real kernel: the overlay from ``rootfs_mounts`` is mounted inside a private mount
namespace (``unshare -m`` running a small probe that calls mount(2) via ctypes exactly as the runtime will:
chdir to ``Mount.cwd``, data = options minus ``ro``). The namespace dies with the probe, so the host mount
table never changes. Images come from ``scripts/build_images.py`` and from ``skopeo copy``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator.images.mounts import dir_rootfs_mounts
from orchestrator.images.store import ImageStore
from orchestrator.runtime.base import Mount

REPO = Path(__file__).resolve().parents[3]

PROBE = r"""
import ctypes, json, os, subprocess, sys
spec = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
for target, m in spec["mounts"]:
    os.chdir(m["cwd"] or "/")
    data = ",".join(o for o in m["options"] if o != "ro")
    flags = 1 if "ro" in m["options"] else 0          # MS_RDONLY
    if libc.mount(m["source"].encode(), target.encode(), m["type"].encode(), flags, data.encode()) != 0:
        err = ctypes.get_errno()
        print(json.dumps({"mount_error": os.strerror(err), "target": target}))
        sys.exit(1)
os.chdir("/")
out = []
for op in spec["ops"]:
    kind, path = op[0], op[1]
    try:
        if kind == "exists":
            r = os.path.lexists(path)
        elif kind == "listdir":
            r = sorted(os.listdir(path))
        elif kind == "read":
            r = open(path).read()
        elif kind == "write":
            with open(path, "w") as f:
                f.write(op[2])
            r = True
        elif kind == "unlink":
            os.unlink(path)
            r = True
        elif kind == "ino":
            r = os.stat(path).st_ino
        elif kind == "run":
            r = subprocess.run(["chroot", path, *op[2]], capture_output=True, text=True).stdout
    except OSError as e:
        r = "error: " + e.strerror
    out.append(r)
print(json.dumps(out))
"""

pytestmark = pytest.mark.root


def probe(mounts: Sequence[tuple[Path, Mount]], ops: Sequence[Sequence[Any]]) -> list[Any]:
    spec = {"mounts": [(str(t), {"type": m.type, "source": m.source, "options": list(m.options),
                                 "cwd": m.cwd}) for t, m in mounts], "ops": [list(o) for o in ops]}
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", PROBE,
                           json.dumps(spec)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: list[Any] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("images")
    subprocess.run([sys.executable, str(REPO / "scripts/build_images.py"), str(out), "--layers", "120"],
                   check=True, capture_output=True)
    return out


def container_dirs(base: Path, name: str) -> tuple[Path, Path, Path]:
    dirs = tuple(base / name / d for d in ("rootfs", "upper", "work"))
    for d in dirs:
        d.mkdir(parents=True)
    return dirs  # type: ignore[return-value]


def tree_digest(root: Path) -> str:
    """Names, modes, mtimes and content of everything under ``root``: any write into a layer changes it."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames + dirnames):
            p = Path(dirpath) / name
            st = p.lstat()
            h.update(f"{p}:{st.st_mode}:{st.st_mtime_ns}:{st.st_size}".encode())
            if p.is_file() and not p.is_symlink():
                h.update(p.read_bytes())
    return h.hexdigest()


def test_whiteout_opaque_and_busybox_runs(images: Path, state_root: Path, tmp_path: Path) -> None:
    store = ImageStore(state_root / "images")
    image = store.import_archive(images / "layered.oci.tar")
    rootfs, upper, work = container_dirs(tmp_path, "c1")
    [m] = store.rootfs_mounts(image, upper, work)
    r = probe([(rootfs, m)], [("exists", f"{rootfs}/data/gone.txt"), ("exists", f"{rootfs}/data/middle.txt"),
                              ("read", f"{rootfs}/data/keep.txt"), ("listdir", f"{rootfs}/opq"),
                              ("read", f"{rootfs}/etc/layered-release"),
                              ("run", str(rootfs), ["/bin/sh", "-c", "echo hi; ls /data"])])
    assert r == [False, False, "keep\n", ["new.txt"], "layered 1\n", "hi\nkeep.txt\n"]
    # the on-disk form overlayfs understands: opaque xattr on the dir, 0/0 char device for the whiteout
    middle = store.layer_dir(image.layers[2])
    assert os.getxattr(middle / "opq", "trusted.overlay.opaque") == b"y"
    assert (middle / "data/gone.txt").lstat().st_rdev == os.makedev(0, 0)
    assert not any(p.name.startswith(".wh.") for c in image.layers for p in store.layer_dir(c).rglob("*"))


def test_writes_land_in_upper_never_in_a_layer(images: Path, state_root: Path, tmp_path: Path) -> None:
    store = ImageStore(state_root / "images")
    image = store.import_archive(images / "layered.oci.tar")
    before = {c: tree_digest(store.layer_dir(c)) for c in image.layers}
    rootfs, upper, work = container_dirs(tmp_path, "c1")
    [m] = store.rootfs_mounts(image, upper, work)
    r = probe([(rootfs, m)], [("write", f"{rootfs}/data/new.txt", "new"),
                              ("write", f"{rootfs}/data/keep.txt", "changed"),
                              ("unlink", f"{rootfs}/opq/new.txt"),
                              ("read", f"{rootfs}/data/keep.txt")])
    assert r == [True, True, True, "changed"]
    assert (upper / "data/new.txt").read_text() == "new"
    assert (upper / "data/keep.txt").read_text() == "changed"            # copied up
    assert os.major((upper / "opq/new.txt").lstat().st_rdev) == 0           # whiteout in upper
    assert {c: tree_digest(store.layer_dir(c)) for c in image.layers} == before


def test_two_containers_share_lower_dirs(images: Path, state_root: Path, tmp_path: Path) -> None:
    store = ImageStore(state_root / "images")
    image = store.import_archive(images / "busybox.oci.tar")
    a, b = container_dirs(tmp_path, "a"), container_dirs(tmp_path, "b")
    [ma] = store.rootfs_mounts(image, a[1], a[2])
    [mb] = store.rootfs_mounts(image, b[1], b[2])
    assert ma.options[0] == mb.options[0] and ma.cwd == mb.cwd
    layer_ino = (store.layer_dir(image.layers[0]) / "bin/busybox").stat().st_ino
    r = probe([(a[0], ma), (b[0], mb)],
              [("write", f"{a[0]}/tmp/mine", "a"), ("write", f"{b[0]}/tmp/mine", "b"),
               ("read", f"{a[0]}/tmp/mine"), ("read", f"{b[0]}/tmp/mine"),
               ("ino", f"{a[0]}/bin/busybox"), ("ino", f"{b[0]}/bin/busybox")])
    assert r[:4] == [True, True, "a", "b"]
    assert r[4] == r[5] == layer_ino                     # the same file on disk under both containers
    assert len(list((store.root / "layers").iterdir())) == 1


def test_readonly_rootfs(images: Path, state_root: Path, tmp_path: Path) -> None:
    store = ImageStore(state_root / "images")
    image = store.import_archive(images / "busybox.oci.tar")
    rootfs, upper, work = container_dirs(tmp_path, "c1")
    [m] = store.rootfs_mounts(image, upper, work, readonly=True)
    r = probe([(rootfs, m)], [("write", f"{rootfs}/tmp/x", "x"), ("exists", f"{rootfs}/bin/sh")])
    assert r == ["error: Read-only file system", True]


def test_120_layer_image_mounts(images: Path, state_root: Path, tmp_path: Path) -> None:
    store = ImageStore(state_root / "images")
    image = store.import_archive(images / "stack-120.oci.tar")
    assert len(image.layers) == 120
    rootfs, upper, work = container_dirs(tmp_path, "c1")
    [m] = store.rootfs_mounts(image, upper, work)
    r = probe([(rootfs, m)], [("listdir", f"{rootfs}/layers"), ("run", str(rootfs), ["/bin/echo", "ok"])])
    assert len(r[0]) == 119 and r[1] == "ok\n"


def test_skopeo_docker_archive_imports_and_shares_layers(images: Path, state_root: Path,
                                                          tmp_path: Path) -> None:
    docker_tar = tmp_path / "x.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci-archive:{images / 'busybox.oci.tar'}",
                    f"docker-archive:{docker_tar}:busybox:skopeo"], check=True, capture_output=True)
    store = ImageStore(state_root / "images")
    oci = store.import_archive(images / "busybox.oci.tar")
    docker = store.import_archive(docker_tar)
    assert "busybox:skopeo" in docker.names and docker.layers == oci.layers
    assert len(list((store.root / "layers").iterdir())) == 1
    rootfs, upper, work = container_dirs(tmp_path, "c1")
    [m] = store.rootfs_mounts(docker, upper, work)
    r = probe([(rootfs, m)], [("run", str(rootfs), ["/bin/sh", "-c", "id -u; cat /etc/passwd | head -1"])])
    assert r == ["0\nroot:x:0:0:root:/root:/bin/sh\n"]
    # and back: skopeo's own OCI layouts, as a tar and as a directory, are the same image again
    subprocess.run(["skopeo", "copy", "--quiet", f"docker-archive:{docker_tar}",
                    f"oci-archive:{tmp_path / 'y.tar'}:again"], check=True, capture_output=True)
    subprocess.run(["skopeo", "copy", "--quiet", f"docker-archive:{docker_tar}",
                    f"oci:{tmp_path / 'layout'}:again"], check=True, capture_output=True)
    from_tar = store.import_archive(tmp_path / "y.tar", "again:tar")
    from_dir = store.import_archive(tmp_path / "layout", "again:dir")
    assert from_tar.layers == from_dir.layers == oci.layers
    assert len(list((store.root / "layers").iterdir())) == 1


def test_dir_rootfs(tmp_path: Path) -> None:
    src = tmp_path / "tree"
    (src / "etc").mkdir(parents=True)
    (src / "etc/conf").write_text("orig")
    rootfs, upper, work = container_dirs(tmp_path, "c1")
    [m] = dir_rootfs_mounts(src, upper, work)
    r = probe([(rootfs, m)], [("write", f"{rootfs}/etc/conf", "changed"), ("read", f"{rootfs}/etc/conf")])
    assert r == [True, "changed"]
    assert (src / "etc/conf").read_text() == "orig" and (upper / "etc/conf").read_text() == "changed"
