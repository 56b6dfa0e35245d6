"""Exec timeouts and output caps on the real kernel: a hung process is killed at its deadline and leaves
nothing behind; a hung exec health probe is reported as a failed probe, not waited on."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rootfs_kit import pids_whose_cmdline

from orchestrator.errors import ExecTimeout
from orchestrator.manifest.model import Healthcheck
from orchestrator.reconcile.health import Prober
from orchestrator.runtime.linux.procio import OUTPUT_CAP

pytestmark = pytest.mark.root


def processes_with_cmdline(cmdline: bytes) -> list[int]:
    return pids_whose_cmdline(lambda raw: raw == cmdline)


def started(runtime: Any, bundles: Any, cid: str) -> None:
    bundle, rootfs = bundles.make(["sleep", "30"])
    runtime.create(cid, bundle, rootfs)
    runtime.start(cid)


def test_hung_exec_is_killed_at_its_timeout(runtime: Any, bundles: Any) -> None:
    started(runtime, bundles, "hang")
    t0 = time.monotonic()
    with pytest.raises(ExecTimeout, match=r"timed out after 0\.5s"):
        runtime.exec("hang", ["sleep", "100"], timeout=0.5)
    assert time.monotonic() - t0 < 1.2
    assert processes_with_cmdline(b"sleep\x00100\x00") == []
    # the container itself is untouched, and an exec within its timeout still works
    assert runtime.exec("hang", ["echo", "ok"], timeout=5).stdout == b"ok\n"
    runtime.delete("hang", force=True)


def test_exec_output_is_capped(runtime: Any, bundles: Any) -> None:
    started(runtime, bundles, "chatty")
    res = runtime.exec("chatty", ["sh", "-c", "head -c 3000000 /dev/zero; head -c 10 /dev/zero >&2"],
                       timeout=10)
    assert res.exit_code == 0                 # the rest was read and dropped: the writer never blocked
    assert len(res.stdout) == OUTPUT_CAP and len(res.stderr) == 10
    runtime.delete("chatty", force=True)


def test_hung_exec_healthcheck_is_reported_failing(runtime: Any, bundles: Any) -> None:
    started(runtime, bundles, "probe")
    hc = Healthcheck(kind="exec", exec=("sleep", "100"), timeout_s=1.0)
    t0 = time.monotonic()
    ok, output = Prober(runtime).probe("probe", runtime.state("probe"), hc)
    assert (ok, output) == (False, "exec probe timed out after 1s")
    assert time.monotonic() - t0 < 2.0
    assert processes_with_cmdline(b"sleep\x00100\x00") == []
    runtime.delete("probe", force=True)
