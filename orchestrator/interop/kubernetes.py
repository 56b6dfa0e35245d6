"""Kubernetes out: a StackSet -> Kubernetes documents and a fidelity report.

Per stack: a Namespace; a ConfigMap per config, a Secret (without its value) per secret and a
PersistentVolumeClaim per named volume (``interop.kubernetes_storage``); NetworkPolicies reproducing our
network isolation; a headless Service per service on a bridge network (its name resolves as on our
networks); a Deployment per service, its pod built by
``interop.kubernetes_pod``. Labels follow the ``app.kubernetes.io`` conventions.

Output is deterministic: documents in a fixed kind order, each named ``<stack>/<NN>-<kind>-<name>.yaml``,
and :func:`dump` sorts keys, so re-exporting the same stack gives byte-identical files that diff well
in a GitOps repository.

Isolation: on our host, a container reaches the containers that share one of its networks, and anything
reaches published ports. Here: a default-deny ingress policy per namespace, one policy per network
admitting traffic from pods labelled as members of that network, one per service with published ports
admitting any source to those ports, and for services only on ``internal`` networks an egress policy
limited to their networks and DNS.

Neighbours: ``cli.interop_cmds`` (``export kubernetes``) calls :func:`export` and :func:`dump`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import yaml

from orchestrator.interop import kubernetes_pod as pod
from orchestrator.interop import kubernetes_storage as storage
from orchestrator.interop.fidelity import FidelityReport
from orchestrator.manifest.model import Service, Stack, StackSet

MANAGED_BY = "orchestrator"
NETWORK_LABEL = "network.orchestrator/"       # + network name: "true" on member pods


@dataclass
class ExportResult:
    documents: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    report: FidelityReport = field(default_factory=FidelityReport)


def export(stackset: StackSet) -> ExportResult:
    result = ExportResult()
    for stack in stackset.stacks:
        result.documents.extend(_stack(stack, result.report))
    return result


def _labels(stack: Stack, name: str) -> dict[str, str]:
    name = name[:63].rstrip("-_.")         # a label value: at most 63 characters, alphanumeric ends
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": stack.name,
            "app.kubernetes.io/part-of": stack.name, "app.kubernetes.io/managed-by": MANAGED_BY}


def _selector(stack: Stack, svc: Service) -> dict[str, str]:
    return {"app.kubernetes.io/name": svc.name, "app.kubernetes.io/instance": stack.name}


def _stack(stack: Stack, report: FidelityReport) -> list[tuple[str, dict[str, Any]]]:
    docs: list[tuple[str, dict[str, Any]]] = []
    labels = functools.partial(_labels, stack)

    def add(order: int, name: str, doc: dict[str, Any]) -> None:
        docs.append((f"{stack.name}/{order:02d}-{doc['kind'].lower()}-{name}.yaml", doc))

    stack_labels = dict(stack.labels)
    valid = storage.valid_labels(stack_labels)
    ns_meta: dict[str, Any] = {"name": stack.name, "labels": {**valid, **labels(stack.name)}}
    del ns_meta["labels"]["app.kubernetes.io/instance"]
    if len(valid) < len(stack_labels):
        ns_meta["annotations"] = {k: v for k, v in stack_labels.items() if k not in valid}
    add(0, stack.name, {"apiVersion": "v1", "kind": "Namespace", "metadata": ns_meta})
    report.add(stack.name, "stack", "name", "exact", "Namespace", "")
    _labels_note(report, stack.name, "stack", dict(stack.labels))
    checksums: dict[str, str] = {}
    for config in stack.configs:
        doc, checksum = storage.config_map(stack, config, labels, report)
        checksums[config.name] = checksum
        add(10, storage.dns_name(config.name), doc)
    for sec in stack.secrets:
        add(20, storage.dns_name(sec.name), storage.secret(stack, sec, labels, report))
    for volume in stack.volumes:
        add(30, storage.dns_name(volume.name), storage.pvc(stack, volume, labels, report))
    for name, policy in _network_policies(stack, report):
        add(40, name, policy)
    for svc in stack.services:
        note: pod.Note = functools.partial(report.add, stack.name, f"service/{svc.name}")
        service = _service(stack, svc, note)
        if service is not None:
            add(50, svc.name, service)
        add(60, svc.name, _deployment(stack, svc, note, checksums))
        _labels_note(report, stack.name, f"service/{svc.name}", dict(svc.labels))
    return sorted(docs, key=lambda item: item[0])


def _labels_note(report: FidelityReport, stack: str, obj: str, labels: dict[str, str]) -> None:
    if not labels:
        return
    dropped = sorted(set(labels) - set(storage.valid_labels(labels)))
    report.add(stack, obj, "labels", "approximated" if dropped else "exact", "metadata.labels",
               f"not valid Kubernetes labels, kept as annotations: {', '.join(dropped)}" if dropped else "")


def _deployment(stack: Stack, svc: Service, note: pod.Note, checksums: dict[str, str]) -> dict[str, Any]:
    container = pod.container(svc, note)
    spec = pod.pod_settings(svc, note)
    volumes, mounts, env, annotations = storage.pod_storage(svc, note, checksums)
    if env:
        container["env"] = container.get("env", []) + env
    if mounts:
        container["volumeMounts"] = mounts
    spec["containers"] = [container]
    if volumes:
        spec["volumes"] = volumes
    user_labels = dict(svc.labels)
    valid = storage.valid_labels(user_labels)
    template_labels = {**valid, **_labels(stack, svc.name),
                       **{f"{NETWORK_LABEL}{n}": "true" for n in _networks(svc)}}
    invalid = {k: v for k, v in user_labels.items() if k not in valid}
    meta: dict[str, Any] = {"name": svc.name, "namespace": stack.name,
                            "labels": {**valid, **_labels(stack, svc.name)}}
    if invalid:
        meta["annotations"] = invalid
    if _networks(svc):
        note("network.networks", "exact", "template labels network.orchestrator/<network>",
             "selected by the NetworkPolicies of those networks")
    template_meta: dict[str, Any] = {"labels": template_labels}
    if annotations:
        template_meta["annotations"] = annotations
    note("replicas", "exact", "spec.replicas", "")
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": svc.replicas, "selector": {"matchLabels": _selector(stack, svc)},
                     "strategy": _strategy(svc, note),
                     **({"minReadySeconds": pod.whole_seconds(svc.update.monitor_s)}
                        if svc.update.monitor_s else {}),
                     "template": {"metadata": template_meta, "spec": spec}}}


def _strategy(svc: Service, note: pod.Note) -> dict[str, Any]:
    u = svc.update
    if u.order == "start-first":
        rolling = {"maxSurge": u.parallelism, "maxUnavailable": 0}
    else:
        rolling = {"maxSurge": 0, "maxUnavailable": u.parallelism}
    note("update.order", "exact", "strategy.rollingUpdate", f"{u.order}: maxSurge/maxUnavailable")
    note("update.parallelism", "exact", "strategy.rollingUpdate", "")
    note("update.monitor", "approximated", "minReadySeconds",
         "a new pod must stay ready this long to count as available")
    if u.failure_action == "rollback":
        note("update.failureAction", "not-mappable", "progressDeadlineSeconds",
             "a failed rollout is reported, not rolled back (kubectl rollout undo)")
    else:
        note("update.failureAction", "approximated", "progressDeadlineSeconds",
             "a failed rollout stops progressing and is reported")
    if u.delay_s:
        note("update.delay", "not-mappable", "", "Kubernetes has no delay between rollout batches")
    return {"type": "RollingUpdate", "rollingUpdate": rolling}


def _service(stack: Stack, svc: Service, note: pod.Note) -> dict[str, Any] | None:
    """A headless Service: the name resolves to the replicas' addresses and every port is reachable
    (subject to the NetworkPolicies), which is how containers find each other on our networks; a
    ClusterIP would forward only the declared ports."""
    if svc.network.mode != "bridge":
        return None
    note("name", "exact", "Service (headless)",
         "the service name resolves to its replicas' addresses, as on our networks")
    unique: dict[tuple[int, str], dict[str, Any]] = {}
    for p in svc.ports:
        unique[(p.container_port, p.protocol)] = {
            "name": f"{p.protocol}-{p.container_port}", "port": p.container_port,
            "targetPort": p.container_port, "protocol": p.protocol.upper()}
        note(f"ports[{p}]", "approximated", "Service.spec.ports",
             f"reachable in the cluster on {p.container_port}; host port {p.host_port}"
             f"{' on ' + p.host_ip if p.host_ip else ''} is not published (add a LoadBalancer Service, "
             "a NodePort or an Ingress)")
    spec: dict[str, Any] = {"clusterIP": "None", "selector": _selector(stack, svc)}
    if unique:
        spec["ports"] = [unique[k] for k in sorted(unique)]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": svc.name, "namespace": stack.name, "labels": _labels(stack, svc.name)},
            "spec": spec}


def _networks(svc: Service) -> tuple[str, ...]:
    return svc.network.networks if svc.network.mode == "bridge" else ()


def _network_policies(stack: Stack, report: FidelityReport) -> list[tuple[str, dict[str, Any]]]:
    def policy(name: str, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return name, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                      "metadata": {"name": name, "namespace": stack.name,
                                   "labels": _labels(stack, name)}, "spec": spec}

    out = [policy("default-deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})]
    internal = {n.name for n in stack.networks if n.internal}
    for net in stack.networks:
        member = {"matchLabels": {f"{NETWORK_LABEL}{net.name}": "true"}}
        out.append(policy(f"network-{storage.label_name(net.name)}",
                          {"podSelector": member, "policyTypes": ["Ingress"],
                           "ingress": [{"from": [{"podSelector": member}]}]}))
        report.add(stack.name, f"network/{net.name}", "isolation", "exact", "NetworkPolicy",
                   "ingress only from pods on the same network")
        if net.subnet:
            report.add(stack.name, f"network/{net.name}", "subnet", "not-mappable", "",
                       "pod addresses come from the cluster's pod CIDR")
    for svc in stack.services:
        nets = _networks(svc)
        if svc.ports and nets:
            ports = sorted({(p.container_port, p.protocol.upper()) for p in svc.ports})
            out.append(policy(f"published-{svc.name}",
                              {"podSelector": {"matchLabels": _selector(stack, svc)},
                               "policyTypes": ["Ingress"],
                               "ingress": [{"ports": [{"port": n, "protocol": pr} for n, pr in ports]}]}))
        if nets and set(nets) <= internal:
            egress: list[dict[str, Any]] = [
                {"to": [{"podSelector": {"matchLabels": {f"{NETWORK_LABEL}{n}": "true"}}} for n in nets]},
                {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
            ]
            out.append(policy(f"internal-{svc.name}",
                              {"podSelector": {"matchLabels": _selector(stack, svc)},
                               "policyTypes": ["Egress"], "egress": egress}))
            report.add(stack.name, f"service/{svc.name}", "network.internal", "approximated",
                       "NetworkPolicy egress", "egress only to its networks' pods and to DNS on port 53")
    return out


_DumperBase: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)   # libyaml's emitter


class _Dumper(_DumperBase):  # type: ignore[valid-type,misc]  # base chosen at import time
    """Block style; multi-line strings (config files) as literal blocks so they read as written.

    No anchors: a probe shared by readiness and liveness is written out twice, as people write it.
    """

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(doc: dict[str, Any]) -> str:
    """One document as YAML: sorted keys, block style, stable across runs."""
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=120,
                     allow_unicode=True)


def dump_stream(documents: list[tuple[str, dict[str, Any]]]) -> str:
    """All documents as one multi-document stream, each preceded by the file name it would have."""
    return "".join(f"---\n# Source: {name}\n{dump(doc)}" for name, doc in documents)
