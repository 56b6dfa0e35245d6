"""Helpers of the adversarial escape suite (imported by its conftest and tests): the session's shared
objects (``Escape``: rootfs, host-only markers, the native runtime, the bundle builder), the rootfs
builder and the parsers of the probe's ``key value`` output.

Each container's ``config.json`` comes from the reconciler's own edge (``reconcile.bundle.BundleBuilder``
over ``runtime.oci.build_config``, with the ``default`` seccomp profile compiled for the final capability
set) from a one-service manifest, so the tests exercise the defaults a user gets: Docker's 14
capabilities, no_new_privs, the default seccomp profile, masked and read-only paths, every namespace and
the default device allowlist. The root filesystem: busybox-static, the static escape probe
(``escape_probe.c``, compiled with ``gcc -static``) at ``/probe``, a setuid-root copy of it, and symlinks
that point at a host directory of the session's tmp dir (the "evil" volume targets).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rootfs_kit import build_busybox_rootfs

from orchestrator import manifest as manifests
from orchestrator.images.mounts import dir_rootfs_mounts, overlay_mount
from orchestrator.reconcile.bundle import BundleBuilder
from orchestrator.runtime.base import ContainerState, Mount
from orchestrator.settings import Settings
from orchestrator.state.desired import DesiredContainer

HERE = Path(__file__).parent
PROBE = "/probe/escape_probe"              # inside the container
PROBE_SUID = "/probe/escape_probe_suid"    # setuid-root copy


@dataclass
class Escape:
    """The session's shared objects: rootfs, host-only markers, the native runtime."""

    base: Path                   # session tmp dir
    rootfs: Path                 # read-only lower layer of every container
    host_marker: Path            # a file that exists only on the host
    host_dir: Path               # host directory the rootfs symlinks point at (must stay untouched)
    runtime: Any                 # LinuxRuntime
    cgroup_parent: str
    settings: Settings
    builder: BundleBuilder
    count: int = 0
    c_init: bool = True          # warm spares' init in C (orch-init) or Python (conftest's params)
    containers: list[tuple[Any, str]] = field(default_factory=list)

    def service(self, command: list[str], **extra: Any) -> dict[str, Any]:
        svc: dict[str, Any] = {"rootfs": str(self.rootfs), "command": command, "network": "none"}
        svc.update(extra)
        return svc

    def desired(self, svc: dict[str, Any]) -> DesiredContainer:
        """The reconciler's view of a one-service stack (service "probe" of stack "esc")."""
        doc = {"apiVersion": "orchestrator/v1", "kind": "Stack", "metadata": {"name": "esc"},
               "spec": {"services": {"probe": svc}}}
        stackset = manifests.load_text(json.dumps(doc), str(self.base / "stack.yaml"))
        stack = stackset.stack("esc")
        service = stack.service("probe")
        return DesiredContainer(slot="esc/probe-1", stack="esc", service="probe", replica=1, spec_hash="",
                                resources_hash="", config_hash="", image="", image_id="", spec=service,
                                stack_spec=stack)

    def config(self, svc: dict[str, Any]) -> dict[str, Any]:
        """config.json for a one-service stack, through the reconciler's bundle builder."""
        return self.builder.config(self.desired(svc), None)

    def bundle(self, where: Path, config: dict[str, Any], top: Path | None = None,
               ) -> tuple[Path, list[Mount]]:
        """A bundle dir with ``config`` and the overlay rootfs mount (own upper/work dirs); ``top`` is an
        extra lower layer above the session rootfs (a test's own "image" changes)."""
        self.count += 1
        bundle = where / f"bundle{self.count}"
        for d in ("rootfs", "upper", "work"):
            (bundle / d).mkdir(parents=True)
        (bundle / "config.json").write_text(json.dumps(config, indent=1))
        ro = bool(config["root"].get("readonly"))
        if top is not None:
            return bundle, [overlay_mount([str(top), str(self.rootfs)], bundle / "upper", bundle / "work",
                                          readonly=ro)]
        return bundle, dir_rootfs_mounts(self.rootfs, bundle / "upper", bundle / "work", readonly=ro)

    def create(self, where: Path, config: dict[str, Any], runtime: Any = None, top: Path | None = None,
               ) -> str:
        rt = runtime or self.runtime
        cid = f"esc-{uuid.uuid4().hex[:10]}"
        bundle, mounts = self.bundle(where, config, top)
        self.containers.append((rt, cid))
        rt.create(cid, bundle, mounts)
        return cid

    def run(self, where: Path, config: dict[str, Any], runtime: Any = None, top: Path | None = None,
            ) -> tuple[ContainerState, list[str], list[str]]:
        """Create, start and wait for a container; its state, stdout lines and stderr lines."""
        rt = runtime or self.runtime
        cid = self.create(where, config, rt, top)
        rt.start(cid)
        st = rt.wait(cid, timeout=20)
        lines = list(rt.logs(cid))
        return (st, [ln.text for ln in lines if ln.stream == "stdout"],
                [ln.text for ln in lines if ln.stream == "stderr"])

    def cleanup(self) -> None:
        while self.containers:
            rt, cid = self.containers.pop()
            with contextlib.suppress(Exception):
                rt.delete(cid, force=True)


def build_rootfs(dest: Path, probe: Path, host_dir: Path) -> None:
    build_busybox_rootfs(dest, extra_dirs=("probe",))
    shutil.copy2(probe, dest / "probe" / "escape_probe")
    suid = dest / "probe" / "escape_probe_suid"
    shutil.copy2(probe, suid)
    os.chown(suid, 0, 0)
    suid.chmod(0o4755)
    # volume targets that are symlinks to a host directory: absolute, relative with many "..", and a
    # symlinked parent directory
    os.symlink(str(host_dir), dest / "evil")
    os.symlink("../" * 32 + str(host_dir).lstrip("/"), dest / "evilrel")
    os.symlink(str(host_dir.parent), dest / "evilparent")


def parse(lines: list[str]) -> dict[str, str]:
    """``key value`` lines (the probe's output) as a dict; the value is the rest of the line."""
    return {k: v for k, _, v in (line.partition(" ") for line in lines)}


def errnos(lines: list[str]) -> dict[str, int]:
    return {k: int(v) for k, v in parse(lines).items() if v.lstrip("-").isdigit()}
