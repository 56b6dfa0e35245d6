"""Service -> OCI runtime-spec ``config.json`` (runc's ``specconv`` as its own layer). Pure.

Everything that needs the host is looked up at the edge (``reconcile.bundle``) and passed in:
``devices`` maps a host device path to (major, minor) for blkio throttles and device rules; ``passwd`` /
``group`` are the image's files for user names; ``netns_path`` is the network namespace the network
driver made (``""``: a fresh empty one; mode ``host``: none). The seccomp profile is passed on as a
REFERENCE annotation (``org.orchestrator.seccomp``) that the edge compiles into ``linux.seccomp`` with
the final capability set, so this stays pure and fast.

Defaults follow Docker/runc: the 14 default capabilities +add -drop (``runtime.linux.capabilities``),
the masked and read-only paths and NOFILE rlimit of ``runtime.linux.security_defaults``, the standard
/proc /dev /dev/pts /dev/shm /dev/mqueue /sys mounts, ``noNewPrivileges`` unless opted out.

Neighbours: called by ``reconcile.bundle``; consumed by ``runtime.linux.spec.load_bundle``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ReconcileError
from orchestrator.images.model import ImageConfig
from orchestrator.manifest.model import DeviceRate, Resources, Service, Stack
from orchestrator.runtime.linux import capabilities
from orchestrator.runtime.linux.security_defaults import DEFAULT_RLIMITS, MASKED_PATHS, READONLY_PATHS

OCI_VERSION = "1.0.2"
ANNOTATION_PREFIX = "org.orchestrator."
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CFS_PERIOD_US = 100_000
# runc's default device allowlist (libcontainer/specconv AllowedDevices): mknod of anything, and the
# standard character devices every container's /dev has (null, zero, full, random, urandom, tty,
# ptmx, pts/*, net/tun); omitted major/minor mean "any"
DEFAULT_DEVICE_RULES: tuple[dict[str, Any], ...] = (
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": mj, "minor": mn, "access": "rwm"}
      for mj, mn in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (10, 200))),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},
)


@dataclass(frozen=True)
class Paths:
    volumes_dir: Path                    # named volume NAME of stack S lives at volumes_dir / "S_NAME"


def _base_mounts(service: Service) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        # sysfs of the host is only safe read-only, and only with our own network namespace
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]
    if service.namespaces.cgroup == "private":
        mounts.append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                       "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
    return mounts


def _volume_mounts(stack: Stack, service: Service, paths: Paths) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for v in service.volumes:
        if v.type == "tmpfs":
            opts = ["nosuid", "nodev", f"mode={v.tmpfs_mode:o}"]
            if v.tmpfs_size:
                opts.append(f"size={v.tmpfs_size}")
            out.append({"destination": v.target, "type": "tmpfs", "source": "tmpfs", "options": opts})
            continue
        source = v.source if v.type == "bind" else str(paths.volumes_dir / f"{stack.name}_{v.source}")
        out.append({"destination": v.target, "type": "bind", "source": source,
                    "options": ["rbind", "rprivate", "ro" if v.read_only else "rw"]})
    return out      # configs and secrets are not mounts here: the runtime delivers them (runtime.files)


def _user(user: str, passwd: str, group: str) -> tuple[int, int]:
    """``uid[:gid]`` or ``name[:group]`` (resolved in the image's /etc/passwd and /etc/group)."""
    if not user:
        return 0, 0
    name, _, grp = user.partition(":")

    def lookup(text: str, key: str, what: str) -> tuple[int, int]:
        for line in text.splitlines():
            f = line.split(":")
            if len(f) >= 4 and f[0] == key and f[2].isdigit():
                return int(f[2]), int(f[3]) if f[3].isdigit() else 0
        raise ReconcileError(f"user {user!r}: no {what} {key!r} in the image")

    uid, gid = (int(name), 0) if name.isdigit() else lookup(passwd, name, "passwd entry")
    if grp:
        gid = int(grp) if grp.isdigit() else lookup(group, grp, "group")[0]
    return uid, gid


def process_args(service: Service, image: ImageConfig | None) -> list[str]:
    """Docker's rule: entrypoint + command, each falling back to the image's; a service entrypoint
    resets the image's Cmd."""
    img = image or ImageConfig()
    entry = list(service.entrypoint) if service.entrypoint is not None else list(img.entrypoint)
    if service.command is not None:
        cmd = list(service.command)
    else:
        cmd = [] if service.entrypoint is not None else list(img.cmd)
    args = entry + cmd
    if not args:
        raise ReconcileError(f"service {service.name}: no command (neither the service nor the image has "
                             "an entrypoint or cmd)")
    return args


def _env(service: Service, image: ImageConfig | None, hostname: str) -> list[str]:
    env: dict[str, str] = {}
    for item in (DEFAULT_PATH, f"HOSTNAME={hostname}", *(image.env if image else ())):
        k, _, v = item.partition("=")
        env[k] = v
    env.update(service.env)
    return [f"{k}={v}" for k, v in env.items()]


def _rates(items: tuple[DeviceRate, ...], devices: Mapping[str, tuple[int, int]]) -> list[dict[str, int]]:
    out = []
    for r in items:
        if r.device not in devices:
            raise ReconcileError(f"blkio: device {r.device} not found on this host")
        major, minor = devices[r.device]
        out.append({"major": major, "minor": minor, "rate": r.rate})
    return out


def resources(res: Resources, devices: Mapping[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """OCI ``linux.resources`` (also what an in-place update writes)."""
    devices = devices or {}
    out: dict[str, Any] = {"pids": {"limit": res.pids}}
    mem: dict[str, int] = {}
    if res.memory is not None:
        mem["limit"] = res.memory
    if res.memory_swap is not None:
        mem["swap"] = res.memory_swap
    if res.memory_reservation is not None:
        mem["reservation"] = res.memory_reservation
    if mem:
        out["memory"] = mem
    cpu: dict[str, Any] = {}
    if res.cpus is not None:
        cpu["quota"], cpu["period"] = int(res.cpus * CFS_PERIOD_US), CFS_PERIOD_US
    if res.cpu_shares is not None:
        cpu["shares"] = res.cpu_shares
    if res.cpuset_cpus:
        cpu["cpus"] = res.cpuset_cpus
    if res.cpuset_mems:
        cpu["mems"] = res.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    b = res.blkio
    blk: dict[str, Any] = {}
    if b.weight is not None:
        blk["weight"] = b.weight
    for key, items in (("throttleReadBpsDevice", b.read_bps), ("throttleWriteBpsDevice", b.write_bps),
                       ("throttleReadIOPSDevice", b.read_iops), ("throttleWriteIOPSDevice", b.write_iops)):
        if items:
            blk[key] = _rates(items, devices)
    if blk:
        out["blockIO"] = blk
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}, *DEFAULT_DEVICE_RULES]
    for d in res.devices:
        if d.path not in devices:
            raise ReconcileError(f"device {d.path} not found on this host")
        major, minor = devices[d.path]
        rules.append({"allow": True, "type": "c", "major": major, "minor": minor, "access": d.permissions})
    out["devices"] = rules
    return out


def restart_annotations(service: Service) -> dict[str, str]:
    """The restart policy for the runtime's supervisor (``runtime.linux.restart`` reads these keys):
    restarts happen in the runtime, also while no orchestrator process runs."""
    r, p = service.restart, f"{ANNOTATION_PREFIX}restart."
    out = {f"{p}policy": r.policy, f"{p}backoff-initial": f"{r.backoff_initial_s:g}",
           f"{p}backoff-max": f"{max(r.backoff_max_s, r.backoff_initial_s):g}",
           f"{p}reset-after": f"{r.reset_after_s:g}"}
    if r.max_retries is not None:
        out[f"{p}max-retries"] = str(r.max_retries)
    return out


def _namespaces(service: Service, netns_path: str) -> list[dict[str, str]]:
    ns = [{"type": "mount"}]
    for kind, oci in (("pid", "pid"), ("ipc", "ipc"), ("uts", "uts"), ("cgroup", "cgroup")):
        if getattr(service.namespaces, kind) == "private":
            ns.append({"type": oci})
    if service.network.mode != "host":
        ns.append({"type": "network", "path": netns_path} if netns_path else {"type": "network"})
    if service.security.userns is not None:
        ns.append({"type": "user"})
    return ns


def build_config(stack: Stack, service: Service, replica: int, image: ImageConfig | None, *,
                 paths: Paths, devices: Mapping[str, tuple[int, int]] | None = None, passwd: str = "",
                 group: str = "", netns_path: str = "", cgroups_path: str = "",
                 host_nofile_hard: int | None = None) -> dict[str, Any]:
    """The whole ``config.json`` for replica ``replica`` of ``service``.

    ``host_nofile_hard``: the default NOFILE limits are clamped to it (raising a hard limit needs
    CAP_SYS_RESOURCE, which a sandboxed host may lack; explicit ulimits are passed through as given)."""
    sec = service.security
    hostname = service.hostname or f"{service.name}-{replica}"
    caps = capabilities.resolve(sec.cap_add, sec.cap_drop)
    uid, gid = _user(service.user or (image.user if image else ""), passwd, group)
    process: dict[str, Any] = {
        "terminal": False,
        "user": {"uid": uid, "gid": gid, **({"additionalGids": list(service.groups)} if service.groups
                                            else {})},
        "args": process_args(service, image),
        "env": _env(service, image, hostname),
        "cwd": service.working_dir or (image.working_dir if image else "") or "/",
        "capabilities": capabilities.oci_capabilities(caps),
        "noNewPrivileges": sec.no_new_privileges,
    }
    overridden = {f"RLIMIT_{u.name.upper()}" for u in service.ulimits}
    cap = host_nofile_hard if host_nofile_hard is not None else 1 << 62
    limits = [{"type": r.type, "soft": min(r.soft, cap) if r.type == "RLIMIT_NOFILE" else r.soft,
               "hard": min(r.hard, cap) if r.type == "RLIMIT_NOFILE" else r.hard}
              for r in DEFAULT_RLIMITS if r.type not in overridden]
    limits += [{"type": f"RLIMIT_{u.name.upper()}", "soft": u.soft, "hard": u.hard} for u in service.ulimits]
    process["rlimits"] = limits
    if service.oom_score_adj is not None:
        process["oomScoreAdj"] = service.oom_score_adj
    linux: dict[str, Any] = {
        "namespaces": _namespaces(service, netns_path),
        "resources": resources(service.resources, devices),
        "maskedPaths": [*MASKED_PATHS, *sec.masked_paths],
        "readonlyPaths": [*READONLY_PATHS, *sec.readonly_paths],
    }
    if sec.sysctls:
        linux["sysctl"] = dict(sec.sysctls)
    if sec.userns is not None:
        linux["uidMappings"] = [{"containerID": c, "hostID": h, "size": s} for c, h, s in sec.userns.uid_map]
        linux["gidMappings"] = [{"containerID": c, "hostID": h, "size": s} for c, h, s in sec.userns.gid_map]
    if cgroups_path:
        linux["cgroupsPath"] = cgroups_path
    annotations = {f"{ANNOTATION_PREFIX}stack": stack.name, f"{ANNOTATION_PREFIX}service": service.name,
                   f"{ANNOTATION_PREFIX}replica": str(replica), f"{ANNOTATION_PREFIX}seccomp": sec.seccomp,
                   f"{ANNOTATION_PREFIX}stop-signal": service.stop_signal,
                   **restart_annotations(service),
                   **{f"{ANNOTATION_PREFIX}label.{k}": v for k, v in service.labels}}
    return {"ociVersion": OCI_VERSION, "process": process,
            "root": {"path": "rootfs", "readonly": sec.read_only_rootfs}, "hostname": hostname,
            "mounts": _base_mounts(service) + _volume_mounts(stack, service, paths), "linux": linux,
            "annotations": annotations}
