"""Image value types and the small pure helpers around them (digests, chain ids, names, config parsing).

Used by ``orchestrator.images.store`` (which builds ``Image`` values from its records) and by the runtime
side, which reads ``Image.config`` for the process defaults (Entrypoint, Cmd, Env, WorkingDir, User).
Nothing here touches the filesystem.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import ImageError

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(value: object, *, what: str) -> str:
    """``value`` if it is a well-formed sha256 digest; it is also used to build paths, so be strict."""
    if not isinstance(value, str) or not _DIGEST_RE.match(value):
        raise ImageError(f"{what}: invalid or unsupported digest {value!r} (want sha256:<64 hex>)")
    return value


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """OCI chain ids: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else sha256_digest(f"{out[-1]} {diff_id}".encode()))
    return out


def normalize_name(name: str) -> str:
    """``busybox`` and ``docker.io/library/busybox`` -> ``busybox:latest``; refuse what cannot be a
    name:tag reference."""
    name = name.strip()
    if not name or not _NAME_RE.match(name) or "@" in name:
        raise ImageError(f"invalid image name {name!r} (want repo[:tag], lowercase)")
    # Docker Hub's implicit prefixes (skopeo writes them out): one image, one spelling
    if name.startswith(("docker.io/library/", "index.docker.io/library/")):
        name = name.split("/library/", 1)[1]
    elif name.startswith("docker.io/"):
        name = name.removeprefix("docker.io/")
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


@dataclass(frozen=True)
class ImageConfig:
    """The process defaults of an image config (``config`` object of the OCI image config)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str = ""

    @staticmethod
    def from_oci(config: Mapping[str, Any]) -> ImageConfig:
        """From a parsed OCI/docker image config document (the whole file)."""
        c = config.get("config") or {}
        if not isinstance(c, dict):
            raise ImageError("image config: 'config' is not an object")

        def strs(key: str) -> tuple[str, ...]:
            v = c.get(key) or []
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ImageError(f"image config: {key} must be a list of strings")
            return tuple(v)

        labels = c.get("Labels") or {}
        ports = c.get("ExposedPorts") or {}
        if not isinstance(labels, dict) or not isinstance(ports, dict):
            raise ImageError("image config: Labels and ExposedPorts must be objects")
        return ImageConfig(entrypoint=strs("Entrypoint"), cmd=strs("Cmd"), env=strs("Env"),
                           working_dir=str(c.get("WorkingDir") or ""), user=str(c.get("User") or ""),
                           exposed_ports=tuple(sorted(str(p) for p in ports)),
                           labels={str(k): str(v) for k, v in sorted(labels.items())},
                           stop_signal=str(c.get("StopSignal") or ""))

    def to_dict(self) -> dict[str, Any]:
        return {"entrypoint": list(self.entrypoint), "cmd": list(self.cmd), "env": list(self.env),
                "working_dir": self.working_dir, "user": self.user,
                "exposed_ports": list(self.exposed_ports), "labels": dict(self.labels),
                "stop_signal": self.stop_signal}


@dataclass(frozen=True)
class Image:
    """One stored image. ``id`` is the config digest; ``layers`` are chain ids, bottom layer first."""

    id: str
    names: tuple[str, ...]
    layers: tuple[str, ...]
    size: int                               # bytes of unpacked regular-file content
    created: str                            # from the image config, RFC 3339 ("" if absent)
    config: ImageConfig
    manifest_digest: str = ""
    diff_ids: tuple[str, ...] = ()
    architecture: str = ""
    os: str = ""

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "names": list(self.names), "layers": list(self.layers),
                "diff_ids": list(self.diff_ids), "size": self.size, "created": self.created,
                "manifest_digest": self.manifest_digest, "architecture": self.architecture,
                "os": self.os, "config": self.config.to_dict()}
