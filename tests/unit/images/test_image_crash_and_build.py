"""Crash safety (a real ``kill -9`` in the middle of an import) and the reproducible image build script."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from img_archives import entry, layer, oci_archive

from orchestrator.images.store import ImageStore

REPO = Path(__file__).resolve().parents[3]

KILLER = r"""
import os, signal, sys
from pathlib import Path
from orchestrator.images.store import ImageStore

def progress(done, total):
    if done > total // 2:                      # half way through the layer blobs: die like kill -9 does
        os.kill(os.getpid(), signal.SIGKILL)

ImageStore(Path(sys.argv[1])).import_archive(Path(sys.argv[2]), "victim", progress=progress)
"""


def test_kill_9_mid_import_leaves_only_temp_dirs(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    layers = [layer(entry(f"f{i}", data=bytes([i]) * 200_000)) for i in range(6)]
    archive = oci_archive(tmp_path / "a.tar", layers, gz=False)
    proc = subprocess.run([sys.executable, "-c", KILLER, str(store.root), str(archive)], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert list((store.root / "tmp").iterdir())               # the half-done layer is there...
    assert store.list() == []                                 # ...but no image, no name
    image = store.import_archive(archive, "victim")          # the next import cleans up and succeeds
    assert list((store.root / "tmp").iterdir()) == []
    assert len(list((store.root / "layers").iterdir())) == len(image.layers) == 6


def _build(out: Path, *extra: str) -> dict[str, str]:
    subprocess.run([sys.executable, str(REPO / "scripts/build_images.py"), str(out), *extra], check=True,
                   capture_output=True)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="needs Debian's busybox-static")
def test_build_images_reproducible_and_layered(tmp_path: Path) -> None:
    first = _build(tmp_path / "a", "--layers", "5")
    assert first == _build(tmp_path / "b", "--layers", "5") == _build(tmp_path / "a", "--layers", "5")
    assert set(first) == {"busybox.oci.tar", "layered.oci.tar", "stack-5.oci.tar"}
    store = ImageStore(tmp_path / "s")
    busybox = store.import_archive(tmp_path / "a/busybox.oci.tar")
    assert busybox.names == ("busybox:latest",) and busybox.config.cmd == ("sh",)
    assert busybox.config.entrypoint == () and busybox.config.working_dir == "/"
    root = store.layer_dir(busybox.layers[0])
    for applet in ("sh", "ls", "httpd", "wget", "nc", "mount", "grep", "env", "mkdir"):
        assert any((root / d / applet).is_symlink() for d in ("bin", "sbin", "usr/bin", "usr/sbin")), applet
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (root / "etc/passwd").read_text().startswith("root:x:0:0:")
    assert len(store.import_archive(tmp_path / "a/stack-5.oci.tar").layers) == 5
    with tarfile.open(tmp_path / "a/layered.oci.tar") as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "layered:latest"
