"""Storage for the Kubernetes export: PersistentVolumeClaims, ConfigMaps, Secrets, and the pod's volumes.

A named volume becomes a PVC (our volumes are unbounded host directories, so the size is a placeholder to
review); a bind mount a hostPath; a tmpfs an in-memory emptyDir. Configs become ConfigMaps holding their
content (an inline value, or the file read now), and the pod template carries a checksum of each, so a
changed config rolls the pods as our ``onChange: restart`` does. Secrets become Secrets WITHOUT their
values: a placeholder to fill in, and a report line saying how.

Neighbours: ``interop.kubernetes`` assembles the documents; ``interop.kubernetes_pod`` the container.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.interop.fidelity import FidelityReport
from orchestrator.interop.kubernetes_pod import Note, quantity_bytes
from orchestrator.manifest.model import Config, FileMount, Secret, Service, Stack, Volume

PVC_SIZE = "1Gi"
SECRET_PLACEHOLDER = "REPLACE-ME"
_NOT_DNS = re.compile(r"[^a-z0-9.-]+")
_NOT_LABEL = re.compile(r"[^a-z0-9-]+")

Labels = Callable[[str], dict[str, str]]


def dns_name(name: str) -> str:
    """A DNS-1123 subdomain for object names (PVCs, ConfigMaps, Secrets): lowercase, '_' -> '-'."""
    return _NOT_DNS.sub("-", name.lower()).strip("-.")[:253] or "unnamed"


def label_name(name: str) -> str:
    """A DNS-1123 label for names inside a pod (volumes): no dots either."""
    return _NOT_LABEL.sub("-", name.lower()).strip("-")[:63] or "unnamed"


def pvc(stack: Stack, volume: Volume, labels: Labels, report: FidelityReport) -> dict[str, Any]:
    obj = f"volume/{volume.name}"
    meta: dict[str, Any] = {"name": dns_name(volume.name), "namespace": stack.name,
                            "labels": {**labels(volume.name), **valid_labels(dict(volume.labels))}}
    report.add(stack.name, obj, "volume", "approximated", "PersistentVolumeClaim",
               f"ReadWriteOnce, {PVC_SIZE} requested (our volumes have no size): review the size and "
               "storage class")
    if dns_name(volume.name) != volume.name:
        report.add(stack.name, obj, "name", "approximated", "metadata.name",
                   f"renamed to {dns_name(volume.name)} (DNS name)")
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": PVC_SIZE}}}}


def config_map(stack: Stack, config: Config, labels: Labels,
               report: FidelityReport) -> tuple[dict[str, Any], str]:
    """The ConfigMap and a checksum of its content (for the pod template's annotation)."""
    obj = f"config/{config.name}"
    if config.content is not None:
        content = config.content
        report.add(stack.name, obj, "content", "exact", "ConfigMap.data", "")
    else:
        try:
            content = Path(config.file).read_text(encoding="utf-8")
            report.add(stack.name, obj, "file", "exact", "ConfigMap.data", f"content of {config.file}")
        except (OSError, UnicodeDecodeError) as exc:
            content = SECRET_PLACEHOLDER
            report.add(stack.name, obj, "file", "not-mappable", "ConfigMap.data",
                       f"cannot read {config.file} ({exc.__class__.__name__}); a placeholder was written")
    doc = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": dns_name(config.name), "namespace": stack.name,
                        "labels": labels(config.name)},
           "data": {config.name: content}}
    return doc, hashlib.sha256(content.encode()).hexdigest()


def secret(stack: Stack, sec: Secret, labels: Labels, report: FidelityReport) -> dict[str, Any]:
    source = (f"file {sec.file}" if sec.file else f"environment variable {sec.env}" if sec.env
              else f"sops file {sec.sops_file}")
    value = (f'--from-literal={sec.name}="${sec.env}"' if sec.env
             else f"--from-file={sec.name}={sec.file or 'DECRYPTED-FILE'}")
    report.add(stack.name, f"secret/{sec.name}", "value", "not-mappable", "Secret.stringData",
               f"values are never exported: fill it from the {source}, e.g. kubectl -n {stack.name} "
               f"create secret generic {dns_name(sec.name)} {value}")
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": dns_name(sec.name), "namespace": stack.name, "labels": labels(sec.name),
                         "annotations": {"orchestrator/secret-source": source}},
            "stringData": {sec.name: SECRET_PLACEHOLDER}}


def pod_storage(svc: Service, note: Note, checksums: dict[str, str]) -> tuple[list[dict[str, Any]],
                                                                          list[dict[str, Any]],
                                                                          list[dict[str, Any]],
                                                                          dict[str, str]]:
    """(pod volumes, container volumeMounts, extra env, pod annotations) for a service's mounts."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env: list[dict[str, Any]] = []
    annotations: dict[str, str] = {}
    for i, v in enumerate(svc.volumes):
        name = f"{v.type}-{i}-{label_name(v.source or 'tmp')}"[:63].rstrip("-")
        mount: dict[str, Any] = {"name": name, "mountPath": v.target}
        if v.read_only:
            mount["readOnly"] = True
        if v.type == "volume":
            volumes.append({"name": name, "persistentVolumeClaim": {"claimName": dns_name(v.source)}})
            note(f"volumes[{v.target}]", "approximated" if svc.replicas > 1 else "exact",
                 "persistentVolumeClaim",
                 "ReadWriteOnce: replicas on different nodes cannot share it" if svc.replicas > 1 else "")
        elif v.type == "bind":
            volumes.append({"name": name, "hostPath": {"path": v.source}})
            note(f"volumes[{v.target}]", "approximated", "hostPath",
                 f"{v.source} must exist on whichever node runs the pod")
        else:
            empty: dict[str, Any] = {"medium": "Memory"}
            if v.tmpfs_size is not None:
                empty["sizeLimit"] = quantity_bytes(v.tmpfs_size)
            volumes.append({"name": name, "emptyDir": empty})
            exact = v.tmpfs_mode == 0o1777
            note(f"volumes[{v.target}]", "exact" if exact else "approximated", "emptyDir(Memory)",
                 "" if exact else f"mode {v.tmpfs_mode:o} is not settable; emptyDir is 0777")
        mounts.append(mount)
    for kind, items in (("config", svc.configs), ("secret", svc.secrets)):
        for i, m in enumerate(items):
            _file_mount(kind, i, m, note, volumes, mounts, env)
            if kind == "config" and m.on_change == "restart" and m.name in checksums:
                annotations[f"checksum/config-{label_name(m.name)}"] = checksums[m.name]
    return volumes, mounts, env, annotations


def _file_mount(kind: str, index: int, m: FileMount, note: Note, volumes: list[dict[str, Any]],
                mounts: list[dict[str, Any]], env: list[dict[str, Any]]) -> None:
    # the index keeps names unique when one config is mounted at two targets
    name = f"{kind}-{index}-{label_name(m.name)}"[:63].rstrip("-")
    source: dict[str, Any] = {"items": [{"key": m.name, "path": m.name, "mode": m.mode}]}
    if kind == "config":
        volumes.append({"name": name, "configMap": {"name": dns_name(m.name), **source}})
    else:
        volumes.append({"name": name, "secret": {"secretName": dns_name(m.name), **source}})
    # subPath puts the one file at the target path instead of hiding the target's directory
    mounts.append({"name": name, "mountPath": m.target, "subPath": m.name, "readOnly": True})
    field = f"{kind}s[{m.target}]"
    note(field, "exact", f"volumes[{name}]", "")
    if m.uid or m.gid:
        note(f"{field}.uid", "not-mappable", "", "projected files are owned by root (or the fsGroup)")
    if kind == "config" and m.on_change == "restart":
        note(f"{field}.onChange", "exact", "template annotation checksum/config-*",
             "a content change rolls the pods")
    elif m.on_change == "signal":
        note(f"{field}.onChange", "not-mappable", "", "Kubernetes cannot signal a container on change")
    elif kind == "secret" and m.on_change == "restart":
        note(f"{field}.onChange", "not-mappable", "",
             "the secret's value is not exported, so no checksum can roll the pods")
    if kind == "secret" and m.env:
        env.append({"name": m.env, "valueFrom": {"secretKeyRef": {"name": dns_name(m.name), "key": m.name}}})
        note(f"{field}.env", "exact", "env[].valueFrom.secretKeyRef", "")


_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def valid_label(key: str, value: str) -> bool:
    name = key.rpartition("/")[2]
    return (bool(_LABEL_KEY.fullmatch(key)) and len(name) <= 63 and len(value) <= 63
            and bool(_LABEL_VALUE.fullmatch(value)))


def valid_labels(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if valid_label(k, v)}
