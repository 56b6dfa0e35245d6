"""Filesystem escapes from a default container: double chroot, device nodes, a read-only rootfs, setuid
binaries under no_new_privs, and bind-mount volume targets that are symlinks to a host directory.

Host-side targets are only ever files and directories of the session's tmp dir: ``host_marker`` (a file
no container may see) and ``host_dir`` (what the rootfs symlinks /evil, /evilrel and /evilparent point
at; it must stay untouched and never become a mount point on the host)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from escapekit import PROBE, PROBE_SUID, Escape, errnos, parse

from orchestrator.runtime.linux import capabilities
from orchestrator.runtime.linux.security_defaults import DEFAULT_CAPABILITIES

pytestmark = pytest.mark.root


def host_mounts_mentioning(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(path) in line]


def test_double_chroot_stays_inside(esc: Escape, tmp_path: Path) -> None:
    st, out, err = esc.run(tmp_path, esc.config(esc.service([PROBE, "chroot", str(esc.host_marker)])))
    assert st.exit_code == 0, err
    got = errnos(out)
    # CAP_SYS_CHROOT is a default capability: the chroots themselves succeed, as under Docker...
    assert got["chroot_jail"] == got["chroot_dot"] == got["chroot_x"] == got["chroot_dot2"] == 0, got
    # ...but "." after climbing out is still the container's root, never the host's
    assert got["stat_host_marker"] == got["stat_host_marker2"] == errno.ENOENT, got
    assert got["stat_own_probe"] == got["stat_own_probe2"] == 0, got


def test_mknod_allowed_but_host_devices_cannot_be_opened(esc: Escape, tmp_path: Path) -> None:
    dev = os.stat("/").st_dev            # the host's root filesystem's block device
    st, out, err = esc.run(tmp_path, esc.config(esc.service(
        [PROBE, "mknod", str(os.major(dev)), str(os.minor(dev))])))
    assert st.exit_code == 0, err
    got = errnos(out)
    # Docker's default: CAP_MKNOD plus the devices cgroup's "c *:* m" and "b *:* m" rules
    assert got["mknod_char_mem"] == 0 and got["mknod_block_host"] == 0, got
    # opening them is what the devices cgroup refuses
    assert got["open_char_mem"] == errno.EPERM, got
    assert got["open_block_host"] == errno.EPERM, got
    assert got["open_dev_null"] == 0, got


def test_read_only_rootfs_refuses_writes_and_remount(esc: Escape, tmp_path: Path) -> None:
    config = esc.config(esc.service([PROBE, "rofs"], security={"readOnlyRootfs": True}))
    assert config["root"]["readonly"] is True
    st, out, err = esc.run(tmp_path, config)
    assert st.exit_code == 0, err
    got = errnos(out)
    assert got == {"create_file": errno.EROFS, "mkdir": errno.EROFS, "unlink": errno.EROFS,
                   "remount_rw": errno.EPERM}
    uppers = [p for p in tmp_path.glob("bundle*/upper")]
    assert uppers and not [f for p in uppers for f in p.rglob("*")]     # nothing reached the upper dir


def _ident(esc: Escape, tmp_path: Path, **security: object) -> dict[str, str]:
    svc = esc.service([PROBE_SUID, "ident"], user="1000:1000", security=security)
    st, out, err = esc.run(tmp_path, esc.config(svc))
    assert st.exit_code == 0, err
    return {k.rstrip(":"): v.strip() for k, v in parse([ln.replace("\t", " ") for ln in out]).items()}


def test_setuid_binary_gains_nothing_under_no_new_privs(esc: Escape, tmp_path: Path) -> None:
    got = _ident(esc, tmp_path)
    assert got["uids"] == "1000 1000 1000"
    assert got["NoNewPrivs"] == "1"
    assert int(got["CapEff"], 16) == 0 and int(got["CapPrm"], 16) == 0
    # the control: with no_new_privs off the same binary does become root (so the check above is real)
    control = _ident(esc, tmp_path, noNewPrivileges=False)
    assert control["uids"] == "1000 0 0"
    assert int(control["CapEff"], 16) == capabilities.to_mask(DEFAULT_CAPABILITIES)


@pytest.mark.parametrize("target", ["/evil", "/evilrel", "/evilparent/hostdir"])
def test_symlinked_volume_target_mounts_inside_the_root(esc: Escape, tmp_path: Path, target: str) -> None:
    source = tmp_path / "volume"
    source.mkdir()
    (source / "volfile").write_text("from the volume\n")
    before = sorted(os.listdir(esc.host_dir))
    mounts_before = host_mounts_mentioning(esc.host_dir)
    svc = esc.service(["sleep", "60"], volumes=[{"type": "bind", "source": str(source), "target": target}])
    cid = esc.create(tmp_path, esc.config(svc))
    esc.runtime.start(cid)
    inside = esc.runtime.exec(cid, ["sh", "-c", f"cat {target}/volfile; echo written > {target}/fromctr"])
    assert inside.exit_code == 0, inside.stderr
    assert inside.stdout == b"from the volume\n"      # mounted, at the symlink's target inside the root
    assert host_mounts_mentioning(esc.host_dir) == mounts_before
    assert sorted(os.listdir(esc.host_dir)) == before
    assert (source / "fromctr").read_text() == "written\n"
    esc.runtime.delete(cid, force=True)
    assert sorted(os.listdir(esc.host_dir)) == before == ["untouched"]


def test_read_only_volume_cannot_be_written_or_remounted(esc: Escape, tmp_path: Path) -> None:
    source = tmp_path / "rovolume"
    source.mkdir()
    (source / "keep").write_text("keep\n")
    script = ("echo x > /data/keep; echo write=$?; touch /data/new; echo create=$?;"
              " mount -o remount,rw,bind /data 2>/dev/null; echo remount=$?; cat /data/keep")
    svc = esc.service(["sh", "-c", script],
                      volumes=[{"type": "bind", "source": str(source), "target": "/data", "readOnly": True}])
    st, out, err = esc.run(tmp_path, esc.config(svc))
    assert st.exit_code == 0, err
    assert out == ["write=1", "create=1", "remount=255", "keep"] or \
        (out[0] != "write=0" and out[1] != "create=0" and out[2] != "remount=0" and out[3] == "keep"), out
    assert sorted(os.listdir(source)) == ["keep"] and (source / "keep").read_text() == "keep\n"


@pytest.mark.parametrize("workdir", ["/evil", "/evilrel", "/evilparent/hostdir"])
def test_symlinked_working_dir_stays_inside(esc: Escape, tmp_path: Path, workdir: str) -> None:
    """A working dir through the image's symlinks to a host path: resolved inside the root (there is no
    such directory there, so the runtime refuses to start) and never the host's directory."""
    from orchestrator.errors import RuntimeFailure
    svc = esc.service([PROBE, "cwd", str(esc.host_marker)], workingDir=workdir)
    try:
        _st, out, _err = esc.run(tmp_path, esc.config(svc))
    except RuntimeFailure as exc:
        assert exc.errno == errno.ENOENT, exc
        return
    got = errnos(out)
    assert got["stat_host_marker_relative"] == errno.ENOENT, out
    assert sorted(os.listdir(esc.host_dir)) == ["untouched"]


def test_exec_process_is_in_the_devices_cgroup(esc: Escape, tmp_path: Path) -> None:
    dev = os.stat("/").st_dev
    cid = esc.create(tmp_path, esc.config(esc.service(["sleep", "60"])))
    esc.runtime.start(cid)
    res = esc.runtime.exec(cid, [PROBE, "mknod", str(os.major(dev)), str(os.minor(dev))])
    assert res.exit_code == 0, res.stderr
    got = errnos(res.stdout.decode().splitlines())
    assert got["open_char_mem"] == errno.EPERM and got["open_block_host"] == errno.EPERM, got


def test_user_namespace_ids_are_unprivileged_on_the_host(esc: Escape, tmp_path: Path) -> None:
    """With a user namespace, container uid 1000 is host uid 201000: what it creates in a volume belongs to
    that uid, the host's files there are not its to change, and a setuid-root binary gains nothing.
    (Container root stays host root in this map: this host's "/" has mode 000, so a rootfs mounted by an
    unprivileged mapped root could not even be reached; see tests/integration/runtime.)"""
    source = tmp_path / "usernsvol"
    source.mkdir()
    (source / "hostfile").write_text("host\n")
    (source / "hostfile").chmod(0o644)
    source.chmod(0o777)
    ranges = [{"containerId": 0, "hostId": 0, "size": 1}, {"containerId": 1, "hostId": 200001, "size": 65535}]
    script = ("cat /proc/self/uid_map; touch /data/fromctr; echo x >> /data/hostfile; echo append=$?;"
              f" {PROBE_SUID} ident; exec {PROBE} syscalls")
    svc = esc.service(["sh", "-c", script], user="1000:1000",
                      security={"userns": {"uidMap": ranges, "gidMap": ranges}},
                      volumes=[{"type": "bind", "source": str(source), "target": "/data"}])
    config = esc.config(svc)
    assert {"type": "user"} in config["linux"]["namespaces"]
    st, out, err = esc.run(tmp_path, config)
    assert st.exit_code == 0, err
    assert [line.split() for line in out[:2]] == [["0", "0", "1"], ["1", "200001", "65535"]], out
    assert out[2] != "append=0", out
    assert (source / "fromctr").stat().st_uid == 201000
    assert (source / "hostfile").read_text() == "host\n"
    ident = {k.rstrip(":"): v.strip() for k, v in parse([ln.replace("\t", " ") for ln in out[3:]]).items()}
    assert ident["uids"] == "1000 1000 1000" and int(ident["CapEff"], 16) == 0, ident
    table = errnos([ln for ln in out if not ln.startswith(("Cap", "uids", "NoNewPrivs", "Seccomp"))][3:])
    assert {k for k, v in table.items() if v != errno.EPERM} == {"getpid"}, table
