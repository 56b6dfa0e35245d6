"""runtime.oci: service -> OCI runtime-spec config, pure."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.errors import ReconcileError
from orchestrator.images.model import ImageConfig
from orchestrator.manifest.model import (
    Blkio,
    DeviceRate,
    Namespaces,
    NetworkMode,
    Resources,
    Security,
    Service,
    Stack,
    Ulimit,
    UserNamespace,
    VolumeMount,
)
from orchestrator.runtime import oci
from orchestrator.runtime.linux import spec as linux_spec
from orchestrator.runtime.linux.security_defaults import DEFAULT_CAPABILITIES, MASKED_PATHS

PATHS = oci.Paths(Path("/state/volumes"))
IMG = ImageConfig(entrypoint=("/docker-entrypoint.sh",), cmd=("nginx", "-g", "daemon off;"),
                  env=("PATH=/opt/bin:/bin", "NGINX_VERSION=1.25"), working_dir="/srv", user="")


def build(service: Service, image: ImageConfig | None = IMG, **kw: object) -> dict:  # type: ignore[type-arg]
    return oci.build_config(Stack(name="shop", services=(service,)), service, 2, image, paths=PATHS,
                            **kw)  # type: ignore[arg-type]


def test_args_follow_docker_rules() -> None:
    assert oci.process_args(Service("a"), IMG) == ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
    assert oci.process_args(Service("a", command=("sh",)), IMG) == ["/docker-entrypoint.sh", "sh"]
    # a service entrypoint resets the image's cmd
    assert oci.process_args(Service("a", entrypoint=("/bin/sh", "-c")), IMG) == ["/bin/sh", "-c"]
    with pytest.raises(ReconcileError, match="no command"):
        oci.process_args(Service("a"), None)


def test_process_env_cwd_hostname_user() -> None:
    cfg = build(Service("web", env=(("MODE", "prod"), ("PATH", "/x"))))
    p = cfg["process"]
    assert p["env"] == ["PATH=/x", "HOSTNAME=web-2", "NGINX_VERSION=1.25", "MODE=prod"]
    assert p["cwd"] == "/srv" and cfg["hostname"] == "web-2" and p["user"] == {"uid": 0, "gid": 0}
    assert p["noNewPrivileges"] is True and p["terminal"] is False
    passwd = "root:x:0:0::/root:/bin/sh\nnginx:x:101:102::/:/sbin/nologin\n"
    group = "root:x:0:\nwww:x:33:\n"
    assert build(Service("w", user="nginx"), passwd=passwd)["process"]["user"] == {"uid": 101, "gid": 102}
    assert build(Service("w", user="nginx:www"), passwd=passwd, group=group)["process"]["user"]["gid"] == 33
    assert build(Service("w", user="1000:5", groups=(7,)))["process"]["user"] == {
        "uid": 1000, "gid": 5, "additionalGids": [7]}
    with pytest.raises(ReconcileError, match="no passwd entry 'ghost'"):
        build(Service("w", user="ghost"), passwd=passwd)


def test_capabilities_default_add_drop() -> None:
    caps = build(Service("w"))["process"]["capabilities"]
    assert set(caps["bounding"]) == set(DEFAULT_CAPABILITIES) and caps["bounding"] == caps["effective"]
    sec = Security(cap_add=("CAP_NET_ADMIN",), cap_drop=("CAP_NET_RAW", "CAP_CHOWN"))
    got = set(build(Service("w", security=sec))["process"]["capabilities"]["permitted"])
    assert got == (set(DEFAULT_CAPABILITIES) | {"CAP_NET_ADMIN"}) - {"CAP_NET_RAW", "CAP_CHOWN"}


def test_rlimits_default_clamped_and_overridden() -> None:
    assert build(Service("w"), host_nofile_hard=20000)["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 20000}]
    got = build(Service("w", ulimits=(Ulimit("nofile", 10, 20), Ulimit("nproc", 5, 6))))["process"]["rlimits"]
    assert got == [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}, {"type": "RLIMIT_NPROC", "soft": 5,
                                                                       "hard": 6}]
    assert build(Service("w", oom_score_adj=500))["process"]["oomScoreAdj"] == 500


def test_mounts_volumes_tmpfs_binds() -> None:
    vols = (VolumeMount("volume", "/data", "data"), VolumeMount("bind", "/cfg", "/etc/app", read_only=True),
            VolumeMount("tmpfs", "/scratch", tmpfs_size=1 << 20, tmpfs_mode=0o700))
    mounts = {m["destination"]: m for m in build(Service("w", volumes=vols))["mounts"]}
    assert [d for d in mounts if d.startswith(("/proc", "/dev", "/sys"))] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    assert "ro" in mounts["/sys"]["options"]
    assert mounts["/data"]["source"] == "/state/volumes/shop_data" and "rw" in mounts["/data"]["options"]
    assert mounts["/cfg"]["source"] == "/etc/app" and "ro" in mounts["/cfg"]["options"]
    assert mounts["/scratch"]["options"] == ["nosuid", "nodev", "mode=700", f"size={1 << 20}"]


def test_namespaces_network_modes_and_userns() -> None:
    types = [n["type"] for n in build(Service("w"))["linux"]["namespaces"]]
    assert types == ["mount", "pid", "ipc", "uts", "cgroup", "network"]
    host = build(Service("w", network=NetworkMode("host"), namespaces=Namespaces(pid="host")))
    assert [n["type"] for n in host["linux"]["namespaces"]] == ["mount", "ipc", "uts", "cgroup"]
    joined = build(Service("w"), netns_path="/run/netns/x")["linux"]["namespaces"][-1]
    assert joined == {"type": "network", "path": "/run/netns/x"}
    user = build(Service("w", security=Security(userns=UserNamespace())))["linux"]
    assert user["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]


def test_resources_and_device_numbers() -> None:
    res = Resources(cpus=0.5, cpu_shares=512, cpuset_cpus="0", memory=64 << 20, memory_swap=128 << 20,
                    pids=128, blkio=Blkio(weight=500, read_bps=(DeviceRate("/dev/vda", 10 << 20),)))
    got = oci.resources(res, {"/dev/vda": (254, 0)})
    assert got["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    assert got["cpu"] == {"quota": 50000, "period": 100000, "shares": 512, "cpus": "0"}
    assert got["pids"] == {"limit": 128}
    assert got["blockIO"] == {"weight": 500, "throttleReadBpsDevice": [{"major": 254, "minor": 0,
                                                                        "rate": 10 << 20}]}
    assert got["devices"][0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} in got["devices"]
    with pytest.raises(ReconcileError, match="/dev/vda not found"):
        oci.resources(res, {})


def test_security_paths_sysctl_seccomp_annotation() -> None:
    sec = Security(seccomp="unconfined", read_only_rootfs=True, no_new_privileges=False,
                   sysctls=(("net.ipv4.ip_forward", "1"),), masked_paths=("/proc/foo",))
    cfg = build(Service("w", security=sec, labels=(("team", "web"),)))
    assert cfg["root"] == {"path": "rootfs", "readonly": True}
    assert cfg["linux"]["maskedPaths"] == [*MASKED_PATHS, "/proc/foo"]
    assert cfg["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1"}
    assert "seccomp" not in cfg["linux"] and cfg["annotations"]["org.orchestrator.seccomp"] == "unconfined"
    assert cfg["annotations"]["org.orchestrator.label.team"] == "web"
    assert cfg["process"]["noNewPrivileges"] is False


def test_config_passes_the_runtime_validation() -> None:
    vols = (VolumeMount("volume", "/data", "data"), VolumeMount("tmpfs", "/tmp"))
    cfg = build(replace(Service("w", volumes=vols), resources=Resources(memory=1 << 26)))
    assert linux_spec.validate(cfg) == []


def test_restart_policy_annotations_for_the_supervisor() -> None:
    from orchestrator.manifest.model import RestartPolicy
    from orchestrator.runtime.linux import restart

    svc = Service("w", restart=RestartPolicy("on-failure", max_retries=3, backoff_initial_s=0.5,
                                             backoff_max_s=30, reset_after_s=60))
    ann = build(svc)["annotations"]
    assert ann["org.orchestrator.restart.policy"] == "on-failure"
    assert restart.from_annotations(ann) == restart.RestartPolicy("on-failure", 3, 0.5, 30.0, 60.0)
    assert "org.orchestrator.restart.max-retries" not in build(Service("w"))["annotations"]
