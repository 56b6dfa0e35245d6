"""The real ``Builder``: the edge between the pure OCI translation and the host.

For each new container it resolves the image (``images.store.ImageStore``), reads the image's
/etc/passwd and /etc/group for user names, stats host devices for blkio/device rules, compiles the
service's seccomp profile reference into ``linux.seccomp`` with the final capability set, writes
``<root>/containers/<id>/config.json`` (temp file + rename), and returns the rootfs mounts (the image's
layers as overlay lowers, or a ``rootfs:`` directory) for the runtime to mount in the container's own
mount namespace. Named volumes are directories under ``<root>/volumes``. Configs and secrets never
touch the disk here: their contents go to ``runtime.create(files=...)`` (see ``reconcile.controller``).

Name resolution files: a container with its own network namespace (``bridge``, ``none``) gets
``<bundle>/hosts``, ``hostname`` and ``resolv.conf`` bind-mounted read-only on /etc; ``reconcile.network``
fills in the hosts file once the container has addresses and rewrites it IN PLACE (same inode, so the
bind stays valid) whenever the stack's names change. Mode ``host`` binds the host's /etc/hosts and
/etc/resolv.conf; mode ``container:NAME`` gets a static hosts file (localhost and its hostname). A
read-only rootfs gets none of them yet (see ``prepare``).

Permissions (why): a container's root can plant setuid binaries and device nodes in its overlay upper
dir, a host directory. The state root is 0711 and ``containers/`` and each bundle 0700 (Docker:
0710/0700), so no host user but root can reach them.

Neighbours: ``runtime.oci`` (pure spec), ``images.store``, ``runtime.linux.seccomp_profiles``; called by
``reconcile.execute`` through the ``Builder`` protocol.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.errors import ReconcileError
from orchestrator.fsutil import Trash, write_atomic
from orchestrator.images.model import Image
from orchestrator.images.mounts import dir_rootfs_mounts
from orchestrator.images.store import ImageStore
from orchestrator.manifest.model import Service
from orchestrator.runtime import oci
from orchestrator.runtime.base import Mount
from orchestrator.runtime.linux import capabilities, seccomp_profiles
from orchestrator.runtime.linux.network.hosts import (
    container_hosts,
    host_nameservers,
    hostname_file,
    resolv_conf,
)
from orchestrator.settings import Settings
from orchestrator.state.desired import DesiredContainer


def device_numbers(service: Service) -> dict[str, tuple[int, int]]:
    """host device path -> (major, minor), for every device the service's limits name."""
    b = service.resources.blkio
    paths = {r.device for r in (*b.read_bps, *b.write_bps, *b.read_iops, *b.write_iops)}
    paths |= {d.path for d in service.resources.devices}
    out: dict[str, tuple[int, int]] = {}
    for p in sorted(paths):
        try:
            rdev = os.stat(p).st_rdev
        except OSError as exc:
            raise ReconcileError(f"service {service.name}: device {p}: {exc.strerror}") from exc
        out[p] = (os.major(rdev), os.minor(rdev))
    return out


ROOT_MODE = 0o711          # others may traverse to what is meant for them (nothing yet), not list
PRIVATE_MODE = 0o700       # containers/ and every bundle: root only
DISCOVERY_FILES = ("hosts", "hostname", "resolv.conf")
_BIND_RO = ["rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"]


def private_dir(path: Path, mode: int) -> None:
    """``path`` exists with exactly ``mode`` (mkdir's mode is filtered by the umask, so chmod after)."""
    path.mkdir(mode=mode, exist_ok=True)
    if path.stat().st_mode & 0o7777 != mode:
        os.chmod(path, mode)


def hostname_of(dc: DesiredContainer) -> str:
    return dc.spec.hostname or f"{dc.service}-{dc.replica}"


class BundleBuilder:
    def __init__(self, settings: Settings, images: ImageStore | None = None) -> None:
        self.settings = settings
        self.images = images or ImageStore(settings.images_dir)
        self.paths = oci.Paths(settings.volumes_dir)
        self._seccomp: dict[tuple[str, tuple[str, ...]], dict[str, Any] | None] = {}
        self._lock = threading.Lock()
        self._trash: Trash | None = None
        with contextlib.suppress(OSError):
            if os.listdir(settings.root / "trash"):
                self._trash = Trash(settings.root / "trash")     # what a crash left there: removed now

    def image(self, ref: str) -> Image:
        return self.images.get(ref)

    def _etc(self, image: Image, name: str) -> str:
        for chain in reversed(image.layers):
            path = self.images.layer_dir(chain) / "etc" / name
            if path.is_file():
                return path.read_text(errors="replace")
        return ""

    def _seccomp_for(self, ref: str, caps: Sequence[str]) -> dict[str, Any] | None:
        key = (ref, tuple(caps))
        with self._lock:
            if key not in self._seccomp:
                profile = seccomp_profiles.load_profile(ref)
                self._seccomp[key] = (None if profile is None
                                      else seccomp_profiles.profile_to_oci(profile, caps))
            return self._seccomp[key]

    def config(self, dc: DesiredContainer, image: Image | None, netns_path: str = "") -> dict[str, Any]:
        svc = dc.spec
        passwd = group = ""
        if image is not None and svc.user and not svc.user.split(":")[0].isdigit():
            passwd, group = self._etc(image, "passwd"), self._etc(image, "group")
        cfg = oci.build_config(dc.stack_spec, svc, dc.replica, image.config if image else None,
                               paths=self.paths, devices=device_numbers(svc), passwd=passwd, group=group,
                               host_nofile_hard=resource.getrlimit(resource.RLIMIT_NOFILE)[1],
                               netns_path=netns_path)
        caps = capabilities.resolve(svc.security.cap_add, svc.security.cap_drop)
        seccomp = self._seccomp_for(svc.security.seccomp, caps)
        if seccomp is not None:
            cfg["linux"]["seccomp"] = seccomp
        return cfg

    def prepare(self, dc: DesiredContainer, cid: str, netns_path: str = "") -> tuple[Path, Sequence[Mount]]:
        svc = dc.spec
        image = self.image(svc.image) if svc.image else None
        cdir = self.settings.containers_dir / cid
        cfg = self.config(dc, image, netns_path)
        try:
            self._private_dirs(cdir)
            for d in (cdir / "rootfs", cdir / "upper", cdir / "work"):
                d.mkdir(exist_ok=True)
            discovery = self._discovery(dc, cid, cdir)
            if svc.security.read_only_rootfs:
                # the overlay is mounted "ro" from the start, so the runtime cannot create a missing
                # mount point; make them in the (still empty) upper dir, as Docker's init layer does
                for m in discovery:
                    point = cdir / "upper" / m["destination"].lstrip("/")
                    point.parent.mkdir(parents=True, exist_ok=True)
                    point.touch(exist_ok=True)
            cfg["mounts"] += discovery
            write_atomic(cdir / "config.json", json.dumps(cfg, indent=1, sort_keys=True).encode(),
                         mode=0o644)
        except OSError as exc:
            raise ReconcileError(f"{dc.slot}: cannot write bundle {cdir}: {exc.strerror}") from exc
        ro = svc.security.read_only_rootfs
        if image is not None:
            mounts: Sequence[Mount] = self.images.rootfs_mounts(image, cdir / "upper", cdir / "work", ro)
        else:
            mounts = dir_rootfs_mounts(Path(svc.rootfs), cdir / "upper", cdir / "work", readonly=ro)
        return cdir, mounts

    def _private_dirs(self, cdir: Path) -> None:
        root = self.settings.root
        if not root.exists():
            # only a root we create gets its mode set: ORCHESTRATOR_ROOT may name a shared directory
            root.parent.mkdir(parents=True, exist_ok=True)
            private_dir(root, ROOT_MODE)
        private_dir(self.settings.containers_dir, PRIVATE_MODE)
        private_dir(cdir, PRIVATE_MODE)

    def _discovery(self, dc: DesiredContainer, cid: str, cdir: Path) -> list[dict[str, Any]]:
        """Write the bundle's name resolution files; return their bind mounts (after every other mount,
        so a volume on /etc does not hide them)."""
        mode = dc.spec.network.mode
        if mode == "host":
            return [{"destination": f"/etc/{name}", "type": "bind", "source": f"/etc/{name}",
                     "options": list(_BIND_RO)}
                    for name in ("hosts", "resolv.conf") if os.path.isfile(f"/etc/{name}")]
        hostname = hostname_of(dc)
        texts = {"hosts": container_hosts(cid, (), hostname), "hostname": hostname_file(hostname),
                 "resolv.conf": resolv_conf(host_nameservers() if mode == "bridge" else [])}
        for name, text in texts.items():
            (cdir / name).write_text(text)
        return [{"destination": f"/etc/{name}", "type": "bind", "source": str(cdir / name),
                 "options": list(_BIND_RO)} for name in DISCOVERY_FILES]

    def resources(self, dc: DesiredContainer) -> Mapping[str, Any]:
        return oci.resources(dc.spec.resources, device_numbers(dc.spec))

    def cleanup(self, cid: str) -> None:
        """Drop a deleted container's dir (bundle, writable layer): gone at once for every reader, its
        files unlinked in the background (``Trash``: a writable layer may hold any number of them, and
        the reconciler waits for this)."""
        cdir = self.settings.containers_dir / cid
        with self._lock:
            try:
                if self._trash is None:
                    self._trash = Trash(self.settings.root / "trash")
                trash = self._trash
            except OSError:              # no trash dir to be had: remove it here, as before
                trash = None
        if trash is None:
            shutil.rmtree(cdir, ignore_errors=True)
            return
        trash.discard(cdir)

    def close(self) -> None:
        """Until the dropped dirs are gone from the disk (a crash leaves them to the next start)."""
        with self._lock:
            trash, self._trash = self._trash, None
        if trash is not None:
            trash.close()

    def volume_path(self, stack: str, name: str) -> Path:
        return self.settings.volumes_dir / f"{stack}_{name}"

    def make_volume(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReconcileError(f"cannot create volume {path}: {exc.strerror}") from exc

    def remove_volume(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
