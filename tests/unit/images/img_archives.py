"""Test helpers: build layer tars (including malicious ones) and wrap them as OCI or docker-save archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

Member = tuple[tarfile.TarInfo, bytes | None]


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", *, linkname: str = "",
          mode: int = 0o644, major: int = 0, minor: int = 0, uid: int = 0) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, 1_700_000_000, uid, uid
    info.linkname, info.devmajor, info.devminor = linkname, major, minor
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def layer(*members: Member) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _tar_files(files: dict[str, bytes]) -> bytes:
    return layer(*(entry(name, data=data) for name, data in sorted(files.items())))


def oci_archive(path: Path, layers: list[bytes], *, ref: str = "test:latest", gz: bool = True,
                bad_diff_id: bool = False, bad_blob: bool = False, env: tuple[str, ...] = ()) -> Path:
    """An OCI image-layout tar at ``path``; the flags corrupt one thing each, for digest tests."""
    files: dict[str, bytes] = {}
    descs = []
    for tar in layers:
        blob = gzip.compress(tar, mtime=0) if gz else tar
        files["blobs/sha256/" + digest(blob)[7:]] = blob + (b"x" if bad_blob else b"")
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gz else ""),
                      "digest": digest(blob), "size": len(blob)})
    diff_ids = [digest(t) for t in layers]
    if bad_diff_id:
        diff_ids[-1] = digest(b"something else")
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                         "config": {"Cmd": ["sh"], "Env": list(env), "Labels": {"a": "b"},
                                    "ExposedPorts": {"80/tcp": {}}},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    files["blobs/sha256/" + digest(config)[7:]] = config
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": digest(config), "size": len(config)},
                           "layers": descs}).encode()
    files["blobs/sha256/" + digest(manifest)[7:]] = manifest
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(manifest),
         "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": ref}}]}).encode()
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    path.write_bytes(_tar_files(files))
    return path


def docker_archive(path: Path, layers: list[bytes], *, tags: tuple[str, ...] = ("dock:1",)) -> Path:
    """A ``docker save`` style tar (uncompressed ``<id>/layer.tar`` files, ``<hex>.json`` config)."""
    files: dict[str, bytes] = {}
    config = json.dumps({"os": "linux", "config": {"Cmd": ["true"]},
                         "rootfs": {"type": "layers", "diff_ids": [digest(t) for t in layers]}}).encode()
    files[digest(config)[7:] + ".json"] = config
    paths = []
    for i, tar in enumerate(layers):
        files[f"l{i}/layer.tar"] = tar
        paths.append(f"l{i}/layer.tar")
    files["manifest.json"] = json.dumps([{"Config": digest(config)[7:] + ".json", "RepoTags": list(tags),
                                          "Layers": paths}]).encode()
    path.write_bytes(_tar_files(files))
    return path
