"""A container process racing the runtime's own ``exec`` helper (runc CVE-2016-9962 class).

``exec`` forks a helper into the container's namespaces, which drops to the container's capabilities,
installs the seccomp filter and only then calls ``execve``. Between joining the pid namespace and
``execve`` that helper is the runtime's own (host) program: if it is dumpable, a root process of the
container (same uid, the same capabilities once they are dropped) can open its ``/proc/PID/exe`` (a
host binary), its descriptors (the exec status pipe: forged results) and its ``/proc/PID/mem``
read-write (code injection before the seccomp filter is installed). runc prevents this by making its
init non-dumpable until ``execve``. The probe (``escape_probe watch``) scans /proc in a tight loop and
reports the first such process it can open, with its descriptors and whether ``mem`` opens O_RDWR; it
never writes to anything it opens.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from escapekit import PROBE, Escape

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.base import Status

pytestmark = pytest.mark.root


def test_exec_helper_is_not_reachable_from_the_container(esc: Escape, tmp_path: Path) -> None:
    cid = esc.create(tmp_path, esc.config(esc.service([PROBE, "watch", "5"])))
    esc.runtime.start(cid)
    deadline = time.monotonic() + 4.0
    execs = 0
    while time.monotonic() < deadline and esc.runtime.state(cid).status == Status.RUNNING:
        with contextlib.suppress(RuntimeFailure):      # the watcher may stop between state and exec
            esc.runtime.exec(cid, ["true"])
            execs += 1
    esc.runtime.wait(cid, timeout=10)
    out = [ln.text for ln in esc.runtime.logs(cid) if ln.stream == "stdout"]
    assert execs > 0
    caught = [line for line in out if line.startswith("caught ")]
    assert not caught, f"after {execs} execs the container reached the exec helper: {caught}"
