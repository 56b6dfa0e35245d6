"""Secrets on a real tmpfs in a private mount namespace: owner and mode as configured, nothing on disk
after unmount, and rotation that reaches a reader in under 2 s through the mounts a container gets.

Each test forks a child that unshares its mount namespace (and makes every mount private, so nothing
propagates back to the host), does the kernel work there and reports plain JSON through a pipe; the
parent asserts. The secret value is random per test so the disk scan cannot match anything else.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import stat
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.manifest.model import FileMount
from orchestrator.runtime.linux import syscalls
from orchestrator.secrets.materialise import rotate, write_secret_files
from orchestrator.secrets.tmpfs import make_tmpfs, unmount
from orchestrator.secrets.value import SecretValue

pytestmark = pytest.mark.root


def in_private_mount_ns(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        code = 1
        try:
            syscalls.unshare(syscalls.CLONE_NEWNS)
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            out = json.dumps({"ok": fn()})
            code = 0
        except BaseException:
            out = json.dumps({"error": traceback.format_exc()})
        finally:
            os.write(wfd, out.encode())
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        raw = f.read()
    os.waitpid(pid, 0)
    result = json.loads(raw)
    if "error" in result:
        pytest.fail("in the mount namespace:\n" + result["error"])
    return dict(result["ok"])


def scan_for(root: Path, needles: list[bytes]) -> list[str]:
    """Every file under ``root`` holding one of ``needles`` (raw, base64 or hex forms)."""
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if any(n in data for n in needles):
                hits.append(str(path))
    return hits


def forms(value: bytes) -> list[bytes]:
    return [value, base64.b64encode(value), value.hex().encode()]


def test_secret_files_on_tmpfs_mode_owner_and_gone_after_unmount(tmp_path: Path, state_root: Path) -> None:
    value = SecretValue(f"pw-{secrets.token_hex(16)}\n".encode())
    mnt = state_root / "containers" / "c1" / "secrets"

    def child() -> dict[str, Any]:
        noswap = make_tmpfs(mnt, 1024 * 1024, mode=0o711)
        items = [(FileMount("db", "/run/secrets/db", uid=1234, gid=5678, mode=0o400), value),
                 (FileMount("tls", "/etc/tls/key.pem", uid=0, gid=101, mode=0o440), value)]
        written = write_secret_files(mnt, items)
        stats = {p: os.stat(mnt / p) for p in written}
        with open("/proc/self/mountinfo") as f:
            line = next(m for m in f if f" {mnt} " in m)
        flags = line.split()[5]
        content_ok = (mnt / "run/secrets/db").read_bytes() == value.reveal()
        unmount(mnt)
        return {"noswap": noswap, "fs": line.split(" - ")[1], "flags": flags, "content_ok": content_ok,
                "after": sorted(os.listdir(mnt)),
                "stats": {p: [s.st_uid, s.st_gid, stat.S_IMODE(s.st_mode)] for p, s in stats.items()}}

    got = in_private_mount_ns(child)
    assert got["stats"] == {"run/secrets/db": [1234, 5678, 0o400], "etc/tls/key.pem": [0, 101, 0o440]}
    assert got["content_ok"] and got["after"] == []
    assert got["fs"].startswith("tmpfs ") and "noswap" in got["fs"] and got["noswap"]
    assert {"nosuid", "nodev", "noexec"} <= set(got["flags"].split(","))
    assert not os.path.ismount(mnt)                     # never on the host's mount table
    assert scan_for(tmp_path, forms(value.reveal())) == []


READER = """
import sys, time
path, old = sys.argv[1], sys.argv[2].encode()
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    with open(path, "rb") as f:
        data = f.read()
    if data != old:
        print("changed", data.decode(), time.monotonic(), flush=True)
        sys.exit(0)
    time.sleep(0.005)
print("unchanged", flush=True)
"""


def _reader(path: Path, old: str, wait_s: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", READER, str(path), old, str(wait_s)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _result(proc: subprocess.Popen[str], t0: float) -> list[Any]:
    assert proc.stdout is not None
    words = proc.stdout.readline().split()
    proc.wait(5)
    return [words[0], words[1], float(words[2]) - t0] if words[0] == "changed" else words


def test_rotation_reaches_a_reader_through_container_style_mounts(tmp_path: Path, state_root: Path) -> None:
    tok1, tok2 = f"t1-{secrets.token_hex(8)}", f"t2-{secrets.token_hex(8)}"
    key1, key2, key3 = (f"k{i}-{secrets.token_hex(8)}" for i in (1, 2, 3))
    store = state_root / "c1" / "tmpfs"
    dir_view, file_view = tmp_path / "rootfs" / "run" / "secrets", tmp_path / "rootfs" / "etc" / "key"
    tok = FileMount("tok", "/run/secrets/tok", mode=0o444)
    key = FileMount("key", "/etc/key", mode=0o400)

    def child() -> dict[str, Any]:
        make_tmpfs(store, 1024 * 1024)
        write_secret_files(store, [(tok, SecretValue(tok1.encode())), (key, SecretValue(key1.encode()))])
        # what the runtime does for a container: the secrets directory bound read-only at its target,
        # and a secret whose target is elsewhere bound as a single file
        dir_view.mkdir(parents=True)
        file_view.parent.mkdir(parents=True)
        file_view.touch()
        syscalls.mount(str(store / "run/secrets"), str(dir_view), None, syscalls.MS_BIND)
        syscalls.mount(None, str(dir_view), None, syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY)
        syscalls.mount(str(store / "etc/key"), str(file_view), None, syscalls.MS_BIND)
        try:
            reader = _reader(dir_view / "tok", tok1, 2.0)
            t0 = time.monotonic()
            changed = rotate(store, [(tok, SecretValue(tok2.encode())), (key, SecretValue(key1.encode()))])
            via_dir = _result(reader, t0)
            reader = _reader(file_view, key1, 2.0)
            t0 = time.monotonic()
            rotate(store, [(key, SecretValue(key2.encode()))], in_place=True)
            via_file_in_place = _result(reader, t0)
            # the pitfall in_place exists for: a rename never reaches a single-file bind mount
            reader = _reader(file_view, key2, 0.3)
            rotate(store, [(key, SecretValue(key3.encode()))])
            via_file_atomic = _result(reader, t0)
        finally:
            for target in (file_view, dir_view, store):
                unmount(target)
        return {"changed": changed, "dir": via_dir, "file_in_place": via_file_in_place,
                "file_atomic": via_file_atomic, "left": sorted(os.listdir(store))}

    got = in_private_mount_ns(child)
    assert got["changed"] == ["run/secrets/tok"]                # the unchanged key was not rewritten
    assert got["dir"][:2] == ["changed", tok2] and got["dir"][2] < 2.0
    assert got["file_in_place"][:2] == ["changed", key2] and got["file_in_place"][2] < 2.0
    assert got["file_atomic"] == ["unchanged"]
    assert got["left"] == []
    print(f"rotation latency: directory mount {got['dir'][2] * 1000:.1f} ms, "
          f"file mount in place {got['file_in_place'][2] * 1000:.1f} ms")
    assert scan_for(tmp_path, [f for v in (tok1, tok2, key1, key2, key3) for f in forms(v.encode())]) == []


def test_host_rotates_a_tmpfs_that_exists_only_in_the_containers_namespace(tmp_path: Path) -> None:
    """How a running container's secrets are reached: through /proc/PID/root of a process in its mount
    namespace; the tmpfs is never on the host's mount table."""
    old, new = f"o-{secrets.token_hex(8)}", f"n-{secrets.token_hex(8)}"
    store = tmp_path / "ctr" / "secrets"
    meta = FileMount("s", "/s", mode=0o440)
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(done_w)
        code = 1
        try:
            syscalls.unshare(syscalls.CLONE_NEWNS)
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            make_tmpfs(store, 256 * 1024)
            write_secret_files(store, [(meta, SecretValue(old.encode()))])
            reader = _reader(store / "s", old, 2.0)
            os.write(ready_w, b"r")
            os.read(done_r, 1)                   # the parent has rotated
            seen = _result(reader, 0.0)
            unmount(store)
            code = 0 if seen[:2] == ["changed", new] else 2
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        assert os.read(ready_r, 1) == b"r"
        assert not os.path.ismount(store)
        changed = rotate(Path(f"/proc/{pid}/root{store}"), [(meta, SecretValue(new.encode()))])
        assert changed == ["s"]
        assert not (store / "s").exists()        # the host directory under the mount point is empty
    finally:
        with contextlib.suppress(OSError):       # the child may already be gone (its failure is below)
            os.write(done_w, b"d")
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert scan_for(tmp_path, forms(old.encode()) + forms(new.encode())) == []


def test_detached_tmpfs_rotated_through_a_kept_fd(tmp_path: Path) -> None:
    """The layout recommended to the runtime: fill the tmpfs, bind its files read-only at their targets,
    keep an O_PATH fd to its root and detach it, so the container sees only the bound files, and
    rotation goes through the fd (or /proc/HOLDER/fd/N from another process)."""
    old, new = f"o-{secrets.token_hex(8)}", f"n-{secrets.token_hex(8)}"
    staging, view = tmp_path / "staging", tmp_path / "rootfs" / "run" / "secrets"
    meta = FileMount("s", "/run/secrets/s", uid=7, gid=8, mode=0o400)

    def child() -> dict[str, Any]:
        make_tmpfs(staging, 256 * 1024)
        write_secret_files(staging, [(meta, SecretValue(old.encode()))])
        view.mkdir(parents=True)
        syscalls.mount(str(staging / "run/secrets"), str(view), None, syscalls.MS_BIND)
        syscalls.mount(None, str(view), None, syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY)
        fd = os.open(staging, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        syscalls.umount2(str(staging), syscalls.MNT_DETACH)
        try:
            listed = os.listdir(staging)                       # the staging dir is an empty dir again
            reader = _reader(view / "s", old, 2.0)
            t0 = time.monotonic()
            changed = rotate(fd, [(meta, SecretValue(new.encode()))])
            seen = _result(reader, t0)
            st = os.stat(view / "s")
        finally:
            os.close(fd)
            unmount(view)
        return {"listed": listed, "changed": changed, "seen": seen,
                "owner": [st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)]}

    got = in_private_mount_ns(child)
    assert got["listed"] == [] and got["changed"] == ["run/secrets/s"]
    assert got["seen"][:2] == ["changed", new] and got["seen"][2] < 2.0
    assert got["owner"] == [7, 8, 0o400]
    assert scan_for(tmp_path, forms(old.encode()) + forms(new.encode())) == []
