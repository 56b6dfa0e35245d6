"""ImageStore without mounting: digest and diff_id checks, both archive formats, lookup, removal and GC,
crash leftovers, and the overlay mount description."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from img_archives import digest, docker_archive, entry, layer, oci_archive

from orchestrator.errors import ImageError
from orchestrator.images.model import chain_ids, normalize_name
from orchestrator.images.mounts import MOUNT_DATA_MAX, dir_rootfs_mounts
from orchestrator.images.store import ImageStore

BASE = layer(entry("bin", tarfile.DIRTYPE, mode=0o755), entry("bin/tool", data=b"tool", mode=0o755))
TOP = layer(entry("etc", tarfile.DIRTYPE, mode=0o755), entry("etc/top", data=b"top"))

# extraction filters exist from Python 3.11.4 (Debian 12 ships 3.11.2); these archives are our own
TRUSTED: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if (p.is_symlink() or not p.is_dir()) and p.name != "lock")


@pytest.mark.parametrize("gz", [True, False])
def test_import_oci_gzip_and_plain(tmp_path: Path, gz: bool) -> None:
    store = ImageStore(tmp_path / "s")
    image = store.import_archive(oci_archive(tmp_path / "a.tar", [BASE, TOP], gz=gz, env=("A=1",)), None)
    assert image.names == ("test:latest",)
    assert image.diff_ids == (digest(BASE), digest(TOP))
    assert image.layers == tuple(chain_ids([digest(BASE), digest(TOP)]))
    assert image.config.cmd == ("sh",) and image.config.env == ("A=1",)
    assert image.config.exposed_ports == ("80/tcp",) and dict(image.config.labels) == {"a": "b"}
    assert (store.layer_dir(image.layers[1]) / "etc/top").read_bytes() == b"top"
    assert image.size == len(b"tool") + len(b"top")


def test_import_oci_layout_directory(tmp_path: Path) -> None:
    archive = oci_archive(tmp_path / "a.tar", [BASE])
    (tmp_path / "dir").mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "dir", **TRUSTED)   # the test's own trusted input
    image = ImageStore(tmp_path / "s").import_archive(tmp_path / "dir", "fromdir:v1")
    assert image.names == ("fromdir:v1",)


def test_import_docker_save(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    image = store.import_archive(docker_archive(tmp_path / "d.tar", [BASE, TOP]))
    assert image.names == ("dock:1",) and image.config.cmd == ("true",)
    assert (store.layer_dir(image.layers[0]) / "bin/tool").read_bytes() == b"tool"


@pytest.mark.parametrize(("flag", "match"), [("bad_blob", "blob digest mismatch"),
                                             ("bad_diff_id", "diff_id mismatch")])
@pytest.mark.parametrize("gz", [True, False])
def test_digest_mismatch_refused_and_store_unchanged(tmp_path: Path, flag: str, match: str, gz: bool) -> None:
    store = ImageStore(tmp_path / "s")
    good = store.import_archive(oci_archive(tmp_path / "g.tar", [BASE]), "good")
    before = _files(store.root)
    with pytest.raises(ImageError, match=match):
        bad = oci_archive(tmp_path / "a.tar", [BASE, TOP], gz=gz, bad_blob=flag == "bad_blob",
                          bad_diff_id=flag == "bad_diff_id")
        store.import_archive(bad, "bad")
    assert _files(store.root) == before and store.list() == [good]


def test_docker_layer_tampered_refused(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "d.tar", [BASE])
    # rewrite the layer with different content but keep the config's diff_id
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    files["l0/layer.tar"] = TOP
    with tarfile.open(archive, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ImageError, match="diff_id mismatch"):
        ImageStore(tmp_path / "s").import_archive(archive)


def test_bad_manifest_digest_and_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"not a tar")
    with pytest.raises(ImageError, match="junk: not a readable tar"):
        ImageStore(tmp_path / "s").import_archive(tmp_path / "junk")
    d = tmp_path / "layout"
    (d / "blobs/sha256").mkdir(parents=True)
    (d / "oci-layout").write_text("{}")
    (d / "index.json").write_text(json.dumps({"manifests": [{"digest": "sha256:../../etc/passwd"}]}))
    with pytest.raises(ImageError, match="invalid or unsupported digest"):
        ImageStore(tmp_path / "s").import_archive(d)


def test_shared_layers_stored_once_and_gc_on_remove(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    one = store.import_archive(oci_archive(tmp_path / "1.tar", [BASE]), "one")
    two = store.import_archive(oci_archive(tmp_path / "2.tar", [BASE, TOP]), "two")
    assert one.layers[0] == two.layers[0]
    assert len(list((store.root / "layers").iterdir())) == 2
    with pytest.raises(ImageError, match="in use by a container"):
        store.remove("two", {two.id})
    with pytest.raises(ImageError, match="in use"):
        store.remove("two", lambda image_id: image_id == two.id)
    removed = store.remove("two", set())
    assert removed.deleted == two.id and removed.layers == 1
    assert [p.name for p in (store.root / "layers").iterdir()] == [one.layers[0].removeprefix("sha256:")]
    assert store.layer_dir(one.layers[0]).is_dir()
    store.remove("one")
    assert list((store.root / "layers").iterdir()) == [] and list((store.root / "l").iterdir()) == []
    assert list((store.root / "blobs/sha256").iterdir()) == []


def test_names_lookup_untag_and_prefix(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    a = store.import_archive(oci_archive(tmp_path / "1.tar", [BASE]), "x/app:1")
    b = store.import_archive(oci_archive(tmp_path / "1.tar", [BASE]), "x/app:2")
    assert a.id == b.id and store.get("x/app:2").names == ("x/app:1", "x/app:2")
    assert store.get(a.id[7:15]).id == a.id and store.get(a.id).id == a.id
    with pytest.raises(ImageError, match="not found"):
        store.get("nope")
    removed = store.remove("x/app:1", lambda _: True)      # untag only: in use does not matter
    assert removed.untagged == ("x/app:1",) and removed.deleted is None
    assert store.get(a.id).names == ("x/app:2",)


def test_crash_leftovers_removed_by_next_import(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    store.import_archive(oci_archive(tmp_path / "1.tar", [BASE]), "one")
    # what a kill -9 can leave: a half-written temp layer, a renamed layer without a record
    (store.root / "tmp/layer-dead/diff/x").mkdir(parents=True)
    (store.root / "layers" / ("f" * 64) / "diff").mkdir(parents=True)
    store.import_archive(oci_archive(tmp_path / "2.tar", [TOP]), "two")
    assert list((store.root / "tmp").iterdir()) == []
    assert not (store.root / "layers" / ("f" * 64)).exists()
    assert len(store.list()) == 2


def test_rootfs_mounts_120_layers_under_page(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    layers = [BASE] + [layer(entry(f"f{i}", data=b"%d" % i)) for i in range(119)]
    image = store.import_archive(oci_archive(tmp_path / "big.tar", layers), "big")
    upper, work = tmp_path / "c" / "upper", tmp_path / "c" / "work"
    [m] = store.rootfs_mounts(image, upper, work)
    assert m.type == "overlay" and m.cwd == str(store.root.absolute())
    lowers = m.options[0].removeprefix("lowerdir=").split(":")
    assert len(lowers) == 120 and all(lo.startswith("l/") for lo in lowers)
    assert (Path(m.cwd) / lowers[0]).resolve() == store.layer_dir(image.layers[-1]).resolve()  # top first
    assert len(",".join(m.options)) <= MOUNT_DATA_MAX
    assert m.options[1:] == (f"upperdir={upper}", f"workdir={work}")
    [ro] = store.rootfs_mounts(image, upper, work, readonly=True)
    assert ro.options[-1] == "ro"


def test_dir_rootfs_and_names() -> None:
    [m] = dir_rootfs_mounts(Path("/"), Path("/u"), Path("/w"))
    assert m.options == ("lowerdir=/", "upperdir=/u", "workdir=/w")
    with pytest.raises(ImageError, match="contains ','"):
        dir_rootfs_mounts(Path("/"), Path("/u,x"), Path("/w"))
    assert normalize_name("busybox") == "busybox:latest"
    assert normalize_name("localhost:5000/a/b") == "localhost:5000/a/b:latest"
    assert normalize_name("docker.io/library/busybox:1") == "busybox:1"
    assert normalize_name("docker.io/x/y") == "x/y:latest"
    with pytest.raises(ImageError):
        normalize_name("Bad Name")


def test_multi_arch_index_picks_this_platform(tmp_path: Path) -> None:
    archive = oci_archive(tmp_path / "a.tar", [BASE], ref="multi:1")
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    [desc] = json.loads(files["index.json"])["manifests"]
    wrong = dict(desc, digest="sha256:" + "0" * 64, platform={"architecture": "arm64", "os": "linux"})
    right = dict(desc, platform={"architecture": "amd64", "os": "linux"})
    inner = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [wrong, right]}).encode()
    files["blobs/sha256/" + digest(inner)[7:]] = inner
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest(inner), "size": len(inner),
         "annotations": {"io.containerd.image.name": "docker.io/library/multi:1",
                         "org.opencontainers.image.ref.name": "1"}}]}).encode()
    with tarfile.open(archive, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    image = ImageStore(tmp_path / "s").import_archive(archive)
    assert image.names == ("multi:1",) and image.diff_ids == (digest(BASE),)


def test_truncated_layer_refused(tmp_path: Path) -> None:
    cut = BASE[:700]                              # header of bin/tool plus part of its data
    with pytest.raises(ImageError, match=r"truncated|bad tar data|unexpected end"):
        ImageStore(tmp_path / "s").import_archive(oci_archive(tmp_path / "a.tar", [cut]), "cut")


def test_docker_manifest_paths_are_checked(tmp_path: Path) -> None:
    d = tmp_path / "unpacked"
    d.mkdir()
    with tarfile.open(docker_archive(tmp_path / "d.tar", [BASE])) as tar:
        tar.extractall(d, **TRUSTED)          # the test's own trusted input
    manifest = json.loads((d / "manifest.json").read_text())
    manifest[0]["Layers"] = ["../../etc/passwd"]
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ImageError, match=r"'\.\.' component refused"):
        ImageStore(tmp_path / "s").import_archive(d)
