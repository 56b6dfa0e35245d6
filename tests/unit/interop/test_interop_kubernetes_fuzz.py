"""Property: any stack the model can hold exports to documents the Kubernetes API schemas accept."""

from __future__ import annotations

import kubernetes_validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.interop.kubernetes import dump_stream, export
from orchestrator.interop.kubernetes_storage import valid_label
from orchestrator.manifest.model import (
    Blkio,
    DeviceRate,
    Healthcheck,
    Network,
    NetworkMode,
    Port,
    Resources,
    RestartPolicy,
    Security,
    Service,
    Stack,
    StackSet,
    UpdateConfig,
    Volume,
    VolumeMount,
)

names = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
seconds = st.floats(min_value=0.001, max_value=3600, allow_nan=False)
healthchecks = st.builds(
    Healthcheck, kind=st.sampled_from(["exec", "http", "tcp"]), exec=st.just(("true",)),
    port=st.integers(1, 65535), http_status=st.sampled_from([200, 204, 301]), interval_s=seconds,
    timeout_s=seconds, retries=st.integers(1, 10), start_period_s=st.floats(0, 600))
resources = st.builds(
    Resources, cpus=st.none() | st.floats(0.001, 64), cpu_shares=st.none() | st.integers(2, 262144),
    memory=st.none() | st.integers(4 * 1024**2, 2**40), memory_reservation=st.none() | st.integers(1, 2**30),
    pids=st.integers(1, 100000),
    blkio=st.builds(Blkio, weight=st.none() | st.integers(10, 1000),
                    read_bps=st.lists(st.builds(DeviceRate, st.just("/dev/sda"), st.integers(1, 10**9)),
                                      max_size=1).map(tuple)))
ports = st.lists(st.builds(Port, st.integers(1, 65535), st.integers(1, 65535),
                           st.sampled_from(["tcp", "udp"])), max_size=3).map(tuple)


@st.composite
def stacksets(draw: st.DrawFn) -> StackSet:
    nets = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    vols = draw(st.lists(names, max_size=2, unique=True))
    services = []
    for svc_name in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
        mounts = [VolumeMount("volume", f"/v{i}", v) for i, v in enumerate(vols)]
        mounts.append(VolumeMount("tmpfs", "/tmp", tmpfs_size=draw(st.none() | st.integers(1, 2**30))))
        services.append(Service(
            name=svc_name, image="busybox", replicas=draw(st.integers(0, 5)),
            restart=RestartPolicy(draw(st.sampled_from(["never", "on-failure", "always"]))),
            resources=draw(resources), healthcheck=draw(st.none() | healthchecks), ports=draw(ports),
            security=Security(seccomp=draw(st.sampled_from(["default", "unconfined", "/x/p.json"])),
                              cap_add=("CAP_NET_ADMIN",), no_new_privileges=draw(st.booleans())),
            user=draw(st.sampled_from(["", "1000", "1000:1000", "nobody"])),
            volumes=tuple(mounts),
            network=NetworkMode(networks=tuple(sorted(draw(st.lists(st.sampled_from(nets), min_size=1,
                                                                    unique=True))))),
            update=UpdateConfig(order=draw(st.sampled_from(["start-first", "stop-first"])),
                                parallelism=draw(st.integers(1, 5)), monitor_s=draw(st.floats(0, 100))),
            stop_grace_period_s=draw(st.floats(0, 600)),
        ))
    stack = Stack(name=draw(names), services=tuple(services), volumes=tuple(Volume(v) for v in vols),
                  networks=tuple(Network(n, internal=draw(st.booleans())) for n in nets))
    return StackSet(stacks=(stack,))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stacksets())
def test_any_stack_exports_valid_documents(stackset: StackSet) -> None:
    result = export(stackset)
    version = kubernetes_validate.latest_version()
    for _, doc in result.documents:
        kubernetes_validate.validate(doc, version, strict=True)
        labels = doc["metadata"].get("labels", {})
        assert all(valid_label(k, v) for k, v in labels.items())
    assert dump_stream(export(stackset).documents) == dump_stream(result.documents)
