"""Pure mapping of OCI linux.resources to cgroup v1 / v2 writes, and the v1 -> v2 conversions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.linux.cgroups import (
    V1Features,
    V2Features,
    Write,
    blkio_weight_to_io_weight,
    compute_v1,
    compute_v2,
    shares_to_weight,
    swap_to_v2,
)

MiB = 1 << 20

FULL = {
    "memory": {"limit": 64 * MiB, "reservation": 32 * MiB, "swap": 128 * MiB},
    "cpu": {"shares": 1024, "quota": 20000, "period": 100000, "cpus": "0-1", "mems": "0"},
    "pids": {"limit": 100},
    "blockIO": {
        "weight": 500,
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
        "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 2097152}],
        "throttleReadIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}],
        "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 200}],
    },
    "devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "c", "major": 136, "access": "rw"},
    ],
}


@pytest.mark.parametrize(("shares", "weight"), [
    (0, 0), (1, 1), (2, 1), (1024, 100), (2000, 170), (262144, 10000), (10**7, 10000)])
def test_shares_to_weight_uses_the_quadratic_crun_runc_formula(shares: int, weight: int) -> None:
    assert shares_to_weight(shares) == weight


@given(st.integers(min_value=2, max_value=262143))
def test_shares_to_weight_is_monotonic_and_in_range(shares: int) -> None:
    assert 1 <= shares_to_weight(shares) <= shares_to_weight(shares + 1) <= 10000


def test_blkio_weight_conversion() -> None:
    assert [blkio_weight_to_io_weight(w) for w in (0, 10, 500, 1000)] == [0, 1, 4950, 10000]


def test_swap_to_v2() -> None:
    assert swap_to_v2(128 * MiB, 64 * MiB) == 64 * MiB
    assert swap_to_v2(0, 64 * MiB) == 0            # unset stays unset
    assert swap_to_v2(-1, 64 * MiB) == -1
    assert swap_to_v2(0, -1) == -1                 # unlimited memory: unlimited swap
    with pytest.raises(RuntimeFailure, match="below the memory limit"):
        swap_to_v2(32 * MiB, 64 * MiB)
    with pytest.raises(RuntimeFailure, match="without a memory limit"):
        swap_to_v2(64 * MiB, 0)


def test_v2_mapping_of_every_resource() -> None:
    out = compute_v2(FULL, V2Features(swap=True, io_weight_file="io.weight"))
    assert out.writes == [
        Write("", "memory.max", str(64 * MiB)),
        Write("", "memory.swap.max", str(64 * MiB)),
        Write("", "memory.low", str(32 * MiB)),
        Write("", "cpu.weight", "100"),
        Write("", "cpu.max", "20000 100000"),
        Write("", "cpuset.cpus", "0-1"),
        Write("", "cpuset.mems", "0"),
        Write("", "pids.max", "100"),
        Write("", "io.weight", "4950"),
        Write("", "io.max", "8:0 rbps=1048576 wbps=2097152 wiops=200"),
        Write("", "io.max", "8:16 riops=100"),
    ]
    assert out.unenforced == []
    assert out.devices is not None and [r.v1_line() for r in out.devices] == ["a", "c 1:3 rwm", "c 136:* rw"]
    assert compute_v2({}).devices is None                  # no "devices" key: no filter at all


def test_v2_bfq_weight_keeps_the_v1_value_and_unlimited_spellings() -> None:
    out = compute_v2({"memory": {"limit": -1}, "cpu": {"quota": -1, "period": 50000},
                      "blockIO": {"weight": 300,
                                  "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 0}]}},
                     V2Features(swap=True, io_weight_file="io.bfq.weight"))
    assert out.writes == [
        Write("", "memory.max", "max"), Write("", "memory.swap.max", "max"),
        Write("", "cpu.max", "max 50000"), Write("", "pids.max", "max"),
        Write("", "io.bfq.weight", "300"), Write("", "io.max", "8:0 wbps=max")]


def test_v1_mapping_of_every_resource() -> None:
    out = compute_v1(FULL, V1Features(memsw=True, blkio_weight_file="blkio.bfq.weight",
                                      current_memory_limit=2**63 - 4096))
    assert out.writes == [
        # lowering from unlimited: limit before memsw (memsw must stay >= limit at every instant)
        Write("memory", "memory.limit_in_bytes", str(64 * MiB)),
        Write("memory", "memory.memsw.limit_in_bytes", str(128 * MiB)),
        Write("memory", "memory.soft_limit_in_bytes", str(32 * MiB)),
        Write("cpu", "cpu.shares", "1024"),
        Write("cpu", "cpu.cfs_period_us", "100000", retry_einval=True),
        Write("cpu", "cpu.cfs_quota_us", "20000"),
        Write("cpuset", "cpuset.cpus", "0-1"),
        Write("cpuset", "cpuset.mems", "0"),
        Write("pids", "pids.max", "100"),
        Write("blkio", "blkio.bfq.weight", "500"),
        Write("blkio", "blkio.throttle.read_bps_device", "8:0 1048576"),
        Write("blkio", "blkio.throttle.write_bps_device", "8:0 2097152"),
        Write("blkio", "blkio.throttle.read_iops_device", "8:16 100"),
        Write("blkio", "blkio.throttle.write_iops_device", "8:0 200"),
        Write("devices", "devices.deny", "a"),
        Write("devices", "devices.allow", "c 1:3 rwm"),
        Write("devices", "devices.allow", "c 136:* rw"),
    ]
    assert out.unenforced == []


def test_v1_raising_memory_writes_memsw_first() -> None:
    out = compute_v1({"memory": {"limit": 256 * MiB, "swap": 512 * MiB}},
                     V1Features(current_memory_limit=64 * MiB))
    assert [w.file for w in out.writes[:2]] == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]


def test_v1_allowlist_without_deny_all_gets_one_and_swap_needs_memsw() -> None:
    out = compute_v1({"memory": {"limit": 64 * MiB, "swap": 64 * MiB},
                      "devices": [{"allow": True, "type": "b", "major": 7, "minor": 0, "access": "r"}]},
                     V1Features(memsw=False))
    assert [(w.file, w.value) for w in out.writes if w.controller == "devices"] == [
        ("devices.deny", "a"), ("devices.allow", "b 7:0 r")]
    assert not any(w.file.startswith("memory.memsw") for w in out.writes)
    assert out.unenforced and "swap" in out.unenforced[0]


def test_partial_update_touches_only_given_keys() -> None:
    out = compute_v1({"cpu": {"quota": 50000}}, always_pids=False)
    assert out.writes == [Write("cpu", "cpu.cfs_quota_us", "50000")]
    assert compute_v2({"pids": {"limit": 7}}, always_pids=False).writes == [Write("", "pids.max", "7")]
    assert compute_v2({}, always_pids=True).writes == [Write("", "pids.max", "max")]


def test_oci_unified_is_written_raw_on_v2_only() -> None:
    res = {"unified": {"memory.high": "50000000", "io.latency": "8:0 target=10"}}
    assert compute_v2(res, always_pids=False).writes == [
        Write("", "memory.high", "50000000"), Write("", "io.latency", "8:0 target=10")]
    v1 = compute_v1(res, always_pids=False)
    assert v1.writes == [] and "unified" in v1.unenforced[0]
    for bad in ({"../x": "1"}, {"cgroup.procs": "1"}, {"memory.high": 5}):
        with pytest.raises(RuntimeFailure, match="unified"):
            compute_v2({"unified": bad})


@pytest.mark.parametrize("bad", [
    {"memory": {"limit": "64m"}},
    {"cpu": []},
    {"devices": [{"allow": "yes"}]},
    {"devices": [{"allow": True, "type": "x"}]},
    {"devices": [{"allow": True, "type": "c", "access": "rwx"}]},
    {"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": -5}]}},
])
def test_invalid_values_are_typed_errors_naming_the_field(bad: dict[str, object]) -> None:
    with pytest.raises(RuntimeFailure) as info:
        compute_v1(bad)
    assert info.value.op == "cgroup compute"
    assert info.value.path
