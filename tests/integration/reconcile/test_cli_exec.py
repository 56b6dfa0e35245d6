"""``orchestrator exec`` as a user runs it: output streamed as written, ``-i`` stdin, ``-e``/``-w``, the
command's exit code, a Ctrl-C that ends the command in the container (and no traceback from the fork
server, which has a process group of its own), and ``-it``: a shell on a terminal, driven through a
pty as a user's keyboard would."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rootfs_kit import build_busybox_rootfs, pids_whose_cmdline

pytestmark = pytest.mark.root

STACK = """\
apiVersion: orchestrator/v1
kind: Stack
metadata: {name: ex}
spec:
  services:
    app:
      rootfs: ./rootfs
      command: ["sleep", "1000"]
      stopGracePeriod: 200ms
      network: none
"""

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(state_root: Path, tmp_path: Path) -> Iterator[Cli]:
    build_busybox_rootfs(tmp_path / "rootfs")
    (tmp_path / "stack.yaml").write_text(STACK)
    env = {**os.environ, "ORCHESTRATOR_ROOT": str(state_root)}

    def run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator", *argv], cwd=tmp_path, env=env,
                              input=stdin, capture_output=True, text=True, timeout=60, check=False)

    run.env = env  # type: ignore[attr-defined]
    run.cwd = tmp_path  # type: ignore[attr-defined]
    assert run("apply", "-f", "stack.yaml").returncode == 0
    yield run
    assert run("down", "ex").returncode == 0


def _running(needle: str) -> bool:
    return bool(pids_whose_cmdline(lambda cmdline: needle.encode() in cmdline.replace(b"\0", b" ")))


def test_exec_stdin_env_workdir_and_exit_code(cli: Cli) -> None:
    assert cli("exec", "-i", "app", "--", "cat", stdin="from stdin\n").stdout == "from stdin\n"
    assert cli("exec", "app", "--", "cat", stdin="not given\n").stdout == ""     # without -i: /dev/null
    res = cli("exec", "-e", "GREETING=hi", "-w", "/tmp", "app", "--", "sh", "-c",
              "echo $GREETING; pwd; exit 3")
    assert (res.returncode, res.stdout) == (3, "hi\n/tmp\n")
    res = cli("exec", "-it", "app", "--", "sh", stdin="exit\n")
    assert res.returncode == 2 and "-it needs a terminal" in res.stderr
    res = cli("exec", "-e", "NOVALUE", "app", "--", "true")
    assert res.returncode == 2 and "expected KEY=VALUE" in res.stderr


def test_exec_gets_pipes_never_our_stdio(cli: Cli) -> None:
    """The process gets pipes (never the caller's own descriptors: a terminal of ours would be its
    controlling terminal) and a session of its own; input it does not read never blocks its output."""
    out = cli("exec", "-i", "app", "--", "sh", "-c", "readlink /proc/self/fd/0; readlink /proc/self/fd/1; "
              "read -r stat < /proc/self/stat; set -- $stat; echo $1 $6", stdin="").stdout.split()
    assert out[0].startswith("pipe:[") and out[1].startswith("pipe:["), out
    assert out[2] == out[3], out                                       # sh leads a session of its own
    res = cli("exec", "-i", "app", "--", "sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x",
              stdin="y" * (1 << 20))                                   # 1 MB it never reads
    assert res.returncode == 0 and res.stdout == "x" * 300000
    assert cli("exec", "-i", "app", "--", "cat", stdin="no newline").stdout == "no newline"


def test_a_killed_exec_takes_its_command_along(cli: Cli) -> None:
    """SIGTERM ends the CLI without any cleanup of its own: the exec helper sees nobody reads its
    status pipe any more and kills the command, with its process group (the pipeline's sleep too)."""
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "exec", "app", "--", "sh", "-c",
                             "sleep 45 | cat"], cwd=cli.cwd, env=cli.env,  # type: ignore[attr-defined]
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _running("sleep 45"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.terminate()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 5
    while _running("sleep 45"):
        assert time.monotonic() < deadline, "the command outlived its killed exec"
        time.sleep(0.05)


def test_exec_streams_and_a_ctrl_c_ends_the_command(cli: Cli) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "exec", "app", "--", "sh", "-c",
                             "echo first; exec sleep 43"], cwd=cli.cwd, env=cli.env,  # type: ignore[attr-defined]
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "first\n"       # while the command still runs
        deadline = time.monotonic() + 10
        while not _running("sleep 43"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)                 # as a terminal's Ctrl-C: the whole group
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    deadline = time.monotonic() + 5
    while _running("sleep 43"):
        assert time.monotonic() < deadline, "the command outlived the interrupted exec"
        time.sleep(0.05)


def _read_until(fd: int, token: bytes, timeout: float = 15) -> bytes:
    buf, deadline = b"", time.monotonic() + timeout
    while token not in buf and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:             # EIO: the CLI ended and closed the terminal
                break
            if not data:
                break
            buf += data
    return buf


def test_exec_it_gives_a_shell_on_a_terminal(cli: Cli) -> None:
    pid, fd = pty.fork()
    if pid == 0:                        # the CLI, on a terminal, as a user runs it
        os.chdir(cli.cwd)  # type: ignore[attr-defined]
        os.execve(sys.executable, [sys.executable, "-m", "orchestrator", "exec", "-it", "app", "--", "sh"],
                  cli.env)  # type: ignore[attr-defined]
    try:
        assert b"# " in _read_until(fd, b"# ")              # the prompt: typed before it, keys are lost
        time.sleep(0.3)                 # busybox asks the terminal where the cursor is, then gives up
        os.write(fd, b"[ -t 0 ] && echo IS-A-TERMINAL; echo $TERM; echo $((6*7))\r")
        out = _read_until(fd, b"42\r\n")
        assert b"IS-A-TERMINAL" in out and b"42\r\n" in out, out
        os.write(fd, b"exec sleep 44\r")                 # the foreground job of the shell's terminal
        deadline = time.monotonic() + 10
        while not _running("sleep 44"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.write(fd, b"\x03")                              # Ctrl-C, through the terminal to sleep
        _read_until(fd, b"never", timeout=5)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 130     # the shell exec'd sleep, which died of SIGINT
    assert not _running("sleep 44")
