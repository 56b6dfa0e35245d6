"""Side channels to the host that are not files: loopback services and abstract unix sockets (both
scoped by the network namespace), the log stream (a container must not forge records of the other
stream), and its own OOM protection (lowering oom_score_adj needs CAP_SYS_RESOURCE)."""

from __future__ import annotations

import errno
import socket
import uuid
from pathlib import Path

import pytest
from escapekit import PROBE, Escape, errnos

pytestmark = pytest.mark.root


def test_host_loopback_and_abstract_sockets_are_unreachable(esc: Escape, tmp_path: Path) -> None:
    name = f"orchestrator-escape-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(1)
        unix.bind("\0" + name)
        unix.listen(1)
        port = tcp.getsockname()[1]
        st, out, err = esc.run(tmp_path, esc.config(esc.service([PROBE, "connect", str(port), name])))
    assert st.exit_code == 0, err
    got = errnos(out)
    # its own loopback: refused, or unreachable while its "lo" is down (network: none)
    assert got["connect_tcp_loopback"] in (errno.ECONNREFUSED, errno.ENETUNREACH), got
    assert got["connect_abstract_unix"] == errno.ECONNREFUSED, got


def test_container_cannot_forge_log_records(esc: Escape, tmp_path: Path) -> None:
    script = r"""printf 'q"uote\\back\n'; printf '{"t": 1, "s": "stderr", "m": "forged"}\n';
printf 'x", "s": "stderr", "m": "forged2"}\n'; printf 'cr\rret\n'; printf 'nul\000byte\n';
printf 'no newline'"""
    st, _out, _err = esc.run(tmp_path, esc.config(esc.service(["sh", "-c", script])))
    assert st.exit_code == 0
    lines = list(esc.runtime.logs(esc.containers[-1][1]))
    assert [(ln.stream, ln.text) for ln in lines] == [
        ("stdout", 'q"uote\\back'), ("stdout", '{"t": 1, "s": "stderr", "m": "forged"}'),
        ("stdout", 'x", "s": "stderr", "m": "forged2"}'), ("stdout", "cr\rret"), ("stdout", "nul\x00byte"),
        ("stdout", "no newline")]
    assert all(ln.time > 1e9 for ln in lines)


def test_container_cannot_shield_itself_from_the_oom_killer(esc: Escape, tmp_path: Path) -> None:
    script = "echo -1000 > /proc/self/oom_score_adj; echo rc=$?; cat /proc/self/oom_score_adj"
    st, out, err = esc.run(tmp_path, esc.config(esc.service(["sh", "-c", script])))
    assert st.exit_code == 0, err
    assert out[0] != "rc=0" and out[1] != "-1000", out


def test_container_output_cannot_fill_the_host_disk(esc: Escape, tmp_path: Path) -> None:
    """Logs rotate at the runtime's limit (one rotated file kept): ~5 MB of output, 1 MB limit."""
    import shutil as _shutil

    from orchestrator.runtime.linux import statedir
    from orchestrator.runtime.linux.native import LinuxRuntime
    state = tmp_path / "small-logs"
    _shutil.copytree(esc.runtime.state_dir / ".bin", state / ".bin")     # the built supervisor
    rt = LinuxRuntime(state, cgroup_parent=esc.cgroup_parent, log_max_bytes=1 << 20)
    try:
        st, _out, err = esc.run(tmp_path, esc.config(esc.service(
            ["sh", "-c", "head -c 4000000 /dev/urandom | base64"])), rt)
        assert st.exit_code == 0, err
        cdir = state / esc.containers[-1][1]
        sizes = [p.stat().st_size for p in cdir.glob(statedir.LOG + "*")]
        # JSON framing roughly doubles a short line; two files of at most the limit (+ one line)
        assert len(sizes) == 2 and sum(sizes) <= 2 * (1 << 20) + 4096, sizes     # rotated, bounded
    finally:
        esc.cleanup()
        rt.close()


def test_container_starts_with_default_signal_dispositions(esc: Escape, tmp_path: Path) -> None:
    config = esc.config(esc.service(["grep", "^Sig[BI]", "/proc/self/status"]))
    st, out, err = esc.run(tmp_path, config)
    assert st.exit_code == 0, err
    zero = "0000000000000000"
    assert [line.split() for line in out] == [["SigBlk:", zero], ["SigIgn:", zero]]
