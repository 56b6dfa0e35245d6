"""One bundle under our runtime and under Debian's runc: the container must see the same world."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runtime.base import Status
from orchestrator.runtime.runc import RuncRuntime

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")]

PROBE = ("grep -E '^(Uid|Gid|Groups|NoNewPrivs|Seccomp|Cap(Inh|Prm|Eff|Bnd|Amb)):' /proc/self/status; "
         "echo ---; cut -d' ' -f2,3 /proc/self/mounts | sort; echo ---; hostname; echo ---; "
         "for f in /dev/* /dev/pts/*; do stat -c '%A %u:%g %t:%T %N' $f; done; echo ---; "
         "ls /proc/1/ns | sort")


def probe(rt: Any, bundles: Any, cid: str) -> list[str]:
    bundle, rootfs = bundles.make(["sh", "-c", PROBE])
    rt.create(cid, bundle, rootfs)
    rt.start(cid)
    assert rt.wait(cid, timeout=10).status == Status.STOPPED
    lines = [line.text for line in rt.logs(cid) if line.stream == "stdout"]
    rt.delete(cid)
    return lines


def test_same_view_as_runc(runtime: Any, bundles: Any, state_root: Path) -> None:
    ours = probe(runtime, bundles, "diff-native")
    runc = RuncRuntime(state_root / "runc")
    try:
        theirs = probe(runc, bundles, "diff-runc")
    finally:
        for st in runc.list():
            runc.delete(st.id, force=True)
    assert ours == theirs
    assert "ctr" in ours and "/ overlay" in ours
