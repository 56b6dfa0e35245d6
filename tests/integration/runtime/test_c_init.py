"""The C container init of warm spares (``init.c``, run from ``initplan``'s ops) against the Python init.

Every runtime test already runs with both (the ``runtime`` fixture's two params); here the same failing
spec goes through each and the error a user sees must read the same, step name included, and a
request the ops cannot express takes the ordinary path.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rootfs_kit

from orchestrator.errors import RuntimeFailure

pytestmark = pytest.mark.root


@pytest.fixture
def both(state_root: Path) -> Iterator[dict[str, Any]]:
    """A C-init and a Python-init runtime, side by side."""
    from orchestrator.runtime.linux.native import LinuxRuntime
    parent = f"orchestrator-rt-{uuid.uuid4().hex[:10]}"
    rts = {kind: LinuxRuntime(state_root / kind, cgroup_parent=parent, c_init=kind == "c")
           for kind in ("c", "py")}
    yield rts
    for rt in rts.values():
        for st in rt.list():
            rt.delete(st.id, force=True)
        rt.close()
    rootfs_kit.remove_cgroup_parent(parent)


def _bind(spec: dict[str, Any]) -> None:
    spec["mounts"].append({"destination": "/mnt/x", "type": "bind", "source": "/nonexistent-c-init-test",
                           "options": ["rbind"]})


def _fstype(spec: dict[str, Any]) -> None:
    spec["mounts"].append({"destination": "/mnt/y", "type": "nosuchfs", "source": "none"})


def _cwd(spec: dict[str, Any]) -> None:
    spec["process"]["cwd"] = "/no/such/dir"


def _command(spec: dict[str, Any]) -> None:
    spec["process"]["args"] = ["no-such-command"]


def _sysctl(spec: dict[str, Any]) -> None:
    spec["linux"]["sysctl"] = {"net.no_such_key": "1"}


def _magic(spec: dict[str, Any]) -> None:
    spec["process"]["args"] = ["/proc/self/exe"]


def _rlimit(spec: dict[str, Any]) -> None:
    spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024}]


def _file_mount_point(spec: dict[str, Any]) -> None:
    spec["mounts"].append({"destination": "/bin/busybox", "type": "tmpfs", "source": "tmpfs"})


def _quoted_path(spec: dict[str, Any]) -> None:
    spec["mounts"].append({"destination": "/x\x01'\"y/" + "\u00e9" * 200 + "/z", "type": "nosuchfs",
                           "source": "none"})


@pytest.mark.parametrize("edit", [_bind, _fstype, _cwd, _command, _sysctl, _magic, _rlimit, _file_mount_point,
                                  _quoted_path],
                         ids=["bind-source", "fstype", "cwd", "command", "sysctl", "magic-link", "rlimit",
                              "file-mount-point", "quoted-path"])
def test_a_failed_step_reads_the_same_from_both_inits(both: dict[str, Any], bundles: Any,
                                                      edit: Callable[[dict[str, Any]], None]) -> None:
    seen = {}
    for kind, rt in both.items():
        bundle, rootfs = bundles.make(["true"], edit)
        with pytest.raises(RuntimeFailure) as info:
            rt.create("bad", bundle, rootfs)
        seen[kind] = (str(info.value).replace(str(bundle), "BUNDLE"), info.value.op, info.value.errno)
        assert rt.list() == []                          # nothing left of the failed create
    assert seen["c"] == seen["py"]
    assert "container init failed at step" in seen["c"][0]


def test_the_container_sees_the_same_from_both_inits(both: dict[str, Any], bundles: Any) -> None:
    """What the container sees of itself: credentials, capabilities, signals, limits, mounts, devices."""
    probe = ("grep -E '^(Uid|Gid|Groups|Cap|NoNewPrivs|Seccomp|Sig(Blk|Ign))' /proc/self/status; "
             "hostname; umask; pwd; ulimit -n; cat /proc/self/oom_score_adj; cat /proc/mounts; ls -ln /dev; "
             "env | sort")

    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["user"] = {"uid": 65534, "gid": 65534, "additionalGids": [5, 7], "umask": 0o027}
        spec["process"]["cwd"] = "/tmp"
        spec["process"]["oomScoreAdj"] = 123
        spec["process"]["env"] += ["A=1", "A=2", "B=x=y"]
        spec["process"]["capabilities"]["ambient"] = ["CAP_KILL"]
        spec["process"]["capabilities"]["inheritable"] = ["CAP_KILL"]
        spec["linux"]["sysctl"] = {"net.ipv4.ip_unprivileged_port_start": "80"}
        spec["domainname"] = "example.test"
    seen = {}
    for kind, rt in both.items():
        bundle, rootfs = bundles.make(["sh", "-c", probe], edit)
        rt.create("same", bundle, rootfs)
        rt.start("same")
        st = rt.wait("same", timeout=20)
        assert st.exit_code == 0, list(rt.logs("same"))
        seen[kind] = [ln.text.replace(str(bundle), "BUNDLE").replace(str(bundles.lower), "LOWER")
                      for ln in rt.logs("same")]
        rt.delete("same", force=True)
    assert seen["c"] == seen["py"]
    assert "Uid:\t65534\t65534\t65534\t65534" in seen["c"] and "0027" in seen["c"]


def test_a_huge_report_comes_back_cut_short_but_whole(both: dict[str, Any], bundles: Any) -> None:
    """A destination of thousands of control characters and quotes: the C monitor's report is capped
    per field (never past its buffer), still valid JSON, still naming the step."""
    def edit(spec: dict[str, Any]) -> None:
        spec["mounts"].append({"destination": "/" + "\x01'\"" * 1500, "type": "tmpfs", "source": "tmpfs"})
    bundle, rootfs = bundles.make(["true"], edit)
    with pytest.raises(RuntimeFailure, match=r"^container init failed at step 'mount /\\x01") as info:
        both["c"].create("huge", bundle, rootfs)
    assert info.value.errno == 36                       # ENAMETOOLONG, as from the Python init
    assert both["c"].list() == []


def test_empty_path_entries_are_the_working_directory(both: dict[str, Any], bundles: Any) -> None:
    """PATH="/nowhere::" searches the cwd for a bare command name, as execvpe does, in both inits."""
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["env"] = ["PATH=/nowhere::"]
        spec["process"]["cwd"] = "/bin"
    for kind, rt in both.items():
        bundle, rootfs = bundles.make(["true"], edit)
        rt.create("cwdpath", bundle, rootfs)
        rt.start("cwdpath")
        assert rt.wait("cwdpath", timeout=20).exit_code == 0, kind
        rt.delete("cwdpath", force=True)


def test_a_command_line_too_long_for_the_c_init_takes_the_python_one(both: dict[str, Any],
                                                                     bundles: Any) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["env"] += [f"V{i}=x" for i in range(5000)]
    bundle, rootfs = bundles.make(["sh", "-c", "echo $V4999"], edit)
    rt = both["c"]
    rt.create("longenv", bundle, rootfs)
    rt.start("longenv")
    assert rt.wait("longenv", timeout=20).exit_code == 0
    assert [ln.text for ln in rt.logs("longenv")] == ["x"]


def test_a_request_the_ops_cannot_express_takes_the_ordinary_path(both: dict[str, Any], bundles: Any) -> None:
    """An rlimit this Python does not know: initplan gives up, the Python init reports it by step."""
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["rlimits"] = [{"type": "RLIMIT_NO_SUCH", "hard": 1, "soft": 1}]
    bundle, rootfs = bundles.make(["true"], edit)
    with pytest.raises(RuntimeFailure, match="rlimits"):
        both["c"].create("rl", bundle, rootfs)


def test_restart_json_keeps_nothing_of_the_create_s_go_pipe(both: dict[str, Any], bundles: Any,
                                                             state_root: Path) -> None:
    """A restart replays restart.json with no caller around: no "go" key, no "go_fd" there."""
    import json

    from orchestrator.runtime.linux import restart, statedir

    def edit(spec: dict[str, Any]) -> None:
        spec["annotations"] = {restart.POLICY: "on-failure"}
    for kind, rt in both.items():
        bundle, rootfs = bundles.make(["sleep", "30"], edit)
        rt.create("policy", bundle, rootfs)
        saved = json.loads((state_root / kind / "policy" / statedir.RESTART_REQ).read_text())
        assert "go" not in saved and "go_fd" not in saved and saved["op"] == "create", kind
        rt.delete("policy", force=True)


def test_a_create_failing_after_the_monitor_reported_leaves_no_process(both: dict[str, Any], bundles: Any,
                                                                        monkeypatch: pytest.MonkeyPatch
                                                                        ) -> None:
    """state.json cannot be written (a full disk): the init and the monitor are killed before the
    cgroup and the state dir go (the fixture's cgroup clean-up fails on anything left inside)."""
    from orchestrator.runtime.linux import native, statedir
    real = statedir.write_json

    def full_disk(path: Any, data: dict[str, Any]) -> None:
        if str(path).endswith("/" + statedir.STATE):
            raise OSError(28, "No space left on device", str(path))
        real(path, data)
    for kind, rt in both.items():
        monkeypatch.setattr(native.sd, "write_json", full_disk)
        bundle, rootfs = bundles.make(["sleep", "30"])
        # the undo kills before the cgroup goes: a live init would make its rmdir fail (EBUSY) and
        # that error would replace this one
        with pytest.raises(OSError, match="No space left"):
            rt.create("late", bundle, rootfs)
        monkeypatch.undo()
        assert rt.list() == [], kind
        def naming_its_state_dir(raw: bytes, cdir: bytes = str(rt.state_dir / "late").encode()) -> bool:
            return cdir in raw                           # its supervisor's argv does
        deadline = time.monotonic() + 5                  # SIGKILLed: gone once the kernel has reaped them
        while time.monotonic() < deadline and rootfs_kit.pids_whose_cmdline(naming_its_state_dir):
            time.sleep(0.01)
        assert rootfs_kit.pids_whose_cmdline(naming_its_state_dir) == [], kind

