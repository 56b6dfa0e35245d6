"""``/proc/self/exe`` as the container's command (runc CVE-2019-5736 class).

The container init and the exec helper are forks of the runtime's own interpreter; until their
``execve`` their ``/proc/self/exe`` is the HOST's python binary. A command of ``/proc/self/exe`` (or an
image symlink to it) makes that host file the container's program: the container then holds a
descriptor on a host executable and, once no python runs on the host (the CLI exits; monitors run a C
supervisor), can reopen it for writing through /proc/self/fd and replace the interpreter host root runs
next. The image layer here supplies what a hostile image would (the loader and libraries at the host's
paths, an ``encodings`` package); the program only opens ``/proc/self/exe`` READ-ONLY and reports which
filesystem it is on. Nothing is ever written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from escapekit import Escape, parse

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.base import Status
from orchestrator.runtime.linux import restart

pytestmark = pytest.mark.root

CODE = ("import os; fd = os.open('/proc/self/exe', os.O_RDONLY); st = os.fstat(fd); "
        "print('exe_dev', os.major(st.st_dev), os.minor(st.st_dev)); "
        "print('exe', os.readlink('/proc/self/exe'))")


def hostile_layer(top: Path) -> None:
    """The host interpreter's loader and shared libraries at their host paths, and a tiny stdlib."""
    exe = os.path.realpath(sys.executable)
    libs = subprocess.run(["ldd", exe], capture_output=True, text=True, check=True).stdout
    for line in libs.splitlines():
        path = next((w for w in line.split() if w.startswith("/")), None)
        if path:
            dest = top / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(path), dest)
    lib = Path(exe).parent.parent / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copytree(lib / "encodings", top / "pyhome" / "lib" / lib.name / "encodings")


def _ran_host_binary(out: list[str]) -> bool:
    got = parse(out)
    if "exe_dev" not in got:
        return False
    host = os.stat(os.path.realpath(sys.executable)).st_dev
    return got["exe_dev"] == f"{os.major(host)} {os.minor(host)}"


def test_command_proc_self_exe_does_not_run_a_host_binary(esc: Escape, tmp_path: Path) -> None:
    top = tmp_path / "image-top"
    hostile_layer(top)
    svc = esc.service(["/proc/self/exe", "-S", "-c", CODE], env={"PYTHONHOME": "/pyhome"})
    try:
        _st, out, err = esc.run(tmp_path, esc.config(svc), top=top)
    except RuntimeFailure:
        return                                  # refused at create: fine
    assert not _ran_host_binary(out), f"the container ran the host's {parse(out).get('exe')} ({err})"


def test_exec_proc_self_exe_does_not_run_a_host_binary(esc: Escape, tmp_path: Path) -> None:
    top = tmp_path / "image-top"
    hostile_layer(top)
    cid = esc.create(tmp_path, esc.config(esc.service(["sleep", "60"])), top=top)
    esc.runtime.start(cid)
    try:
        res = esc.runtime.exec(cid, ["/proc/self/exe", "-S", "-c", CODE], env=["PYTHONHOME=/pyhome"])
    except RuntimeFailure:
        return
    out = res.stdout.decode().splitlines()
    assert not _ran_host_binary(out), f"exec ran the host's {parse(out).get('exe')} ({res.stderr!r})"


# what the C container init (orch-init, a warm spare's) says when a ``#!/proc/self/exe`` script runs it
# again as the container's program: it is its sealed copy, and it refuses to act as a program
C_INIT_REFUSAL = "orch-init: the orchestrator's container init, not a program to run"


def _runs(lines: list[Any]) -> list[str]:
    """One entry per run of ``/evil``, in order: the exe a Python init's run reported, or the C init's
    refusal (``lines``: the container's log)."""
    return [ln.text.split(" ", 1)[1] if ln.stream == "stdout" else ln.text for ln in lines
            if (ln.stream == "stdout" and ln.text.startswith("exe ")) or
            (ln.stream == "stderr" and ln.text == C_INIT_REFUSAL)]


def _init_exe_is_sealed(esc: Escape, cid: str) -> None:
    """The created container's init runs from a sealed memfd: what ``#!/proc/self/exe`` resolves to."""
    exe = os.readlink(f"/proc/{esc.runtime.state(cid).pid}/exe")
    assert exe.startswith("/memfd:"), exe


def _shebang_script(top: Path) -> None:
    """``/evil``: a script whose interpreter is ``/proc/self/exe``; the kernel resolves it in the process
    that execs the script (the init, the exec helper), so no argv[0] check can see it: only the sealed
    copy of the interpreter (or of the C init) keeps this from running the host's file. Python reads the
    rest as code; the C init refuses to run as a program (``C_INIT_REFUSAL``)."""
    script = top / "evil"
    script.write_text("#!/proc/self/exe -S\n" + CODE.replace("; ", "\n") + "\n")
    script.chmod(0o755)


def test_shebang_proc_self_exe_does_not_run_a_host_binary(esc: Escape, tmp_path: Path) -> None:
    top = tmp_path / "image-top"
    hostile_layer(top)
    _shebang_script(top)
    config = esc.config(esc.service(["/evil"], env={"PYTHONHOME": "/pyhome"}))
    config["annotations"][restart.POLICY] = "never"     # one run: the C init refuses, python prints
    cid = esc.create(tmp_path, config, top=top)
    _init_exe_is_sealed(esc, cid)
    esc.runtime.start(cid)
    esc.runtime.wait(cid, timeout=20)
    lines = list(esc.runtime.logs(cid))
    out = [ln.text for ln in lines if ln.stream == "stdout"]
    runs = _runs(lines)
    if esc.c_init:
        assert runs == [C_INIT_REFUSAL]
    else:
        assert len(runs) == 1 and runs[0].startswith("/memfd:orchestrator-python"), runs
    assert not _ran_host_binary(out), f"the container ran the host's {parse(out).get('exe')}"


def test_exec_shebang_proc_self_exe_does_not_run_a_host_binary(esc: Escape, tmp_path: Path) -> None:
    top = tmp_path / "image-top"
    hostile_layer(top)
    _shebang_script(top)
    cid = esc.create(tmp_path, esc.config(esc.service(["sleep", "60"])), top=top)
    esc.runtime.start(cid)
    res = esc.runtime.exec(cid, ["/evil"], env=["PYTHONHOME=/pyhome"])
    out = res.stdout.decode().splitlines()
    assert parse(out).get("exe", "").startswith("/memfd:"), (out, res.stderr)
    assert not _ran_host_binary(out), f"exec ran the host's {parse(out).get('exe')} ({res.stderr!r})"


def test_restarted_shebang_proc_self_exe_does_not_run_a_host_binary(esc: Escape, tmp_path: Path) -> None:
    top = tmp_path / "image-top"
    hostile_layer(top)
    _shebang_script(top)
    (top / "evil").write_text((top / "evil").read_text() + "raise SystemExit(1)\n")   # fail: restart once
    config = esc.config(esc.service(["/evil"], env={"PYTHONHOME": "/pyhome"}))
    config["annotations"] = {restart.POLICY: "on-failure", restart.MAX_RETRIES: "1",
                             restart.BACKOFF_INITIAL: "0.05", restart.BACKOFF_MAX: "1"}
    cid = esc.create(tmp_path, config, top=top)
    _init_exe_is_sealed(esc, cid)
    esc.runtime.start(cid)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        st = esc.runtime.state(cid)
        if st.status == Status.STOPPED and st.annotations.get(restart.RESTARTS) == "1" \
                and st.annotations.get(restart.RESTARTING) != "true":
            break
        time.sleep(0.05)
    runs = _runs(list(esc.runtime.logs(cid)))
    assert len(runs) == 2, runs                                             # the first run and the restart
    # a restart always runs the Python init (the restarter is Python); the first run a spare's
    first = C_INIT_REFUSAL if esc.c_init else "/memfd:orchestrator-python"
    assert runs[0].startswith(first) and runs[1].startswith("/memfd:orchestrator-python"), \
        f"a run used the host's interpreter: {runs}"
