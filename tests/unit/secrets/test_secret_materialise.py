"""Writing config/secret files under a directory: modes, atomic replace, no escapes, rotation."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import RuntimeFailure
from orchestrator.manifest.model import FileMount
from orchestrator.secrets.materialise import (
    host_ids,
    relative_parts,
    rotate,
    tmpfs_size_for,
    write_config_files,
    write_secret_files,
)
from orchestrator.secrets.value import SecretValue

UID, GID = os.getuid(), os.getgid()


def fm(target: str, mode: int = 0o440) -> FileMount:
    return FileMount("x", target, uid=UID, gid=GID, mode=mode)


def test_files_land_at_their_targets_with_mode(tmp_path: Path) -> None:
    written = write_secret_files(tmp_path, [(fm("/run/secrets/db", 0o400), SecretValue(b"pw")),
                                            (fm("/etc/app/conf.d/a.conf", 0o644), b"a=1\n")])
    assert written == ["run/secrets/db", "etc/app/conf.d/a.conf"]
    st = (tmp_path / "run/secrets/db").stat()
    assert stat.S_IMODE(st.st_mode) == 0o400 and (st.st_uid, st.st_gid) == (UID, GID)
    assert (tmp_path / "run/secrets/db").read_bytes() == b"pw"
    assert stat.S_IMODE((tmp_path / "etc/app/conf.d/a.conf").stat().st_mode) == 0o644
    assert sorted(p.name for p in (tmp_path / "run/secrets").iterdir()) == ["db"]   # no temp files left


def test_dataclass_with_the_fields_is_enough(tmp_path: Path) -> None:
    @dataclass(frozen=True)
    class Meta:                 # what the runtime would use: it must not import manifest
        target: str
        uid: int
        gid: int
        mode: int

    write_config_files(tmp_path, [(Meta("/c", UID, GID, 0o444), b"c")])
    assert (tmp_path / "c").read_bytes() == b"c"


@pytest.mark.parametrize("target", ["relative/path", "/", "/a/../../etc/passwd", "/..", "//"])
def test_escaping_targets_are_refused(tmp_path: Path, target: str) -> None:
    with pytest.raises(RuntimeFailure, match="file target"):
        write_secret_files(tmp_path, [(fm(target), b"x")])


def test_symlinked_directory_is_never_followed(tmp_path: Path) -> None:
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "run").symlink_to(outside)        # planted by a container that could write there
    with pytest.raises(RuntimeFailure, match=r"unsafe or missing directory.*path=.*dest/run"):
        write_secret_files(dest, [(fm("/run/secrets/db"), b"pw")])
    assert list(outside.iterdir()) == []


def test_symlinked_file_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "db").symlink_to(victim)
    write_secret_files(dest, [(fm("/db"), b"pw")])
    assert victim.read_bytes() == b"untouched"
    assert not (dest / "db").is_symlink() and (dest / "db").read_bytes() == b"pw"
    # in place refuses the symlink outright
    (dest / "db").unlink()
    (dest / "db").symlink_to(victim)
    with pytest.raises(RuntimeFailure, match="cannot open file"):
        rotate(dest, [(fm("/db"), b"pw2")], in_place=True)
    assert victim.read_bytes() == b"untouched"


def test_duplicate_targets_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure, match="two files for the same target"):
        write_config_files(tmp_path, [(fm("/a/b"), b"1"), (fm("/a//b"), b"2")])
    assert relative_parts("/a/./b/") == ["a", "b"]


def test_rotate_rewrites_only_changed_files(tmp_path: Path) -> None:
    items = [(fm("/a"), b"one"), (fm("/b"), b"two")]
    write_config_files(tmp_path, items)
    ino_a, ino_b = (tmp_path / "a").stat().st_ino, (tmp_path / "b").stat().st_ino
    assert rotate(tmp_path, items) == []
    assert rotate(tmp_path, [(fm("/a"), b"ONE"), (fm("/b"), b"two")]) == ["a"]
    assert (tmp_path / "a").read_bytes() == b"ONE"
    assert (tmp_path / "a").stat().st_ino != ino_a        # atomic: a new inode renamed over
    assert (tmp_path / "b").stat().st_ino == ino_b        # untouched
    assert rotate(tmp_path, [(fm("/b", 0o400), b"a longer second value")], in_place=True) == ["b"]
    st = (tmp_path / "b").stat()
    assert st.st_ino == ino_b and stat.S_IMODE(st.st_mode) == 0o400   # same inode: bind mounts see it
    assert (tmp_path / "b").read_bytes() == b"a longer second value"
    rotate(tmp_path, [(fm("/b"), b"short")], in_place=True)
    assert (tmp_path / "b").read_bytes() == b"short"                    # truncated to the new length


READER = """
import sys, time
path, old = sys.argv[1], sys.argv[2].encode()
print("ready", flush=True)
while True:
    with open(path, "rb") as f:
        data = f.read()
    if data != old:
        print(repr(data), time.monotonic(), flush=True)
        break
    time.sleep(0.005)
"""


def test_reader_sees_rotated_content_quickly(tmp_path: Path) -> None:
    write_config_files(tmp_path, [(fm("/etc/app.conf"), b"v1")])
    reader = subprocess.Popen([sys.executable, "-c", READER, str(tmp_path / "etc/app.conf"), "v1"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        rotate(tmp_path, [(fm("/etc/app.conf"), b"v2")])
        line = reader.stdout.readline().split()
        assert line[0] == "b'v2'"                            # never an empty or partial read
        assert float(line[1]) - t0 < 2.0
    finally:
        reader.kill()
        reader.wait()


def test_tmpfs_size_covers_a_rotation() -> None:
    assert tmpfs_size_for([]) == 256 * 1024
    big = [(fm(f"/f{i}"), b"x" * 100_000) for i in range(10)]
    assert tmpfs_size_for(big) >= 2 * 10 * 100_000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(["a", "b", ".", "..", "", "c.d"]), min_size=1, max_size=6))
def test_property_nothing_lands_outside(tmp_path: Path, parts: list[str]) -> None:
    base = tmp_path / os.urandom(6).hex()           # fresh per example: tmp_path is shared
    dest = base / "dest"
    dest.mkdir(parents=True)
    target = "/" + "/".join(parts)
    try:
        (written,) = write_config_files(dest, [(fm(target), b"x")])
    except RuntimeFailure:
        assert ".." in parts or not [p for p in parts if p not in ("", ".")]
        return
    assert (dest / written).resolve().is_relative_to(dest.resolve())
    outside = [p for p in base.rglob("*") if not p.is_relative_to(dest)]
    assert outside == []


def test_ids_translated_for_a_user_namespace(tmp_path: Path) -> None:
    items = [(FileMount("x", "/run/secrets/x", uid=101, gid=0, mode=0o400), b"v")]
    ((meta, _),) = host_ids(items, [(0, 100000, 65536)], [(0, 200000, 1000)])
    assert (meta.target, meta.uid, meta.gid, meta.mode) == ("/run/secrets/x", 100101, 200000, 0o400)
    with pytest.raises(RuntimeFailure, match="uid 101 is not mapped"):
        host_ids(items, [(0, 100000, 100)], [(0, 1, 1)])
