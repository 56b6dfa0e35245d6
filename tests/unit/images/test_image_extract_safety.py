"""Malicious layer tars: each is refused with a clear error, the store is unchanged and nothing is written
outside it (the evil targets point at marker dirs inside tmp_path, checked untouched afterwards)."""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from img_archives import entry, layer, oci_archive

from orchestrator.errors import UnsafeArchiveError
from orchestrator.images.extract import Limits, split_name
from orchestrator.images.store import ImageStore


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    d = tmp_path / "marker"
    d.mkdir()
    (d / "secret").write_text("untouched\n")
    return d


def _snapshot(d: Path) -> list[tuple[str, int, bytes]]:
    out = []
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        out.append((str(p), st.st_mode, p.read_bytes() if p.is_file() and not p.is_symlink() else b""))
    return out


def _store_state(root: Path) -> list[str]:
    """What a bad import must not change: records, names, layers, links, blobs (tmp/ may be empty)."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if not str(p.relative_to(root)).startswith("tmp") and p.name != "lock"
                  and (p.is_symlink() or not p.is_dir()))


def _refused(tmp_path: Path, marker: Path, tar: bytes, match: str, limits: Limits | None = None) -> None:
    store = ImageStore(tmp_path / "store", limits=limits) if limits else ImageStore(tmp_path / "store")
    good = store.import_archive(oci_archive(tmp_path / "good.tar", [layer(entry("g", data=b"g"))]), "good")
    before_marker, before_store = _snapshot(marker), _store_state(store.root)
    archive = oci_archive(tmp_path / "evil.tar", [tar])
    with pytest.raises(UnsafeArchiveError, match=match) as info:
        store.import_archive(archive, "evil")
    assert "evil.tar" in str(info.value)          # the message names the archive...
    assert _snapshot(marker) == before_marker       # ...nothing outside the store moved
    assert _store_state(store.root) == before_store  # ...and the store is as it was
    assert list((store.root / "tmp").iterdir()) == []
    assert store.list() == [good]


def test_dotdot_path_refused(tmp_path: Path, marker: Path) -> None:
    tar = layer(entry("ok.txt", data=b"ok"), entry("../../marker/evil", data=b"pwned"))
    _refused(tmp_path, marker, tar, r"'\.\.\/\.\.\/marker/evil'.*'\.\.' component refused")


def test_absolute_path_refused(tmp_path: Path, marker: Path) -> None:
    tar = layer(entry(str(marker / "evil"), data=b"pwned"))
    _refused(tmp_path, marker, tar, "absolute path refused")


@pytest.mark.parametrize("target", ["ABS", "../../../marker"])
def test_write_through_symlink_refused(tmp_path: Path, marker: Path, target: str) -> None:
    link_target = str(marker) if target == "ABS" else target
    tar = layer(entry("link", tarfile.SYMTYPE, linkname=link_target),
                entry("link/evil", data=b"pwned"))
    _refused(tmp_path, marker, tar, "parent 'link' is not a directory.*symlink")


def test_symlinked_parent_dir_deep_refused(tmp_path: Path, marker: Path) -> None:
    tar = layer(entry("a", tarfile.DIRTYPE, mode=0o755), entry("a/b", tarfile.SYMTYPE, linkname=str(marker)),
                entry("a/b/c/evil", data=b"pwned"))
    _refused(tmp_path, marker, tar, "parent 'a/b' is not a directory")


def test_hardlink_to_outside_refused(tmp_path: Path, marker: Path) -> None:
    _refused(tmp_path, marker, layer(entry("h", tarfile.LNKTYPE, linkname=str(marker / "secret"))),
             "absolute path refused")
    _refused(tmp_path, marker, layer(entry("h", tarfile.LNKTYPE, linkname="../marker/secret")),
             "'..' component refused")


def test_hardlink_to_missing_entry_refused(tmp_path: Path, marker: Path) -> None:
    _refused(tmp_path, marker, layer(entry("h", tarfile.LNKTYPE, linkname="etc/shadow")),
             "not an earlier entry of this layer")


@pytest.mark.parametrize(("kind", "major", "minor"), [(tarfile.BLKTYPE, 8, 0), (tarfile.CHRTYPE, 1, 1),
                                                      (tarfile.CHRTYPE, 10, 200)])
def test_device_nodes_refused(tmp_path: Path, marker: Path, kind: bytes, major: int, minor: int) -> None:
    tar = layer(entry("dev", tarfile.DIRTYPE, mode=0o755), entry("dev/x", kind, major=major, minor=minor))
    _refused(tmp_path, marker, tar, f"device {major}:{minor} refused")


def test_too_many_entries_refused(tmp_path: Path, marker: Path) -> None:
    tar = layer(*(entry(f"f{i}", data=b"x") for i in range(20)))
    _refused(tmp_path, marker, tar, "more than 10 entries", Limits(max_entries=10))


def test_too_big_refused(tmp_path: Path, marker: Path) -> None:
    tar = layer(entry("big", data=b"x" * 5000))
    _refused(tmp_path, marker, tar, "exceeds 4096 bytes", Limits(max_bytes=4096))


def test_hardlink_to_symlink_links_the_symlink_not_its_target(tmp_path: Path, marker: Path) -> None:
    store = ImageStore(tmp_path / "store")
    tar = layer(entry("s", tarfile.SYMTYPE, linkname=str(marker / "secret")),
                entry("h", tarfile.LNKTYPE, linkname="s"))
    image = store.import_archive(oci_archive(tmp_path / "a.tar", [tar]), "ok")
    diff = store.layer_dir(image.layers[0])
    assert (diff / "h").is_symlink()
    assert (marker / "secret").stat().st_nlink == 1


def test_file_replacing_a_symlink_does_not_write_through_it(tmp_path: Path, marker: Path) -> None:
    store = ImageStore(tmp_path / "store")
    before = _snapshot(marker)
    tar = layer(entry("x", tarfile.SYMTYPE, linkname=str(marker / "secret")), entry("x", data=b"replaced"))
    image = store.import_archive(oci_archive(tmp_path / "a.tar", [tar]), "ok")
    x = store.layer_dir(image.layers[0]) / "x"
    assert not x.is_symlink() and x.read_bytes() == b"replaced"
    assert _snapshot(marker) == before


def test_allowed_devices_fifos_setuid_and_modes_kept(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    tar = layer(entry("dev", tarfile.DIRTYPE, mode=0o755),
                entry("dev/null", tarfile.CHRTYPE, major=1, minor=3, mode=0o666),
                entry("fifo", tarfile.FIFOTYPE, mode=0o600),
                entry("su", data=b"#!", mode=0o4755), entry("ro", tarfile.DIRTYPE, mode=0o555),
                entry("ro/f", data=b"f", mode=0o400), entry("hl", tarfile.LNKTYPE, linkname="ro/f"))
    if os.geteuid() != 0:
        pytest.skip("device nodes and setuid on root-owned files need root")
    image = store.import_archive(oci_archive(tmp_path / "a.tar", [tar]), "ok")
    diff = store.layer_dir(image.layers[0])
    st = (diff / "dev/null").lstat()
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_ISFIFO((diff / "fifo").lstat().st_mode)
    assert stat.S_IMODE((diff / "su").stat().st_mode) == 0o4755
    assert stat.S_IMODE((diff / "ro").stat().st_mode) == 0o555
    assert (diff / "hl").stat().st_ino == (diff / "ro/f").stat().st_ino


def test_whiteout_becomes_char_device_0_0(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    tar = layer(entry("d", tarfile.DIRTYPE, mode=0o755), entry("d/.wh.gone"), entry("d/kept", data=b"k"))
    image = store.import_archive(oci_archive(tmp_path / "a.tar", [tar]), "ok")
    wh = store.layer_dir(image.layers[0]) / "d/gone"
    st = wh.lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not (wh.parent / ".wh.gone").exists()


def test_huge_pax_header_refused_before_reading_it(tmp_path: Path, marker: Path) -> None:
    info, data = entry("f", data=b"x")
    info.pax_headers = {"comment": "y" * (2 << 20)}
    _refused(tmp_path, marker, layer((info, data)), "metadata header refused")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "..", ".", "", "/", "b/../..", "/etc", "x\0"]), max_size=6))
def test_split_name_never_escapes(parts: list[str]) -> None:
    name = "/".join(parts)
    try:
        comps = split_name(name, archive="t")
    except UnsafeArchiveError:
        return
    root = Path("/layer")
    assert os.path.normpath(root.joinpath(*comps)).startswith(str(root))
    assert all(c not in ("", ".", "..") and "/" not in c for c in comps)
