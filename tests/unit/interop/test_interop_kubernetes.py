"""Kubernetes export: documents valid against the API schemas (offline), stable bytes, honest report."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from orchestrator import manifest
from orchestrator.interop.compose import convert
from orchestrator.interop.kubernetes import ExportResult, dump, dump_stream, export
from orchestrator.interop.kubernetes_storage import valid_label
from orchestrator.manifest.model import (
    Blkio,
    Config,
    Dependency,
    DeviceRate,
    FileMount,
    Healthcheck,
    Network,
    NetworkMode,
    Port,
    Resources,
    RestartPolicy,
    Secret,
    Security,
    Service,
    Stack,
    StackSet,
    Ulimit,
    UpdateConfig,
    Volume,
    VolumeMount,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "compose"
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())


def _rich_stack() -> StackSet:
    api = Service(
        name="api", image="registry.local/api:1", entrypoint=("/init",), command=("serve", "--port", "8080"),
        env=(("MODE", "prod"),), working_dir="/srv", user="1000:1000", groups=(2000,), replicas=3,
        restart=RestartPolicy("on-failure", max_retries=5),
        resources=Resources(cpus=0.5, cpu_shares=2048, cpuset_cpus="0", memory=64 * 1024**2,
                            memory_swap=128 * 1024**2, memory_reservation=32 * 1024**2, pids=128,
                            blkio=Blkio(weight=500, read_bps=(DeviceRate("/dev/vda", 10 * 1024**2),))),
        security=Security(seccomp="/etc/orchestrator/seccomp/api.json", cap_add=("CAP_NET_BIND_SERVICE",),
                          cap_drop=("CAP_NET_RAW",), read_only_rootfs=True,
                          sysctls=(("net.core.somaxconn", "1024"), ("net.ipv4.tcp_syncookies", "1"))),
        ulimits=(Ulimit("nofile", 1024, 2048),),
        healthcheck=Healthcheck("http", http_path="/health", port=8080, interval_s=2.5, retries=3,
                                start_period_s=10),
        depends_on=(Dependency("db", "healthy"),),
        ports=(Port(80, 8080), Port(8443, 8443, host_ip="127.0.0.1")),
        volumes=(VolumeMount("volume", "/data", "data"), VolumeMount("bind", "/etc/api", "/srv/conf", True),
                 VolumeMount("tmpfs", "/tmp", tmpfs_size=16 * 1024**2)),
        network=NetworkMode(networks=("back", "front")),
        update=UpdateConfig(order="start-first", parallelism=2, delay_s=5),
        stop_signal="SIGQUIT", stop_grace_period_s=30, labels=(("tier", "api"), ("note", "has spaces!")),
        configs=(FileMount("api.conf", "/etc/api.conf", mode=0o440),),
        secrets=(FileMount("db-password", "/run/secrets/db-password", env="DB_PASSWORD"),),
    )
    db = Service(name="db", image="postgres:16", healthcheck=Healthcheck("tcp", port=5432),
                 ports=(Port(5432, 5432),), network=NetworkMode(networks=("back",)),
                 security=Security(seccomp="unconfined", no_new_privileges=False),
                 restart=RestartPolicy("always"))
    host = Service(name="metrics", image="prom/node-exporter", network=NetworkMode(mode="host"),
                   restart=RestartPolicy("never"), user="nobody")
    stack = Stack(name="shop", services=(api, db, host),
                  volumes=(Volume("data", labels=(("backup", "yes"),)),),
                  networks=(Network("back", subnet="10.88.1.0/24", internal=True), Network("default"),
                            Network("front")),
                  configs=(Config("api.conf", content="listen = 8080\nworkers = 4\n"),),
                  secrets=(Secret("db-password", file="/etc/secrets/db"),), labels=(("team", "web"),))
    return StackSet(stacks=(stack,))


_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _labels_everywhere(node: Any) -> list[dict[str, str]]:
    if isinstance(node, dict):
        found = [node["labels"]] if isinstance(node.get("labels"), dict) else []
        found += [node["matchLabels"]] if isinstance(node.get("matchLabels"), dict) else []
        return found + [x for v in node.values() for x in _labels_everywhere(v)]
    if isinstance(node, list):
        return [x for v in node for x in _labels_everywhere(v)]
    return []


def _validate(result: ExportResult) -> None:
    """The API schemas (offline), plus what they do not check: object names and label syntax."""
    for name, doc in result.documents:
        assert _DNS_SUBDOMAIN.fullmatch(doc["metadata"]["name"]), name
        for labels in _labels_everywhere(doc):
            assert all(valid_label(k, v) for k, v in labels.items()), (name, labels)
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name} invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


def _doc(result: ExportResult, suffix: str) -> dict[str, Any]:
    matches = [doc for name, doc in result.documents if name.endswith(suffix)]
    assert len(matches) == 1, [n for n, _ in result.documents]
    return matches[0]


def _entries(result: ExportResult, obj: str) -> dict[str, str]:
    return {e.field: e.fidelity for e in result.report.entries if e.object == obj}


def test_rich_stack_is_valid_kubernetes() -> None:
    _validate(export(_rich_stack()))


def test_document_names_and_order() -> None:
    names = [n for n, _ in export(_rich_stack()).documents]
    assert names[0] == "shop/00-namespace-shop.yaml"
    assert names == sorted(names)                      # applying a directory in name order works
    assert "shop/10-configmap-api.conf.yaml" in names and "shop/30-persistentvolumeclaim-data.yaml" in names
    assert "shop/50-service-api.yaml" in names and "shop/60-deployment-metrics.yaml" in names


def test_deployment_fields() -> None:
    result = export(_rich_stack())
    dep = _doc(result, "deployment-api.yaml")
    assert dep["metadata"]["labels"]["app.kubernetes.io/name"] == "api"
    assert dep["metadata"]["labels"]["app.kubernetes.io/part-of"] == "shop"
    assert dep["metadata"]["annotations"] == {"note": "has spaces!"}       # not a valid label value
    spec = dep["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 2, "maxUnavailable": 0}
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert labels["network.orchestrator/back"] == labels["network.orchestrator/front"] == "true"
    assert set(spec["selector"]["matchLabels"].items()) <= set(labels.items())
    c = pod["containers"][0]
    assert c["command"] == ["/init"] and c["args"] == ["serve", "--port", "8080"]
    assert c["resources"] == {"limits": {"cpu": "500m", "memory": "64Mi"},
                              "requests": {"cpu": "500m", "memory": "32Mi"}}   # shares clamped to limit
    sc = c["securityContext"]
    assert sc["capabilities"] == {"add": ["NET_BIND_SERVICE"], "drop": ["NET_RAW"]}
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["runAsUser"] == 1000 and sc["runAsGroup"] == 1000
    assert sc["seccompProfile"] == {"type": "Localhost", "localhostProfile": "api.json"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8080, "scheme": "HTTP"}
    assert c["readinessProbe"]["periodSeconds"] == 3                         # 2.5 s rounded up
    assert c["livenessProbe"] == c["readinessProbe"]
    assert c["startupProbe"]["failureThreshold"] == 4 + 3
    assert {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-password",
                                                                  "key": "db-password"}}} in c["env"]
    assert pod["securityContext"]["supplementalGroups"] == [2000]
    assert pod["terminationGracePeriodSeconds"] == 30
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/api"]["readOnly"] is True
    assert mounts["/etc/api.conf"]["subPath"] == "api.conf"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {"claimName": "data"} in [v.get("persistentVolumeClaim") for v in volumes.values()]
    assert {"medium": "Memory", "sizeLimit": "16Mi"} in [v.get("emptyDir") for v in volumes.values()]
    assert "checksum/config-api-conf" in spec["template"]["metadata"]["annotations"]

    metrics = _doc(result, "deployment-metrics.yaml")["spec"]["template"]["spec"]
    assert metrics["hostNetwork"] is True
    db = _doc(result, "deployment-db.yaml")["spec"]["template"]["spec"]["containers"][0]
    assert db["securityContext"] == {"seccompProfile": {"type": "Unconfined"}}
    assert db["readinessProbe"]["tcpSocket"] == {"port": 5432}


def test_services_secrets_configmaps_pvcs() -> None:
    result = export(_rich_stack())
    svc = _doc(result, "service-api.yaml")
    assert svc["spec"]["clusterIP"] == "None"                 # headless: names resolve as on our networks
    assert [(p["port"], p["protocol"]) for p in svc["spec"]["ports"]] == [(8080, "TCP"), (8443, "TCP")]
    assert not any(n.endswith("service-metrics.yaml") for n, _ in result.documents)   # host network
    secret = _doc(result, "secret-db-password.yaml")
    assert secret["stringData"] == {"db-password": "REPLACE-ME"}
    assert "/etc/secrets/db" in secret["metadata"]["annotations"]["orchestrator/secret-source"]
    cm = _doc(result, "configmap-api.conf.yaml")
    assert cm["data"] == {"api.conf": "listen = 8080\nworkers = 4\n"}
    assert "listen = 8080\n" in dump(cm) and "|" in dump(cm)      # literal block, readable
    pvc = _doc(result, "persistentvolumeclaim-data.yaml")
    assert pvc["metadata"]["labels"]["backup"] == "yes"
    ns = _doc(result, "namespace-shop.yaml")
    assert ns["metadata"]["labels"]["team"] == "web"


def test_network_policies_reproduce_isolation() -> None:
    result = export(_rich_stack())
    deny = _doc(result, "networkpolicy-default-deny-ingress.yaml")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    back = _doc(result, "networkpolicy-network-back.yaml")["spec"]
    member = {"matchLabels": {"network.orchestrator/back": "true"}}
    assert back["podSelector"] == member and back["ingress"] == [{"from": [{"podSelector": member}]}]
    published = _doc(result, "networkpolicy-published-api.yaml")["spec"]
    assert published["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"},
                                               {"port": 8443, "protocol": "TCP"}]}]
    internal = _doc(result, "networkpolicy-internal-db.yaml")["spec"]       # db is only on internal back
    assert internal["policyTypes"] == ["Egress"]
    assert not any(n.endswith("internal-api.yaml") for n, _ in result.documents)   # api is also on front


def test_fidelity_report_is_honest() -> None:
    result = export(_rich_stack())
    api = _entries(result, "service/api")
    assert api["resources.blkio.readBps"] == "not-mappable"
    assert api["resources.blkio.weight"] == "not-mappable"
    assert api["dependsOn"] == "not-mappable"
    assert api["resources.cpuShares"] == "approximated"
    assert api["resources.cpuset"] == "not-mappable"
    assert api["resources.memorySwap"] == "not-mappable"
    assert api["ulimits"] == "not-mappable"
    assert api["stopSignal"] == "not-mappable"
    assert api["update.delay"] == "not-mappable"
    assert api["resources.cpus"] == api["resources.memory"] == api["image"] == "exact"
    assert api["security.capabilities.add"] == "exact"
    assert api["security.sysctls"] == "approximated"                 # net.core.somaxconn is not "safe"
    assert api["restart.policy"] == "approximated" and api["restart.maxRetries"] == "not-mappable"
    assert api["labels"] == "approximated"
    assert _entries(result, "service/metrics")["user"] == "not-mappable"
    assert _entries(result, "service/metrics")["restart.policy"] == "not-mappable"
    assert _entries(result, "secret/db-password")["value"] == "not-mappable"
    assert _entries(result, "network/back")["subnet"] == "not-mappable"
    text = result.report.to_text()
    assert "not-mappable  resources.blkio.readBps" in text
    assert text.splitlines()[-1].endswith("not mappable")
    data = json.loads(json.dumps(result.report.to_json()))
    assert data["summary"]["not-mappable"] == sum(f["fidelity"] == "not-mappable" for f in data["fields"])
    assert {"stack", "object", "field", "fidelity", "target", "detail"} == set(data["fields"][0])


def test_reexport_is_byte_identical() -> None:
    first = dump_stream(export(_rich_stack()).documents)
    second = dump_stream(export(_rich_stack()).documents)
    assert first == second
    assert "&id" not in first                                  # no YAML anchors in the output
    assert next(iter(yaml.safe_load_all(first)))["kind"] == "Namespace"


@pytest.mark.parametrize("fixture", ["webapp", "workers", "unsupported", "gateway"])
def test_round_trip_compose_to_kubernetes(fixture: str) -> None:
    converted = convert(FIXTURES / fixture / "compose.yaml", {})
    text = yaml.safe_dump(converted.manifest, sort_keys=False)
    stacks = manifest.load_text(text, f"{fixture}.yaml")
    result = export(stacks)
    _validate(result)
    again = export(manifest.load_text(text, f"{fixture}.yaml"))
    assert dump_stream(again.documents) == dump_stream(result.documents)
    assert result.report.to_json() == again.report.to_json()
    kinds = {doc["kind"] for _, doc in result.documents}
    assert {"Namespace", "Deployment", "NetworkPolicy"} <= kinds


def test_configs_from_files_names_and_repeated_mounts(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\n")
    svc = Service(name="web", image="nginx",
                  configs=(FileMount("nginx_conf", "/etc/nginx/nginx.conf"),
                           FileMount("nginx_conf", "/srv/copy.conf"), FileMount("gone", "/etc/gone")),
                  volumes=(VolumeMount("volume", "/data", "My_Data"),))
    stack = Stack(name="site", services=(svc,), volumes=(Volume("My_Data"),),
                  configs=(Config("gone", file=str(tmp_path / "missing.conf")),
                           Config("nginx_conf", file=str(conf))))
    result = export(StackSet(stacks=(stack,)))
    _validate(result)
    assert _doc(result, "configmap-nginx-conf.yaml")["data"] == {"nginx_conf": "events {}\n"}
    assert _doc(result, "configmap-gone.yaml")["data"] == {"gone": "REPLACE-ME"}
    assert _entries(result, "config/gone")["file"] == "not-mappable"
    assert _doc(result, "persistentvolumeclaim-my-data.yaml")["metadata"]["name"] == "my-data"
    assert _entries(result, "volume/My_Data")["name"] == "approximated"
    pod = _doc(result, "deployment-web.yaml")["spec"]["template"]["spec"]
    names = [v["name"] for v in pod["volumes"]]
    assert len(names) == len(set(names)) == 4


def test_shipped_manifests_export_valid_kubernetes() -> None:
    root = Path(__file__).resolve().parents[3] / "manifests"
    files = sorted(root.rglob("*.yaml"))
    if not files:
        pytest.skip("no shipped manifests in this checkout")
    result = export(manifest.load([str(root)]))
    _validate(result)
    assert dump_stream(export(manifest.load([str(root)])).documents) == dump_stream(result.documents)


def test_portless_service_still_resolves_by_name() -> None:
    converted = convert(FIXTURES / "webapp" / "compose.yaml", {})
    result = export(manifest.load_text(yaml.safe_dump(converted.manifest), "webapp.yaml"))
    db = _doc(result, "service-db.yaml")                      # web reaches db:5432, never declared
    assert db["spec"] == {"clusterIP": "None",
                          "selector": {"app.kubernetes.io/instance": "shop", "app.kubernetes.io/name": "db"}}


def test_gateway_round_trip_configs_secrets_host_network() -> None:
    converted = convert(FIXTURES / "gateway" / "compose.yaml", {})
    result = export(manifest.load_text(yaml.safe_dump(converted.manifest), "gateway.yaml"))
    _validate(result)
    cm = _doc(result, "configmap-nginx-conf.yaml")
    assert cm["data"]["nginx_conf"] == (FIXTURES / "gateway" / "nginx.conf").read_text()
    for name in ("secret-tls-key.yaml", "secret-api-token.yaml"):
        assert set(_doc(result, name)["stringData"].values()) == {"REPLACE-ME"}
    assert "not-a-real-key" not in dump_stream(result.documents)        # secret values never leave
    proxy = _doc(result, "deployment-proxy.yaml")["spec"]["template"]
    assert "checksum/config-nginx-conf" in proxy["metadata"]["annotations"]
    assert _entries(result, "service/proxy")["secrets[/etc/nginx/tls.key].uid"] == "not-mappable"
    exporter = _doc(result, "deployment-node-exporter.yaml")["spec"]["template"]["spec"]
    assert exporter["hostNetwork"] is True and exporter["hostPID"] is True
