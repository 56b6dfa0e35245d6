"""Pure parts of the native runtime: spec validation, mount options, namespace plans."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.linux import syscalls as sc
from orchestrator.runtime.linux.spec import load_bundle, namespace_plan, parse_mount_options, validate

GOOD: dict[str, Any] = {
    "ociVersion": "1.0.2",
    "process": {"args": ["sh"], "cwd": "/", "env": ["PATH=/bin"],
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}]},
    "root": {"path": "rootfs"},
    "hostname": "x",
    "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
    "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}]},
}


def edited(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(GOOD)
    for dotted, value in changes.items():
        node = spec
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return spec


def test_good_spec_has_no_problems() -> None:
    assert validate(GOOD) == []


@pytest.mark.parametrize(("changes", "expected"), [
    ({"process__args": []}, "process.args"),
    ({"process__cwd": "relative"}, "process.cwd"),
    ({"process__terminal": True}, "process.terminal"),
    ({"process__rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]}, "RLIMIT_BOGUS"),
    ({"mounts": [{"destination": "proc", "type": "proc", "source": "proc"}]}, "mounts[0].destination"),
    ({"linux__namespaces": [{"type": "pid"}, {"type": "pid"}]}, "duplicate namespace"),
    ({"linux__namespaces": [{"type": "pid"}]}, "hostname"),
    ({"linux__namespaces": [{"type": "user"}, {"type": "uts"}]}, "uidMappings"),
    ({"linux__uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}, "needs a user namespace"),
    ({"linux__namespaces": [{"type": "pid"}, {"type": "uts"}]}, "needs a new mount namespace"),
    ({"linux__namespaces": [{"type": "pid"}, {"type": "uts"}, {"type": "mount", "path": "/proc/1/ns/mnt"}]},
     "needs a new mount namespace"),
    ({"process__user": {"uid": -1, "gid": 0}}, "process.user.uid"),
    ({"process__user": {"uid": 4294967295, "gid": 0}}, "process.user.uid"),
    ({"process__user": {"uid": 0, "gid": 4294967295}}, "process.user.gid"),
    ({"process__user": {"uid": 0, "gid": 0, "additionalGids": [4294967295]}}, "additionalGids"),
    ({"root": {}}, "root"),
    ({"hooks": {"prestart": [{"path": "/bin/true"}]}}, "hooks"),
])
def test_named_checks(changes: dict[str, Any], expected: str) -> None:
    problems = validate(edited(**changes))
    assert any(expected in p for p in problems), problems


def test_schema_errors_name_the_json_path() -> None:
    problems = validate(edited(process__rlimits=[{"type": "RLIMIT_NOFILE", "soft": "x", "hard": 1}],
                               ociVersion=3))
    assert "ociVersion: 3 is not of type 'string'" in problems
    assert any(p.startswith("process.rlimits[0].soft:") for p in problems)


def test_load_bundle_resolves_root_and_reports_all(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(GOOD))
    assert load_bundle(tmp_path)["root"]["path"] == str(tmp_path / "rootfs")
    (tmp_path / "config.json").write_text(json.dumps(edited(process__args=[], process__cwd="x")))
    with pytest.raises(RuntimeFailure, match=r"process\.args.*process\.cwd|process\.cwd.*process\.args"):
        load_bundle(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RuntimeFailure, match="cannot read runtime spec"):
        load_bundle(tmp_path)


def test_mount_options() -> None:
    opts = parse_mount_options(["nosuid", "noexec", "mode=755", "size=64k", "rslave", "ro"])
    assert opts.flags == sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_RDONLY
    assert opts.propagation == sc.MS_SLAVE | sc.MS_REC
    assert opts.data == "mode=755,size=64k"
    assert not opts.is_bind
    rbind = parse_mount_options(["rbind", "ro", "rw"])
    assert rbind.is_bind and rbind.flags == sc.MS_BIND | sc.MS_REC


def test_namespace_plan_joins_user_first() -> None:
    spec = edited(linux__namespaces=[{"type": "network", "path": "/proc/1/ns/net"}, {"type": "pid"},
                                     {"type": "user", "path": "/proc/1/ns/user"}, {"type": "cgroup"}])
    plan = namespace_plan(spec)
    assert plan.new_flags == sc.CLONE_NEWPID | sc.CLONE_NEWCGROUP
    assert not plan.new_user
    assert plan.joins == ((sc.CLONE_NEWUSER, "/proc/1/ns/user"), (sc.CLONE_NEWNET, "/proc/1/ns/net"))
    assert namespace_plan(edited(linux__namespaces=[{"type": "user"}])).new_user
