"""``quickcheck`` against jsonschema: it may say "not sure" (False) for a valid spec, never "valid" for
an invalid one. Specs: the ones our bundle builder and the test suites write, and random mutations of
them (hypothesis): wrong types, out-of-range numbers, removed required keys, unknown keys, odd values."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.runtime.linux import quickcheck, seccomp_profiles, specschema
from orchestrator.runtime.linux.spec import SCHEMA_DIR

FULL: dict[str, Any] = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False, "user": {"uid": 0, "gid": 0, "additionalGids": [1, 2]}, "args": ["sh", "-c", "x"],
        "env": ["PATH=/bin", "A=b"], "cwd": "/", "noNewPrivileges": True, "oomScoreAdj": 100,
        "capabilities": {k: ["CAP_KILL", "CAP_CHOWN"] for k in ("bounding", "effective", "permitted")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "h",
    "annotations": {"org.example/a": "b"},
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
        {"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind", "ro"]},
    ],
    "linux": {
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")]
        + [{"type": "user"}],
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "resources": {"memory": {"limit": 1 << 26, "swap": 1 << 27}, "pids": {"limit": 64},
                      "cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0-1"},
                      "blockIO": {"weight": 300},
                      "devices": [{"allow": False, "access": "rwm"},
                                  {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]},
        "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438}],
        "sysctl": {"net.ipv4.ip_forward": "1"},
        "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"],
        "cgroupsPath": "a/b", "rootfsPropagation": "rprivate",
    },
}


def _schema() -> Any:
    return specschema._build_validators(SCHEMA_DIR)[0].schema


def _valid(spec: Any) -> bool:
    return not list(jsonschema.Draft4Validator(_schema()).iter_errors(spec))


CHECK = quickcheck.compile_schema(_schema())


def test_good_specs_are_valid_for_both() -> None:
    with_seccomp = copy.deepcopy(FULL)
    with_seccomp["linux"]["seccomp"] = seccomp_profiles.profile_to_oci(seccomp_profiles.default_profile(),
                                                                       ["CAP_KILL"])
    for spec in (FULL, with_seccomp):
        assert _valid(spec) and CHECK(spec)


@pytest.mark.parametrize("path, value", [
    (("process", "user", "uid"), -1), (("process", "user", "uid"), 1.0), (("process", "user", "uid"), True),
    (("process", "args"), "sh"), (("process", "oomScoreAdj"), "5"), (("root", "readonly"), "yes"),
    (("linux", "namespaces"), [{"type": "nope"}]), (("mounts",), [{"type": "proc"}]),
    (("linux", "resources", "devices"), [{"allow": 1}]), (("hostname",), 7),
    (("linux", "uidMappings"), [{"containerID": 0, "hostID": 1}]),
])
def test_invalid_specs_are_refused_by_both(path: tuple[str, ...], value: Any) -> None:
    spec = copy.deepcopy(FULL)
    node = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert not _valid(spec) and not CHECK(spec)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(FULL)
ODD = st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64), st.floats(allow_nan=False),
                st.text(max_size=8), st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), st.sampled_from(["set", "delete", "extra"]), ODD),
                min_size=1, max_size=3))
def test_never_valid_where_jsonschema_is_not(edits: list[tuple[tuple[Any, ...], str, Any]]) -> None:
    spec = copy.deepcopy(FULL)
    for path, how, value in edits:
        node: Any = spec
        try:
            for key in path[:-1]:
                node = node[key]
            if how == "set":
                node[path[-1]] = value
            elif how == "delete":
                del node[path[-1]]
            elif isinstance(node, dict):
                node["unexpected" if isinstance(path[-1], int) else f"{path[-1]}X"] = value
        except (KeyError, IndexError, TypeError):
            continue
    spec = json.loads(json.dumps(spec))          # JSON values only, as a config.json gives
    if CHECK(spec):
        assert _valid(spec), f"quickcheck accepted what jsonschema refuses: {spec}"


def test_schema_files_are_the_vendored_ones() -> None:
    assert (Path(SCHEMA_DIR) / "config-schema.json").exists()


@pytest.mark.parametrize("schema, value", [
    ({"minItems": 1.5}, [0]),                                     # not an integer: not modelled
    ({"$schema": "http://json-schema.org/draft-03/schema#", "type": "integer"}, 1),   # another dialect
    ({"required": True}, {}),                                     # draft 3's boolean required
    ({"items": [{"type": "string"}]}, ["a"]),                     # the tuple form of items
    ({"exclusiveMinimum": True, "minimum": 1}, 2),                # unknown keyword
])
def test_what_it_does_not_model_is_never_valid(schema: dict[str, Any], value: Any) -> None:
    assert quickcheck.compile_schema(schema)(value) is False
