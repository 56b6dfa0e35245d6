"""Configs and secrets delivered by the native runtime into real containers (``filemounts``).

A config appears with its owner and mode, read-only; a secret is readable inside and absent from every
disk the test can see (state dir, overlay upper dir, the whole tmp tree), from the log, the state and
error messages; rotation reaches a running container (measured); delete leaves no tmpfs anywhere.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.files import FileSpec
from orchestrator.runtime.linux import filemounts
from orchestrator.secrets.value import SecretValue

pytestmark = pytest.mark.root


def start(rt: Any, bundles: Any, cid: str, files: list[FileSpec], edit: Any = None) -> Path:
    bundle, rootfs = bundles.make(["sleep", "60"], edit)
    rt.create(cid, bundle, rootfs, files=files)
    rt.start(cid)
    return Path(bundle)


def sh(rt: Any, cid: str, script: str) -> str:
    res = rt.exec(cid, ["sh", "-c", script])
    assert res.exit_code == 0, res.stderr
    return str(res.stdout.decode())


def forms(value: bytes) -> list[bytes]:
    return [value, value.hex().encode(), value.hex().upper().encode(), base64.b64encode(value),
            base64.urlsafe_b64encode(value).rstrip(b"=")]


def scan(tree: Path, value: bytes) -> list[str]:
    """Every regular file under ``tree`` holding ``value`` in any plain encoding."""
    hits = []
    for dirpath, _dirs, names in os.walk(tree):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                if not os.path.isfile(path) or os.path.islink(path):
                    continue
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if any(form in data for form in forms(value)):
                hits.append(path)
    return hits


def tmpfs_mounts_of(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(path) in line]


def test_config_appears_with_mode_owner_read_only(runtime: Any, bundles: Any) -> None:
    # the container's root has no CAP_DAC_OVERRIDE: owner and mode are what it is checked against
    files = [FileSpec("/run/configs/app.conf", b"port = 8080\n", uid=0, gid=65534, mode=0o640),
             FileSpec("/etc/app/motd", b"welcome\n", uid=65534, gid=0, mode=0o444),
             FileSpec("/run/configs/private", b"x", uid=65534, gid=65534, mode=0o400)]
    start(runtime, bundles, "cfg", files)
    assert sh(runtime, "cfg", "cat /run/configs/app.conf /etc/app/motd") == "port = 8080\nwelcome\n"
    stats = sh(runtime, "cfg", "stat -c '%a %u %g' /run/configs/app.conf /etc/app/motd /run/configs/private")
    assert stats.splitlines() == ["640 0 65534", "444 65534 0", "400 65534 65534"]
    assert runtime.exec("cfg", ["cat", "/run/configs/private"]).exit_code != 0    # mode enforced
    table = sh(runtime, "cfg", "cat /proc/self/mounts").splitlines()
    mounts = {line.split()[1]: line.split() for line in table}
    for target in ("/run/configs", "/etc/app/motd"):
        fstype, opts = mounts[target][2], mounts[target][3].split(",")
        assert fstype == "tmpfs" and {"ro", "nosuid", "nodev", "noexec"} <= set(opts)
    res = runtime.exec("cfg", ["sh", "-c", "echo x > /run/configs/app.conf || echo x > /etc/app/motd"])
    assert res.exit_code != 0 and b"Read-only file system" in res.stderr


def test_secret_readable_inside_absent_everywhere_else(runtime: Any, bundles: Any, tmp_path: Path,
                                                       state_root: Path) -> None:
    value = f"s3cret-{uuid.uuid4().hex}".encode()
    key = b"-----BEGIN KEY-----\n" + uuid.uuid4().hex.encode() + b"\n-----END KEY-----\n"
    files = [FileSpec("/run/secrets/db", SecretValue(value), uid=0, gid=0, mode=0o400, secret=True),
             FileSpec("/etc/tls/key.pem", SecretValue(key), uid=1000, gid=0, mode=0o440, secret=True)]
    bundle = start(runtime, bundles, "sec", files)
    assert sh(runtime, "sec", "cat /run/secrets/db").encode() == value
    assert sh(runtime, "sec", "cat /etc/tls/key.pem").encode() == key
    assert sh(runtime, "sec", "stat -c '%a %u %g' /etc/tls/key.pem") == "440 1000 0\n"
    # nothing on disk: the whole test tree holds the state dir, the bundle and its overlay upper dir
    assert (bundle / "upper").is_dir() and (state_root / "containers" / "sec").is_dir()
    for secret in (value, key.split(b"\n")[1]):
        assert scan(tmp_path, secret) == []
    cdir = state_root / "containers" / "sec"
    assert os.listdir(cdir / filemounts.STAGING) == []          # an empty mount point on the host
    assert tmpfs_mounts_of(tmp_path) == []                      # the tmpfs is in the container only
    assert os.path.getsize(bundle / "upper" / "etc" / "tls" / "key.pem") == 0   # a bind target only
    # the state, the log, reprs and errors
    st = runtime.state("sec")
    assert value.decode() not in repr(st) and value.decode() not in repr(files)
    assert all(value.decode() not in line.text for line in runtime.logs("sec"))
    with pytest.raises(RuntimeFailure) as err:
        runtime.update_files("sec", [FileSpec("/run/other", SecretValue(value), secret=True)])
    assert value.decode() not in str(err.value) and "/run/other" in str(err.value)
    runtime.delete("sec", force=True)
    assert not cdir.exists() and tmpfs_mounts_of(tmp_path) == []
    assert scan(tmp_path, value) == []


def test_rotation_reaches_running_container(runtime: Any, bundles: Any) -> None:
    files = [FileSpec("/run/secrets/token", SecretValue(b"token-v1"), mode=0o400, secret=True),
             FileSpec("/run/configs/level", b"info\n", mode=0o444),
             FileSpec("/etc/app.conf", b"color = red\n", uid=0, gid=0, mode=0o444)]
    start(runtime, bundles, "rot", files)
    inode_before = sh(runtime, "rot", "stat -c %i /etc/app.conf")
    new = [FileSpec("/run/secrets/token", SecretValue(b"token-v2-longer"), mode=0o400, secret=True),
           FileSpec("/run/configs/level", b"info\n", mode=0o444),                 # unchanged
           FileSpec("/etc/app.conf", b"color = blue\n", uid=0, gid=0, mode=0o444)]
    t0 = time.monotonic()
    changed = runtime.update_files("rot", new)
    seen = sh(runtime, "rot", "cat /run/secrets/token; echo; cat /etc/app.conf /run/configs/level")
    elapsed = time.monotonic() - t0
    assert changed == ["/etc/app.conf", "/run/secrets/token"]
    assert seen == "token-v2-longer\ncolor = blue\ninfo\n"
    assert elapsed < 2.0, elapsed
    assert sh(runtime, "rot", "stat -c %i /etc/app.conf") == inode_before      # in place: same inode
    assert sh(runtime, "rot", "stat -c '%a %u' /run/secrets/token") == "400 0\n"
    assert runtime.update_files("rot", new) == []                             # nothing to do twice
    print(f"rotation: update_files + exec cat = {elapsed * 1000:.1f} ms")


def test_rotation_seen_by_a_reader_loop_within_2s(runtime: Any, bundles: Any) -> None:
    files = [FileSpec("/run/configs/flag", b"old\n")]
    bundle, rootfs = bundles.make(["sh", "-c", "while :; do cat /run/configs/flag; sleep 0.02; done"])
    runtime.create("loop", bundle, rootfs, files=files)
    runtime.start("loop")
    t0 = time.monotonic()
    runtime.update_files("loop", [FileSpec("/run/configs/flag", b"new\n")])
    while time.monotonic() - t0 < 2.0:
        if any(line.text == "new" and line.time >= time.time() - 5 for line in runtime.logs("loop")):
            break
        time.sleep(0.01)
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0
    print(f"rotation seen by an in-container reader after {elapsed * 1000:.1f} ms")


def test_user_namespace_owner_translated_on_rotation(runtime: Any, bundles: Any) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["namespaces"].append({"type": "user"})
        for key in ("uidMappings", "gidMappings"):
            spec["linux"][key] = [{"containerID": 0, "hostID": 0, "size": 1},
                                  {"containerID": 1, "hostID": 200001, "size": 65535}]
    files = [FileSpec("/run/secrets/k", SecretValue(b"one"), uid=101, gid=102, mode=0o444, secret=True),
             FileSpec("/etc/k", SecretValue(b"one"), uid=101, gid=102, mode=0o444, secret=True)]
    start(runtime, bundles, "uns", files, edit)
    assert sh(runtime, "uns", "stat -c '%u %g' /run/secrets/k /etc/k") == "101 102\n101 102\n"
    runtime.update_files("uns", [FileSpec(f.target, SecretValue(b"two"), 101, 102, 0o444, True)
                                 for f in files])
    assert sh(runtime, "uns", "cat /run/secrets/k /etc/k") == "twotwo"
    assert sh(runtime, "uns", "stat -c '%u %g' /run/secrets/k /etc/k") == "101 102\n101 102\n"


def test_bad_files_refused_before_anything_is_made(runtime: Any, bundles: Any, state_root: Path) -> None:
    bundle, rootfs = bundles.make(["true"])
    for bad in ([FileSpec("relative", b"x")], [FileSpec("/a/../../etc/x", b"x")],
                [FileSpec("/x", b"1"), FileSpec("/x", b"2")], [FileSpec("/x", b"1", mode=0o17777)]):
        with pytest.raises(RuntimeFailure):
            runtime.create("bad", bundle, rootfs, files=bad)
    assert not (state_root / "containers" / "bad").exists()


def test_failed_files_step_is_reported_and_undone(runtime: Any, bundles: Any, state_root: Path) -> None:
    bundle, rootfs = bundles.make(["true"])
    value = f"never-shown-{uuid.uuid4().hex}"
    with pytest.raises(RuntimeFailure) as err:      # /etc/passwd is a file: no directory below it
        runtime.create("badstep", bundle, rootfs,
                       files=[FileSpec("/etc/passwd/x", SecretValue(value.encode()), secret=True)])
    assert "'files'" in str(err.value) and "/etc/passwd" in str(err.value) and value not in str(err.value)
    assert not (state_root / "containers" / "badstep").exists()


def test_files_refused_without_a_mount_namespace_of_its_own(runtime: Any, bundles: Any) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "mount"]
    bundle, rootfs = bundles.make(["true"], edit)
    with pytest.raises(RuntimeFailure, match="new mount namespace"):
        runtime.create("nomnt", bundle, rootfs, files=[FileSpec("/run/configs/a", b"a")])


def test_restart_replays_rotated_files_from_memory(runtime: Any, bundles: Any, tmp_path: Path) -> None:
    from orchestrator.runtime.linux import restart

    def edit(spec: dict[str, Any]) -> None:
        spec["annotations"] = {restart.POLICY: "always", restart.BACKOFF_INITIAL: "0.05"}
    v1, v2 = f"first-{uuid.uuid4().hex}".encode(), f"second-{uuid.uuid4().hex}".encode()
    start(runtime, bundles, "rs", [FileSpec("/run/secrets/t", SecretValue(v1), secret=True)], edit)
    runtime.update_files("rs", [FileSpec("/run/secrets/t", SecretValue(v2), secret=True)])
    first_pid = runtime.state("rs").pid
    os.kill(first_pid, 9)          # a crash, not a stop request (runtime.kill would end the restarts)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = runtime.state("rs")
        if st.pid != first_pid and st.status.value == "running":
            break
        time.sleep(0.05)
    assert runtime.state("rs").pid != first_pid
    assert sh(runtime, "rs", "cat /run/secrets/t").encode() == v2      # the rotated content, not v1
    assert scan(tmp_path, v1) == [] and scan(tmp_path, v2) == []
