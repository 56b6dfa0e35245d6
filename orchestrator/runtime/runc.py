"""``RuncRuntime``: the ``Runtime`` protocol over Debian's ``runc`` binary, for differential tests.

The same OCI bundle runs under runc and under our ``runtime.linux.native.LinuxRuntime``, and tests
compare what the container sees. Differences from the native runtime, by design of runc: the ``rootfs``
mounts are made on the host at ``root.path`` before ``runc create`` (runc takes a prepared root) and
unmounted on ``delete``; stdout/stderr go to two plain files (no timestamps: each line is stamped with
the file's modification time); and runc records no exit code for a detached container, so
``exit_code`` stays ``None``. State lives under ``<state_dir>/<id>`` and runc's own ``--root``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from orchestrator.errors import ContainerNotFound, ExecTimeout, RuntimeFailure
from orchestrator.runtime.base import ContainerState, ExecResult, LogLine, Mount, Status
from orchestrator.runtime.linux import statedir as sd
from orchestrator.runtime.linux import syscalls as sc

_STATUS = {"creating": Status.CREATING, "created": Status.CREATED, "running": Status.RUNNING,
           "stopped": Status.STOPPED, "paused": Status.RUNNING}


class RuncRuntime:
    name = "runc"

    def __init__(self, state_dir: Path, runc: str = "runc") -> None:
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / ".runc"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.runc = runc

    def _run(self, *args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        cmd = [self.runc, "--root", str(self.root), *args]
        try:
            proc = subprocess.run(cmd, capture_output=kw.pop("capture", True), check=False, **kw)
        except OSError as exc:
            raise RuntimeFailure(f"cannot run runc: {exc}", op=args[0], path=self.runc,
                                 errno=exc.errno or 0) from exc
        if check and proc.returncode != 0:
            err = (proc.stderr or b"").decode(errors="replace").strip()
            raise RuntimeFailure(f"runc {args[0]} failed: {err}", op=f"runc {args[0]}", path=args[-1])
        return proc

    def create(self, container_id: str, bundle: Path, rootfs: Sequence[Mount] = ()) -> ContainerState:
        bundle = Path(bundle).absolute()
        spec = json.loads((bundle / "config.json").read_text())
        root = Path(spec["root"]["path"])
        root = root if root.is_absolute() else bundle / root
        cdir = self.state_dir / container_id
        cdir.mkdir(mode=0o700)
        mounted: list[str] = []
        sd.write_json(cdir / "mounts.json", {"mounts": mounted, "bundle": str(bundle)})
        with contextlib.ExitStack() as undo:
            undo.callback(shutil.rmtree, cdir, True)
            for m in rootfs:
                target = str(root / m.target) if m.target else str(root)
                args = ["mount", "-t", m.type] + (["-o", ",".join(m.options)] if m.options else [])
                proc = subprocess.run([*args, m.source, target], cwd=m.cwd or None, capture_output=True,
                                      check=False)
                if proc.returncode != 0:
                    raise RuntimeFailure(f"mount failed: {proc.stderr.decode(errors='replace').strip()}",
                                         op="mount", path=target)
                undo.callback(sc.umount2, target, sc.MNT_DETACH)
                mounted.append(target)
                sd.write_json(cdir / "mounts.json", {"mounts": mounted, "bundle": str(bundle)})
            with open(cdir / "stdout.log", "wb") as out, open(cdir / "stderr.log", "wb") as err:
                self._run("create", "--bundle", str(bundle), "--pid-file", str(cdir / "pid"), container_id,
                          stdin=subprocess.DEVNULL, stdout=out, stderr=err, capture=False)
            undo.pop_all()
        return self.state(container_id)

    def start(self, container_id: str) -> None:
        self._run("start", container_id)

    def state(self, container_id: str) -> ContainerState:
        cdir = self.state_dir / container_id
        proc = self._run("state", container_id, check=False)
        if proc.returncode != 0:
            raise ContainerNotFound(f"container {container_id} not found", op="state", path=str(cdir))
        data = json.loads(proc.stdout)
        created = time.mktime(time.strptime(data["created"][:19], "%Y-%m-%dT%H:%M:%S")) \
            if data.get("created") else 0.0
        return ContainerState(container_id, _STATUS.get(data["status"], Status.UNKNOWN), data["bundle"],
                              pid=int(data.get("pid", 0)), created_at=created,
                              pid_start_time=sd.start_time(int(data.get("pid", 0))) or 0,
                              annotations=data.get("annotations") or {})

    def list(self) -> list[ContainerState]:
        out = []
        for entry in sorted(p.name for p in self.state_dir.iterdir() if not p.name.startswith(".")):
            with contextlib.suppress(ContainerNotFound):
                out.append(self.state(entry))
        return out

    def kill(self, container_id: str, sig: int = signal.SIGTERM) -> None:
        self._run("kill", container_id, str(int(sig)))

    def wait(self, container_id: str, timeout: float | None = None) -> ContainerState:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            st = self.state(container_id)
            if st.status == Status.STOPPED or (deadline is not None and time.monotonic() > deadline):
                return st
            time.sleep(0.02)

    def delete(self, container_id: str, *, force: bool = False) -> None:
        cdir = self.state_dir / container_id
        if self._run("state", container_id, check=False).returncode == 0:
            self._run("delete", *(["--force"] if force else []), container_id)
        rec = sd.read_json(cdir / "mounts.json") or {}
        for target in reversed(rec.get("mounts", [])):
            with contextlib.suppress(RuntimeFailure):
                sc.umount2(target, sc.MNT_DETACH)
        shutil.rmtree(cdir, ignore_errors=True)

    def exec(self, container_id: str, argv: Sequence[str], *, env: Sequence[str] = (),
             cwd: str | None = None, tty: bool = False, capture: bool = True,
             timeout: float | None = None, stdin: bool = False) -> ExecResult:
        args = ["exec"] + [f"--env={e}" for e in env] + ([f"--cwd={cwd}"] if cwd else [])
        if tty:
            args.append("--tty")
        try:
            # subprocess SIGKILLs ``runc exec`` at the deadline; unlike the native runtime, the process
            # runc started in the container may outlive it (this runtime is for differential tests)
            proc = self._run(*args, container_id, *argv, check=False, capture=capture, timeout=timeout,
                             stdin=None if stdin else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise ExecTimeout(f"exec {argv[0]!r} timed out after {timeout:g}s",
                              op="exec", path=container_id) from exc
        return ExecResult(proc.returncode, proc.stdout or b"", proc.stderr or b"")

    def logs(self, container_id: str, *, since: float = 0.0, follow: bool = False) -> Iterator[LogLine]:
        cdir = self.state_dir / container_id
        if not cdir.is_dir():
            raise ContainerNotFound(f"container {container_id} not found", op="logs", path=str(cdir))
        for stream in ("stdout", "stderr"):
            path = cdir / f"{stream}.log"
            stamp = path.stat().st_mtime
            if stamp >= since:
                for line in path.read_bytes().decode(errors="replace").splitlines():
                    yield LogLine(stamp, stream, line)
