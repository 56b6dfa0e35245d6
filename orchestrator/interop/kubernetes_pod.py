"""One service -> the container and pod-level settings of a Kubernetes pod template.

Covers the process (image, command, env), resources, security context, probes, restart, stop settings,
namespaces and host networking; each field also gets its fidelity entry, with the reason when Kubernetes
has no equivalent (per-container pids, cpusets, block IO throttles, ulimits live on the node or nowhere).
Volumes, configs and secrets are in ``interop.kubernetes_storage``; the Deployment around this is built
in ``interop.kubernetes``.

Neighbours: ``interop.kubernetes`` calls :func:`pod_parts`; ``interop.fidelity`` records the mapping.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from orchestrator.interop.fidelity import Fidelity
from orchestrator.manifest.model import Healthcheck, Resources, Security, Service

Note = Callable[[str, Fidelity, str, str], None]      # (field, fidelity, target, detail)

# namespaced sysctls Kubernetes allows without a kubelet allow-list ("safe" sysctls, v1.29+)
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
})


def quantity_bytes(n: int) -> str:
    for suffix, power in (("Ti", 4), ("Gi", 3), ("Mi", 2), ("Ki", 1)):
        if n > 0 and n % 1024 ** power == 0:
            return f"{n // 1024 ** power}{suffix}"
    return str(n)


def quantity_cpu(cpus: float) -> str:
    millis = round(cpus * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def whole_seconds(seconds: float, minimum: int = 0) -> int:
    return max(minimum, math.ceil(seconds))


def container(svc: Service, note: Note) -> dict[str, Any]:
    """The container: process, ports, resources, security context and probes."""
    c: dict[str, Any] = {"name": svc.name}
    if svc.image:
        c["image"] = svc.image
        note("image", "exact", "containers[].image", "")
    else:
        c["image"] = f"REPLACE-ME/{svc.name}:rootfs"
        note("rootfs", "not-mappable", "containers[].image",
             f"a host directory is not an image; build one from {svc.rootfs} and set the image")
    if svc.entrypoint is not None:
        c["command"] = list(svc.entrypoint)
        note("entrypoint", "exact", "containers[].command", "")
    if svc.command is not None:
        c["args"] = list(svc.command)
        note("command", "exact", "containers[].args", "")
    if svc.env:
        c["env"] = [{"name": k, "value": v} for k, v in svc.env]
        note("env", "exact", "containers[].env", "")
    if svc.working_dir:
        c["workingDir"] = svc.working_dir
        note("workingDir", "exact", "containers[].workingDir", "")
    ports = sorted({(p.container_port, p.protocol) for p in svc.ports})
    if ports:
        c["ports"] = [{"containerPort": port, "name": f"{proto}-{port}"[:15], "protocol": proto.upper()}
                      for port, proto in ports]
    c["resources"] = _resources(svc.resources, note)
    if not c["resources"]:
        del c["resources"]
    c["securityContext"] = _security_context(svc, note)
    probes = _probes(svc.healthcheck, note)
    c.update(probes)
    if svc.stop_signal.removeprefix("SIG") != "TERM":
        note("stopSignal", "not-mappable", "",
             "Kubernetes sends SIGTERM; set STOPSIGNAL in the image instead")
    return c


def _resources(r: Resources, note: Note) -> dict[str, Any]:
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if r.cpus is not None:
        limits["cpu"] = quantity_cpu(r.cpus)
        note("resources.cpus", "exact", "resources.limits.cpu", "")
    if r.memory is not None:
        limits["memory"] = quantity_bytes(r.memory)
        note("resources.memory", "exact", "resources.limits.memory", "")
    if r.memory_reservation is not None:
        reserved = r.memory_reservation
        if r.memory is not None:
            reserved = min(reserved, r.memory)      # a request above the limit is invalid
        requests["memory"] = quantity_bytes(reserved)
        note("resources.memoryReservation", "approximated", "resources.requests.memory",
             "a scheduling request, not a soft limit reclaimed under pressure")
    if r.cpu_shares is not None:
        cpus = r.cpu_shares / 1024
        if r.cpus is not None:
            cpus = min(cpus, r.cpus)      # a request above the limit is invalid
        requests["cpu"] = quantity_cpu(max(cpus, 0.001))
        note("resources.cpuShares", "approximated", "resources.requests.cpu",
             f"kubelet derives cpu.shares from requests (1 CPU = 1024 shares): {r.cpu_shares} shares "
             f"-> {requests['cpu']}")
    if r.memory_swap is not None:
        note("resources.memorySwap", "not-mappable", "", "swap is a node setting (kubelet swapBehavior)")
    note("resources.pids", "not-mappable", "",
         f"limit {r.pids}: pids are limited per pod by the node (kubelet podPidsLimit)")
    if r.cpuset_cpus or r.cpuset_mems:
        note("resources.cpuset", "not-mappable", "",
             "CPU pinning comes from the kubelet CPU manager (static policy, integer CPU requests)")
    b = r.blkio
    if b.weight is not None:
        note("resources.blkio.weight", "not-mappable", "", "Kubernetes has no block IO weight")
    for name, rates in (("readBps", b.read_bps), ("writeBps", b.write_bps),
                        ("readIops", b.read_iops), ("writeIops", b.write_iops)):
        if rates:
            note(f"resources.blkio.{name}", "not-mappable", "",
                 "Kubernetes has no per-container block IO throttling")
    if r.devices:
        note("resources.devices", "not-mappable", "", "host devices reach pods through device plugins")
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def _security_context(svc: Service, note: Note) -> dict[str, Any]:
    s: Security = svc.security
    ctx: dict[str, Any] = {}
    caps: dict[str, list[str]] = {}
    if s.cap_add:
        caps["add"] = [c.removeprefix("CAP_") for c in s.cap_add]
        note("security.capabilities.add", "exact", "securityContext.capabilities.add", "")
    if s.cap_drop:
        caps["drop"] = [c.removeprefix("CAP_") for c in s.cap_drop]
        note("security.capabilities.drop", "exact", "securityContext.capabilities.drop", "")
    if caps:
        ctx["capabilities"] = caps
    if s.read_only_rootfs:
        ctx["readOnlyRootFilesystem"] = True
        note("security.readOnlyRootfs", "exact", "securityContext.readOnlyRootFilesystem", "")
    if s.no_new_privileges:
        ctx["allowPrivilegeEscalation"] = False
        note("security.noNewPrivileges", "exact", "securityContext.allowPrivilegeEscalation", "false")
    if s.seccomp == "default":
        ctx["seccompProfile"] = {"type": "RuntimeDefault"}
        note("security.seccomp", "approximated", "securityContext.seccompProfile",
             "RuntimeDefault: the container runtime's default profile, close to but not ours")
    elif s.seccomp == "unconfined":
        ctx["seccompProfile"] = {"type": "Unconfined"}
        note("security.seccomp", "exact", "securityContext.seccompProfile", "Unconfined")
    else:
        name = os.path.basename(s.seccomp)
        ctx["seccompProfile"] = {"type": "Localhost", "localhostProfile": name}
        note("security.seccomp", "approximated", "securityContext.seccompProfile",
             f"Localhost: install {s.seccomp} as <kubelet root>/seccomp/{name} on every node")
    uid, _, gid = svc.user.partition(":")
    if svc.user and uid.isdigit() and (not gid or gid.isdigit()):
        ctx["runAsUser"] = int(uid)
        if gid:
            ctx["runAsGroup"] = int(gid)
        note("user", "exact", "securityContext.runAsUser" + ("/runAsGroup" if gid else ""), "")
    elif svc.user:
        note("user", "not-mappable", "", f"user '{svc.user}' is a name; Kubernetes needs numeric ids")
    if s.masked_paths or s.readonly_paths:
        note("security.maskedPaths", "not-mappable", "",
             "Kubernetes only offers procMount Default/Unmasked")
    return ctx


def _probe_handler(hc: Healthcheck) -> dict[str, Any]:
    if hc.kind == "exec":
        return {"exec": {"command": list(hc.exec)}}
    if hc.kind == "http":
        return {"httpGet": {"path": hc.http_path, "port": hc.port, "scheme": "HTTP"}}
    return {"tcpSocket": {"port": hc.port}}


def _probes(hc: Healthcheck | None, note: Note) -> dict[str, Any]:
    if hc is None:
        return {}
    timing = {"periodSeconds": whole_seconds(hc.interval_s, 1),
              "timeoutSeconds": whole_seconds(hc.timeout_s, 1),
              "failureThreshold": hc.retries}
    probe = {**_probe_handler(hc), **timing}
    probes: dict[str, Any] = {"readinessProbe": probe, "livenessProbe": dict(probe)}
    rounded = any(not float(x).is_integer() for x in (hc.interval_s, hc.timeout_s))
    note("healthcheck", "approximated" if rounded else "exact", "readinessProbe",
         "interval and timeout rounded up to whole seconds" if rounded else "")
    note("healthcheck.restart", "approximated", "livenessProbe",
         f"the kubelet restarts the container after {hc.retries} consecutive failures")
    if hc.kind == "http" and hc.http_status != 200:
        note("healthcheck.http.status", "approximated", "httpGet",
             f"Kubernetes accepts any status from 200 to 399, not only {hc.http_status}")
    if hc.start_period_s > 0:
        # failures during the start period do not count: a startup probe that allows that many periods
        periods = math.ceil(hc.start_period_s / max(hc.interval_s, 1.0)) + hc.retries
        probes["startupProbe"] = {**probe, "failureThreshold": periods}
        note("healthcheck.startPeriod", "approximated", "startupProbe",
             f"a startup probe allowing {periods} failed checks before liveness starts")
    return probes


def pod_settings(svc: Service, note: Note) -> dict[str, Any]:
    """Pod-level fields: restart, host namespaces, hostname, groups, sysctls, grace period."""
    pod: dict[str, Any] = {"restartPolicy": "Always"}
    policy = svc.restart.policy
    if policy == "always":
        note("restart.policy", "exact", "restartPolicy", "Always")
    elif policy == "on-failure":
        note("restart.policy", "approximated", "restartPolicy",
             "Deployments always restart, also after a clean exit")
    else:
        note("restart.policy", "not-mappable", "restartPolicy",
             "Deployments always restart; a run-once service would be a Job")
    if svc.restart.max_retries is not None:
        note("restart.maxRetries", "not-mappable", "", "the kubelet retries forever with CrashLoopBackOff")
    pod["terminationGracePeriodSeconds"] = whole_seconds(svc.stop_grace_period_s)
    note("stopGracePeriod", "exact" if float(svc.stop_grace_period_s).is_integer() else "approximated",
         "terminationGracePeriodSeconds", "")
    if svc.hostname:
        pod["hostname"] = svc.hostname
        note("hostname", "exact" if svc.replicas <= 1 else "approximated", "hostname",
             "" if svc.replicas <= 1 else "every replica gets the same hostname")
    pod_security: dict[str, Any] = {}
    if svc.groups:
        pod_security["supplementalGroups"] = list(svc.groups)
        note("groups", "exact", "securityContext.supplementalGroups", "")
    if svc.security.sysctls:
        pod_security["sysctls"] = [{"name": k, "value": v} for k, v in svc.security.sysctls]
        unsafe = [k for k, _ in svc.security.sysctls if k not in SAFE_SYSCTLS]
        note("security.sysctls", "approximated" if unsafe else "exact", "securityContext.sysctls",
             f"unsafe sysctls need the kubelet's --allowed-unsafe-sysctls: {', '.join(unsafe)}"
             if unsafe else "")
    if pod_security:
        pod["securityContext"] = pod_security
    if svc.security.userns is not None:
        pod["hostUsers"] = False
        note("security.userns", "approximated", "hostUsers",
             "false: the node chooses the id mapping, not ours")
    ns = svc.namespaces
    if ns.pid == "host":
        pod["hostPID"] = True
        note("namespaces.pid", "exact", "hostPID", "")
    if ns.ipc == "host":
        pod["hostIPC"] = True
        note("namespaces.ipc", "exact", "hostIPC", "")
    if ns.uts == "host":
        note("namespaces.uts", "not-mappable", "", "only with hostNetwork")
    if ns.cgroup == "host":
        note("namespaces.cgroup", "not-mappable", "", "pods always get a private cgroup namespace")
    if svc.ulimits:
        note("ulimits", "not-mappable", "", "rlimits come from the container runtime's defaults")
    if svc.oom_score_adj is not None:
        note("oomScoreAdj", "not-mappable", "", "the kubelet sets it from the pod's QoS class")
    if svc.depends_on:
        note("dependsOn", "not-mappable", "",
             "pods start in any order; readiness probes only gate Service traffic "
             "(add an init container that waits, if order matters)")
    if svc.network.mode == "host":
        pod["hostNetwork"] = True
        pod["dnsPolicy"] = "ClusterFirstWithHostNet"
        note("network", "approximated", "hostNetwork", "NetworkPolicies do not apply to host-network pods")
    elif svc.network.mode == "none":
        note("network", "not-mappable", "", "every pod gets a network interface")
    elif svc.network.mode == "container":
        note("network", "not-mappable", "",
             f"sharing {svc.network.container}'s network needs both containers in one pod")
    return pod
