"""The frozen, typed model of a stack: what every module past ``orchestrator.manifest`` works with.

Produced only by ``manifest.convert`` from input that passed the schema and the checks, so every value
here is already valid: units are parsed (bytes as int, CPUs as float, durations as float seconds),
defaults are applied, relative paths are resolved against the manifest's directory. No raw dict leaves
the manifest package; collections are tuples (sorted where order carries no meaning) so models hash and
compare by value.

Neighbours: ``manifest.convert`` builds these; ``manifest.hashing`` derives the per-container spec hash;
``reconcile`` expands services to replicas; ``runtime.oci`` turns a service into an OCI runtime spec;
``interop`` maps them to and from Compose and Kubernetes.

Which fields need a recreate when they change (and so enter the spec hash) and which are applied in
place is decided in ``manifest.hashing``: resources (cgroup limits), replicas, restart, healthcheck,
dependsOn, update and labels are in place; everything that shapes the container's process, filesystem,
namespaces or security is recreate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RestartPolicyName = Literal["never", "on-failure", "always"]
DependencyCondition = Literal["started", "healthy", "completed"]
NetworkModeName = Literal["bridge", "none", "host", "container"]
VolumeType = Literal["bind", "volume", "tmpfs"]
OnChange = Literal["restart", "signal", "none"]


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where an object was declared, for messages at plan time (``file:line:col``; 1-based)."""

    file: str = ""
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line else self.file


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    policy: RestartPolicyName = "on-failure"
    max_retries: int | None = None          # None = unlimited (for on-failure and always)
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    reset_after_s: float = 60.0             # running this long resets the backoff


@dataclass(frozen=True, slots=True)
class DeviceRate:
    device: str                              # host path, e.g. /dev/vda
    rate: int                                # bytes/s or IO/s


@dataclass(frozen=True, slots=True)
class Blkio:
    weight: int | None = None                # 10..1000
    read_bps: tuple[DeviceRate, ...] = ()
    write_bps: tuple[DeviceRate, ...] = ()
    read_iops: tuple[DeviceRate, ...] = ()
    write_iops: tuple[DeviceRate, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceRule:
    """A host device made available in the container (added to the devices cgroup allowlist)."""

    path: str
    permissions: str = "rwm"


@dataclass(frozen=True, slots=True)
class Resources:
    cpus: float | None = None                # CFS quota/period
    cpu_shares: int | None = None            # v1 cpu.shares; v2 cpu.weight by conversion
    cpuset_cpus: str | None = None           # "0-1,3"
    cpuset_mems: str | None = None
    memory: int | None = None                # bytes
    memory_swap: int | None = None           # bytes, memory + swap; -1 unlimited
    memory_reservation: int | None = None
    pids: int = 4096                         # always limited
    blkio: Blkio = field(default_factory=Blkio)
    devices: tuple[DeviceRule, ...] = ()


@dataclass(frozen=True, slots=True)
class UserNamespace:
    uid_map: tuple[tuple[int, int, int], ...] = ((0, 100000, 65536),)   # (container, host, size)
    gid_map: tuple[tuple[int, int, int], ...] = ((0, 100000, 65536),)


@dataclass(frozen=True, slots=True)
class Security:
    seccomp: str = "default"                 # "default" | "unconfined" | absolute path to a profile
    cap_add: tuple[str, ...] = ()            # normalised "CAP_X", sorted
    cap_drop: tuple[str, ...] = ()
    read_only_rootfs: bool = False
    no_new_privileges: bool = True
    userns: UserNamespace | None = None
    sysctls: tuple[tuple[str, str], ...] = ()
    masked_paths: tuple[str, ...] = ()       # in addition to the defaults
    readonly_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Ulimit:
    name: str                                # "nofile", "nproc", ... (RLIMIT_ name, lowercase)
    soft: int
    hard: int


@dataclass(frozen=True, slots=True)
class Healthcheck:
    kind: Literal["exec", "http", "tcp"]
    exec: tuple[str, ...] = ()
    http_path: str = "/"
    port: int = 0                            # http and tcp
    http_status: int = 200                   # expected status
    interval_s: float = 10.0
    timeout_s: float = 5.0
    retries: int = 3
    start_period_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Dependency:
    service: str
    condition: DependencyCondition = "started"


@dataclass(frozen=True, slots=True)
class Port:
    host_port: int
    container_port: int
    protocol: Literal["tcp", "udp"] = "tcp"
    host_ip: str = ""                        # "" = all addresses

    def __str__(self) -> str:
        ip = f"{self.host_ip}:" if self.host_ip else ""
        return f"{ip}{self.host_port}:{self.container_port}/{self.protocol}"


@dataclass(frozen=True, slots=True)
class VolumeMount:
    type: VolumeType
    target: str                              # absolute path inside the container
    source: str = ""                         # bind: absolute host path; volume: volume name; tmpfs: ""
    read_only: bool = False
    tmpfs_size: int | None = None            # bytes
    tmpfs_mode: int = 0o1777


@dataclass(frozen=True, slots=True)
class NetworkMode:
    mode: NetworkModeName = "bridge"
    container: str = ""                      # mode "container": the service whose net ns we join
    networks: tuple[str, ...] = ("default",)  # mode "bridge": stack networks joined, sorted


@dataclass(frozen=True, slots=True)
class Namespaces:
    """Which namespaces are private (the default) or shared with the host."""

    pid: Literal["private", "host"] = "private"
    ipc: Literal["private", "host"] = "private"
    uts: Literal["private", "host"] = "private"
    cgroup: Literal["private", "host"] = "private"


@dataclass(frozen=True, slots=True)
class UpdateConfig:
    order: Literal["start-first", "stop-first"] = "stop-first"
    parallelism: int = 1
    failure_action: Literal["rollback", "pause"] = "rollback"
    monitor_s: float = 5.0                   # how long a new replica must stay healthy
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class FileMount:
    """A config or secret mounted into a service (read-only)."""

    name: str                                # the stack-level config/secret name
    target: str                              # absolute path in the container
    uid: int = 0
    gid: int = 0
    mode: int = 0o444
    on_change: OnChange = "restart"
    signal: str = ""                         # on_change "signal": e.g. "SIGHUP"
    env: str = ""                            # secrets only: also expose as this env var


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    image: str = ""                          # "name:tag" in the local image store; "" when rootfs is set
    rootfs: str = ""                         # absolute host directory used as the read-only lower layer
    entrypoint: tuple[str, ...] | None = None    # None = the image's
    command: tuple[str, ...] | None = None       # None = the image's
    env: tuple[tuple[str, str], ...] = ()        # sorted by name
    working_dir: str = ""
    user: str = ""                           # "uid[:gid]" or a name from the image's /etc/passwd
    groups: tuple[int, ...] = ()             # supplementary gids
    hostname: str = ""                       # "" = the replica name
    replicas: int = 1
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    resources: Resources = field(default_factory=Resources)
    security: Security = field(default_factory=Security)
    ulimits: tuple[Ulimit, ...] = ()
    oom_score_adj: int | None = None
    healthcheck: Healthcheck | None = None
    depends_on: tuple[Dependency, ...] = ()
    ports: tuple[Port, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    network: NetworkMode = field(default_factory=NetworkMode)
    namespaces: Namespaces = field(default_factory=Namespaces)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    stop_signal: str = "SIGTERM"
    stop_grace_period_s: float = 10.0
    labels: tuple[tuple[str, str], ...] = ()
    configs: tuple[FileMount, ...] = ()
    secrets: tuple[FileMount, ...] = ()
    source: SourceRef = field(default_factory=SourceRef, compare=False)


@dataclass(frozen=True, slots=True)
class Volume:
    name: str
    labels: tuple[tuple[str, str], ...] = ()
    source: SourceRef = field(default_factory=SourceRef, compare=False)


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    subnet: str | None = None                # None = allocated from the private pool
    internal: bool = False                   # no default route / no published ports
    source: SourceRef = field(default_factory=SourceRef, compare=False)


@dataclass(frozen=True, slots=True)
class Config:
    name: str
    file: str = ""                           # absolute path, read at plan time
    content: str | None = None               # inline content
    source: SourceRef = field(default_factory=SourceRef, compare=False)


@dataclass(frozen=True, slots=True)
class Secret:
    """Where a secret comes from; its value is never stored in the model (read when materialised)."""

    name: str
    file: str = ""
    env: str = ""                            # an environment variable of the orchestrator
    sops_file: str = ""
    source: SourceRef = field(default_factory=SourceRef, compare=False)


@dataclass(frozen=True, slots=True)
class Stack:
    name: str
    services: tuple[Service, ...] = ()       # sorted by name
    volumes: tuple[Volume, ...] = ()
    networks: tuple[Network, ...] = ()       # always includes "default" unless every service opts out
    configs: tuple[Config, ...] = ()
    secrets: tuple[Secret, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    source: SourceRef = field(default_factory=SourceRef, compare=False)

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class StackSet:
    """Everything loaded from one invocation's sources (files, directories, a git checkout)."""

    stacks: tuple[Stack, ...] = ()           # sorted by name
    files: tuple[str, ...] = ()              # every file read, sorted

    def stack(self, name: str) -> Stack:
        for s in self.stacks:
            if s.name == name:
                return s
        raise KeyError(name)
