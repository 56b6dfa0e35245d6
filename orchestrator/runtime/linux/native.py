"""``LinuxRuntime``: the native implementation of ``orchestrator.runtime.base.Runtime``.

This is the API side, safe to call from a multi-threaded process: it validates the bundle, records the
container in its state dir *before* making anything, creates the cgroup and compiles the seccomp filter,
and asks the single-threaded ``forkserver`` to fork a ``monitor`` (which forks ``init``). Every query
re-reads the state dir and /proc (``statedir``); ``delete`` is idempotent and removes processes, cgroup
and state (mounts live only in the container's mount namespace and go with it). ``update``/``stats``
change and read the cgroup recorded in the container's record (``statedir.read_state``); exec pipes
and log following are in ``procio``.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ContainerNotFound, RuntimeFailure
from orchestrator.fsutil import Trash
from orchestrator.runtime.base import ContainerState, ExecResult, LogLine, Mount, Status
from orchestrator.runtime.files import FileSpec, check_files
from orchestrator.runtime.linux import cmonitor, filemounts, procio, restart
from orchestrator.runtime.linux import statedir as sd
from orchestrator.runtime.linux.forkclient import ForkServer
from orchestrator.runtime.linux.serverpool import ServerPool
from orchestrator.runtime.linux.spec import load_bundle

if TYPE_CHECKING:       # the cgroup drivers are imported on first use, as before
    from orchestrator.runtime.linux.cgroups.base import Cgroup, CgroupDriver, CgroupStats

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _check_id(container_id: str) -> None:
    if not _ID.match(container_id):
        raise RuntimeFailure(f"invalid container id {container_id!r}", op="create", path=container_id)


class LinuxRuntime:
    """Containers from OCI bundles on this kernel. Call :meth:`close` (or use ``with``) when done; running
    containers are not affected by it. ``c_supervisor=False`` keeps each monitor in Python after set-up
    (no C compiler needed, ~20 MB of memory per running container instead of ~0.2 MB); ``c_init=False``
    makes warm spares Python ones (``spare``: every container init in Python), not C ones (``cspare``,
    which also need the C supervisor)."""

    name = "native"

    def __init__(self, state_dir: Path, cgroup_root: Path = Path("/sys/fs/cgroup"),
                 cgroup_parent: str = "", *, log_max_bytes: int = 10 << 20,
                 c_supervisor: bool = True, c_init: bool = True) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.cgroup_root = Path(cgroup_root)
        self._cgroup_parent = cgroup_parent
        self.log_max_bytes = log_max_bytes
        # the C half of the monitor (cmonitor.py); "" keeps the Python supervision loop
        self._supervisor = cmonitor.build(self.state_dir / ".bin") if c_supervisor else ""
        # warm spares in C (cspare: its monitor and init), which the C supervisor needs; else Python
        c_spare = None
        if c_init and self._supervisor:
            # a build that fails here (e.g. kernel headers missing) leaves the Python spares
            with contextlib.suppress(RuntimeFailure):
                paths = [cmonitor.build(self.state_dir / ".bin", cmonitor.PROGRAMS[name], name)
                         for name in ("orch-spare", "orch-init")]
                c_spare = (paths[0], paths[1]) if all(paths) else None
        self._servers = ServerPool(max(1, min(4, os.cpu_count() or 1)), c_spare)
        self._trash = Trash(self.state_dir / ".trash")

    def __enter__(self) -> LinuxRuntime:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def _server(self) -> ForkServer:
        """The first fork server (started if needed); for tests that look at its process."""
        with self._servers.get() as server:
            return server

    def close(self) -> None:
        self._servers.close()
        self._trash.close()

    def _discard(self, cdir: Path) -> None:
        self._trash.discard(cdir)

    # ---- cgroups ------------------------------------------------------------------------------------

    def _driver(self, root: Path | None = None) -> CgroupDriver:
        """The cgroup driver of a hierarchy root, detected once per root and process (``driver_for``)."""
        from orchestrator.runtime.linux.cgroups import driver_for
        return driver_for(self.cgroup_root if root is None else root)

    def _recorded_cgroup(self, rec: dict[str, Any]) -> Cgroup:
        """The cgroup a container's record holds (hierarchy root and path): the one seam every
        later reading or change goes through. ``ContainerNotFound`` when none is recorded or left."""
        cg = rec.get("cgroup") or {}
        if not cg.get("path"):
            raise ContainerNotFound(f"container {rec.get('id', '?')} has no cgroup recorded", op="cgroup",
                                    path=str(self.state_dir / str(rec.get("id", ""))))
        return self._driver(Path(cg["root"]) if cg.get("root") else None).open(str(cg["path"]))

    def _cgroup_of(self, container_id: str) -> Cgroup:
        rec = sd.read_state(self.state_dir / container_id)
        if rec is None:
            raise ContainerNotFound(f"container {container_id} not found", op="cgroup",
                                    path=str(self.state_dir / container_id))
        return self._recorded_cgroup(rec)

    def update(self, container_id: str, resources: Mapping[str, Any]) -> None:
        """Change limits in place (OCI ``linux.resources``; only the keys given change): a running
        container keeps running."""
        self._cgroup_of(container_id).update(resources)

    def update_restart(self, container_id: str, annotations: Mapping[str, str]) -> bool:
        """Change the restart policy (``org.orchestrator.restart.*`` annotations) of a created or
        running container in place; its supervisor applies it from the next exit. False when it
        already was that; refused for a container created without a policy (``statedir``)."""
        return sd.change_restart_policy(self.state_dir / container_id, dict(annotations))

    def stats(self, container_id: str) -> CgroupStats:
        """One reading of the container's cgroup (usage, limits as the kernel has them now, OOM kills)."""
        return self._cgroup_of(container_id).stats()

    def _cgroup_path(self, container_id: str, spec: dict[str, Any]) -> str:
        explicit = spec.get("linux", {}).get("cgroupsPath")
        if explicit:
            return str(explicit).strip("/")
        parent = self._cgroup_parent or self._driver().default_parent()
        return f"{parent.strip('/')}/{container_id}"

    # ---- lifecycle ----------------------------------------------------------------------------------

    def create(self, container_id: str, bundle: Path, rootfs: Sequence[Mount] = (), *,
               files: Sequence[FileSpec] = ()) -> ContainerState:
        """``files``: configs/secrets the init writes to a private tmpfs and binds read-only into the
        container (``filemounts``); their contents travel in memory only."""
        _check_id(container_id)
        bundle = Path(bundle).absolute()
        spec = load_bundle(bundle)
        filemounts.check_create(container_id, spec, files)
        restart.from_annotations(spec.get("annotations", {}))      # a bad policy: refused before any fork
        cdir = self.state_dir / container_id
        try:
            cdir.mkdir(mode=0o700)
        except FileExistsError as exc:
            raise RuntimeFailure(f"container {container_id} already exists", op="create",
                                 path=str(cdir)) from exc
        with contextlib.ExitStack() as undo:
            undo.callback(self._discard, cdir)
            cgroup = {"root": str(self.cgroup_root), "path": self._cgroup_path(container_id, spec)}
            record: dict[str, Any] = {
                "id": container_id, "bundle": str(bundle), "created_at": time.time(), "pid": 0,
                "start_time": 0, "monitor_pid": 0, "monitor_start_time": 0, "cgroup": cgroup,
                "annotations": spec.get("annotations", {})}
            sd.write_json(cdir / sd.CREATING, record)       # ownership first, then the objects
            os.mkfifo(cdir / sd.FIFO, 0o600)                # before the request: the init opens it
            if files:
                filemounts.record(cdir, files)              # layout and mount point only, no content
            # the directories to write the init's pid into (no I/O): the monitor (a fresh fork) would
            # otherwise detect the cgroup layout again (statfs, /proc/self/cgroup, symlinks)
            cgroup_dirs = [str(d) for d in self._driver().cgroup(cgroup["path"]).dirs()]
            prog, flags = b"", 0
            if spec.get("linux", {}).get("seccomp"):
                from orchestrator.runtime.linux import seccomp
                # cached on disk too: each CLI process would otherwise compile the profile again
                prog = seccomp.compile_oci(spec["linux"]["seccomp"], self.state_dir / ".cache" / "seccomp")
                flags = seccomp.flags_value(spec["linux"]["seccomp"])
            # the init installs the compiled filter; the profile (most of the spec's bytes) stays here
            linux = {k: v for k, v in spec.get("linux", {}).items() if k != "seccomp"}
            failed: BaseException | None = None
            with filemounts.payload_fd(files) as payload, self._servers.get() as server, server.exchange({
                    "op": "create", "id": container_id, "state_dir": str(cdir), "bundle": str(bundle),
                    "spec": {**spec, "linux": linux}, "rootfs": [asdict(m) for m in rootfs], "cgroup": cgroup,
                    "cgroup_dirs": cgroup_dirs, "seccomp": prog.hex(), "seccomp_flags": flags,
                    "exec_fifo": str(cdir / sd.FIFO),
                    "log_max_bytes": self.log_max_bytes, "supervisor": self._supervisor,
                    "files": bool(files)}, [payload] if files else [], go=True) as talk:
                # while the server and the init work (the init needs its cgroup only at its cgroup
                # step): the cgroup, then the state dir's copies for exec. "go" lets the monitor move
                # the init into the cgroup; on a failure here the monitor is told to give up instead.
                try:
                    # its undo once it exists (a refused resource: create removes what it made)
                    self._driver().create(cgroup["path"], spec.get("linux", {}).get("resources", {}))
                    undo.callback(self._destroy_cgroup, cgroup["path"])
                    sd.write_json(cdir / sd.SPEC, spec)
                    if prog:
                        (cdir / sd.SECCOMP).write_bytes(prog)
                except Exception as exc:  # raised once the server's reply is read (the create failed)
                    failed = exc
                talk.go(failed is None)
                try:
                    reply = talk.receive()
                except RuntimeFailure as exc:
                    if failed is not None:
                        raise failed from exc
                    raise
            if reply.get("ok"):
                # from here the processes exist: an undo kills them before the cgroup goes
                undo.callback(self._kill_created, reply)
            if failed is not None:
                raise failed
            if not reply.get("ok"):
                raise procio.failure(reply.get("error", {}))
            record.update({k: int(reply[k]) for k in ("pid", "start_time", "monitor_pid",
                                                      "monitor_start_time")})
            sd.write_json(cdir / sd.STATE, record)
            os.unlink(cdir / sd.CREATING)
            undo.pop_all()
        # what ``state`` would read back now (the init waits on the exec fifo), without reading it
        annotations = sd.state_annotations(cdir, None, record)
        return ContainerState(container_id, Status.CREATED, str(bundle), pid=record["pid"],
                              pid_start_time=record["start_time"], created_at=record["created_at"],
                              annotations=annotations)

    def start(self, container_id: str) -> None:
        cdir = self.state_dir / container_id
        # the fifo exists from create until start; whether its reader (the init) still waits, the
        # open below says (ENXIO), so the whole state is read only to name what is wrong
        if not (cdir / sd.FIFO).exists() or not (cdir / sd.STATE).exists():
            st = self.state(container_id)
            raise RuntimeFailure(f"container {container_id} is {st.status}, not created", op="start",
                                 path=container_id)
        # before the wake: a crash between the two must not leave a running container without a
        # start time (restart backoff and health-check start periods are measured from it)
        sd.write_json(cdir / sd.STARTED, {"started_at": time.time()})
        try:
            fd = os.open(cdir / sd.FIFO, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:        # ENXIO: no reader, the init is gone
            raise RuntimeFailure(f"container {container_id} init is not waiting: {exc.strerror}",
                                 op="start", path=str(cdir / sd.FIFO), errno=exc.errno or 0) from exc
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(cdir / sd.FIFO)

    def update_files(self, container_id: str, files: Sequence[FileSpec]) -> list[str]:
        """Rewrite changed config/secret files of a created or running container (rotation); returns
        the targets changed. Only targets given at create can be updated (a new one needs a new mount).
        A directory mount (/run/secrets, /run/configs) gets an atomic rename, a single-file bind an
        in-place rewrite (send the process a signal after it: a reader may see a partial write)."""
        st = self.state(container_id)
        if st.status not in (Status.CREATED, Status.RUNNING) or not sd.alive(st.pid, st.pid_start_time):
            raise RuntimeFailure(f"container {container_id} is not running", op="update_files",
                                 path=container_id)
        check_files(files)
        filemounts.check_update(self.state_dir / container_id, files)
        if not files:
            return []
        with filemounts.payload_fd(files) as payload, self._servers.get() as server:
            reply = server.request({"op": "files", "id": container_id, "pid": st.pid,
                                      "start_time": st.pid_start_time, "files": True}, [payload])
        if not reply.get("ok"):
            raise procio.failure(reply.get("error", {}))
        rec = sd.read_state(self.state_dir / container_id) or {}
        if rec.get("monitor_pid") and sd.alive(rec["monitor_pid"], rec.get("monitor_start_time", 0)):
            filemounts.refresh_kept_payload(int(rec["monitor_pid"]), files)   # what a restart replays
        return [str(t) for t in reply.get("changed", [])]

    def state(self, container_id: str) -> ContainerState:
        # plain string paths: ``list`` calls this for every container of every pass
        cdir = f"{self.state_dir}/{container_id}"
        rec = sd.read_json(f"{cdir}/{sd.STATE}")
        if rec is None:
            if os.path.isdir(cdir):
                return ContainerState(container_id, Status.CREATING, "")
            raise ContainerNotFound(f"container {container_id} not found", op="state", path=cdir)
        started = sd.read_json(f"{cdir}/{sd.STARTED}") or {}
        base: dict[str, Any] = {
            "id": container_id, "bundle": rec["bundle"], "pid": rec["pid"],
            "pid_start_time": rec["start_time"], "created_at": rec["created_at"],
            "started_at": started.get("started_at", 0.0), "annotations": rec.get("annotations", {})}
        ended = sd.read_json(f"{cdir}/{sd.EXIT}")
        if ended is not None and ended.get("oom_killed") is None:
            # the C supervisor leaves it to us; computed on every read (a query never writes: the
            # monitor or the restarter may be replacing exit.json at the same moment)
            ended["oom_killed"] = self._oom_killed(rec)
        base["annotations"] = sd.state_annotations(cdir, ended, rec)
        if ended is not None:
            return ContainerState(status=Status.STOPPED, finished_at=ended["finished_at"],
                                  exit_code=ended["exit_code"], exit_signal=ended["exit_signal"],
                                  oom_killed=ended["oom_killed"], **base)
        if not rec["pid"]:
            return ContainerState(status=Status.CREATING, **base)
        if sd.alive(rec["pid"], rec["start_time"]):
            status = Status.CREATED if os.path.exists(f"{cdir}/{sd.FIFO}") else Status.RUNNING
            return ContainerState(status=status, **base)
        if sd.alive(rec["monitor_pid"], rec["monitor_start_time"]):
            return ContainerState(status=Status.RUNNING, **base)   # exited; the monitor is recording it
        return ContainerState(status=Status.STOPPED, **base)       # monitor gone too: exit code unknown

    def list(self) -> list[ContainerState]:
        out = []
        for entry in sorted(os.listdir(self.state_dir)):
            if _ID.match(entry):
                with contextlib.suppress(ContainerNotFound):
                    out.append(self.state(entry))
        return out

    def kill(self, container_id: str, sig: int = signal.SIGTERM) -> None:
        """A stop signal (``restart.stops_restarts``) also ends the restart policy; killing a container
        that waits out a restart backoff just cancels the restart."""
        if restart.stops_restarts(sig) and self._stop_restarts(container_id):
            return
        st = self.state(container_id)
        if st.status not in (Status.CREATED, Status.RUNNING) or not sd.alive(st.pid, st.pid_start_time):
            raise RuntimeFailure(f"container {container_id} is not running", op="kill", path=container_id)
        try:
            os.kill(st.pid, sig)
        except ProcessLookupError as exc:
            raise RuntimeFailure(f"container {container_id} is not running", op="kill",
                                 path=container_id) from exc

    def wait(self, container_id: str, timeout: float | None = None) -> ContainerState:
        """Until the monitor has recorded the exit (or is gone); pidfd poll, no busy loop. With a restart
        policy only a final exit counts: an exit followed by a restart is skipped (the annotation
        ``org.orchestrator.restarting`` is "true" meanwhile), so under ``always`` only a stop by the user
        or the timeout ends the wait; on a timeout the current state is returned, as always."""
        rec = sd.read_state(self.state_dir / container_id) or {}
        deadline = None if timeout is None else time.monotonic() + timeout
        mon, mon_start = int(rec.get("monitor_pid", 0)), int(rec.get("monitor_start_time", 0))
        pidfd = -1
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(mon) if mon else -1
        try:
            while True:
                st = self.state(container_id)
                between_runs = st.annotations.get(restart.RESTARTING) == "true"   # restart pending
                if st.status == Status.STOPPED and not between_runs and \
                        (st.exit_code is not None or not sd.alive(mon, mon_start)):
                    return st
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return st
                wait_s = 0.05 if left is None else min(0.05, left)
                if pidfd >= 0:
                    select.select([pidfd], [], [], wait_s)
                else:
                    time.sleep(wait_s)
        finally:
            if pidfd >= 0:
                os.close(pidfd)

    def delete(self, container_id: str, *, force: bool = False) -> None:
        cdir = self.state_dir / container_id
        if not cdir.is_dir():
            return
        rec = sd.read_state(cdir) or {}
        st = self.state(container_id)
        if st.status == Status.RUNNING and not force:
            raise RuntimeFailure(f"container {container_id} is running; stop it or force", op="delete",
                                 path=container_id)
        if self._stop_restarts(container_id) or (cdir / sd.RESTART_REQ).exists():
            st = self.state(container_id)        # a restart may have replaced the init meanwhile
        if sd.alive(st.pid, st.pid_start_time):
            with contextlib.suppress(ProcessLookupError):
                os.kill(st.pid, signal.SIGKILL)        # PID 1 of its namespace: takes the rest along
        cgroup = rec.get("cgroup") or {}
        with contextlib.suppress(ContainerNotFound):
            self._recorded_cgroup(rec).kill_all()
        monitor = int(rec.get("monitor_pid", 0)), int(rec.get("monitor_start_time", 0))
        if sd.alive(*monitor):
            self.wait(container_id, timeout=5.0)
            # and the monitor itself gone: it may still be leaving after recording a final exit
            sd.wait_gone(*monitor, 5.0)
        if cgroup.get("path"):
            self._destroy_cgroup(cgroup["path"])
        self._discard(cdir)

    def _oom_killed(self, rec: dict[str, Any]) -> bool:
        try:
            cg = self._recorded_cgroup(rec)
            baseline = sd.oom_baseline(self.state_dir / str(rec.get("id", "")))   # kills of earlier runs
            return cg.stats().oom_kill_count > baseline if baseline else cg.oom_killed()
        except RuntimeFailure:
            return False

    def _stop_restarts(self, container_id: str) -> bool:
        """Write the user-stop marker (before any signal, so no restart can slip in after it) and wake a
        supervisor waiting out a backoff. True when the container was between two runs (nothing to kill)."""
        cdir = self.state_dir / container_id
        rec = sd.read_state(cdir)
        if rec is None or not (cdir / sd.RESTART_REQ).exists():
            return False                          # no restart policy: nothing to stop
        sd.mark_user_stop(cdir)
        if not sd.restart_pending(sd.read_json(cdir / sd.EXIT), rec):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(rec["monitor_pid"]), signal.SIGTERM)    # only a wake-up: it stays blocked there
        return True

    @staticmethod
    def _kill_created(reply: dict[str, Any]) -> None:
        """Undo of a create that failed after its monitor reported: SIGKILL the init and the monitor
        (checked by start time: never a reused pid), so no unrecorded process lives on."""
        for pid_key, start_key in (("pid", "start_time"), ("monitor_pid", "monitor_start_time")):
            pid, started = int(reply.get(pid_key, 0)), int(reply.get(start_key, 0))
            if sd.alive(pid, started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _destroy_cgroup(self, path: str) -> None:
        with contextlib.suppress(ContainerNotFound):
            self._driver().open(path).destroy()

    # ---- exec and logs ------------------------------------------------------------------------------

    def exec(self, container_id: str, argv: Sequence[str], *, env: Sequence[str] = (),
             cwd: str | None = None, tty: bool = False, capture: bool = True,
             timeout: float | None = None, stdin: bool = False) -> ExecResult:
        if tty and capture:
            raise RuntimeFailure("exec with a tty writes to our stdout: it cannot capture", op="exec",
                                 path=container_id)
        if not argv:
            raise RuntimeFailure("exec needs a command", op="exec", path=container_id)
        st = self.state(container_id)
        if st.status != Status.RUNNING:
            raise RuntimeFailure(f"container {container_id} is {st.status}, not running", op="exec",
                                 path=container_id)
        req = procio.exec_request(self.state_dir / container_id, st, argv, env, cwd)
        def send(request: dict[str, Any], fds: list[int]) -> dict[str, Any]:
            with self._servers.get() as server:
                return server.request(request, fds)
        return procio.run_exec(send, req, capture, timeout, stdin, tty)

    def logs(self, container_id: str, *, since: float = 0.0, follow: bool = False) -> Iterator[LogLine]:
        cdir = self.state_dir / container_id
        if not cdir.is_dir():
            raise ContainerNotFound(f"container {container_id} not found", op="logs", path=str(cdir))
        if not follow:
            yield from sd.iter_log(cdir, since)
            return
        yield from procio.follow(lambda: self.state(container_id).status == Status.STOPPED, cdir, since)
