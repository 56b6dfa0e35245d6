"""Reading image archives: OCI image layout (dir or tar) and ``docker save`` tars, into an ImportPlan.

``orchestrator.images.store`` calls ``open_source`` then ``read_plan``; the plan holds the verified
manifest and config bytes and, per layer, where its blob is and which digests it must have. Layer blobs
are NOT read here: the store streams each one through digest checks into ``images.extract``.

Every digest read from an archive is checked to be ``sha256:<64 hex>`` before it becomes a path, and
paths named by a docker ``manifest.json`` are checked like tar entry names (no absolute, no ``..``).
"""

from __future__ import annotations

import json
import os
import platform
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, cast

from orchestrator.errors import ImageError
from orchestrator.images.extract import split_name
from orchestrator.images.model import check_digest, normalize_name, sha256_digest

MAX_JSON = 16 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(platform.machine(), platform.machine())


class Source(Protocol):
    label: str

    def open(self, rel: str) -> IO[bytes]: ...

    def exists(self, rel: str) -> bool: ...

    def size(self, rel: str) -> int: ...


class DirSource:
    """An unpacked archive directory; every rel path was validated, and symlinks are not followed out."""

    def __init__(self, root: Path) -> None:
        self.root, self.label = root, str(root)

    def _path(self, rel: str) -> Path:
        path = self.root.joinpath(*split_name(rel, archive=self.label))
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ImageError(f"{self.label}: {rel!r} points outside the archive directory")
        return path

    def open(self, rel: str) -> IO[bytes]:
        try:
            return self._path(rel).open("rb")
        except OSError as exc:
            raise ImageError(f"{self.label}: cannot read {rel!r}: {exc.strerror}") from exc

    def exists(self, rel: str) -> bool:
        return self._path(rel).is_file()

    def size(self, rel: str) -> int:
        try:
            return self._path(rel).stat().st_size
        except OSError as exc:
            raise ImageError(f"{self.label}: cannot read {rel!r}: {exc.strerror}") from exc


class TarSource:
    """An archive tar, read by member (random access; the outer tar is never extracted)."""

    def __init__(self, tar: tarfile.TarFile, label: str) -> None:
        self.tar, self.label = tar, label
        self.members: dict[str, tarfile.TarInfo] = {}
        for m in tar.getmembers():
            self.members["/".join(p for p in m.name.split("/") if p not in ("", "."))] = m

    def _member(self, rel: str) -> tarfile.TarInfo:
        key = "/".join(split_name(rel, archive=self.label))
        m = self.members.get(key)
        if m is None or not (m.isreg() or m.islnk() or m.issym()):
            raise ImageError(f"{self.label}: archive has no file {rel!r}")
        return m

    def open(self, rel: str) -> IO[bytes]:
        try:
            f = self.tar.extractfile(self._member(rel))
        except (KeyError, tarfile.TarError) as exc:
            raise ImageError(f"{self.label}: cannot read {rel!r}: {exc}") from exc
        if f is None:
            raise ImageError(f"{self.label}: cannot read {rel!r}")
        return f

    def exists(self, rel: str) -> bool:
        try:
            self._member(rel)
        except ImageError:
            return False
        return True

    def size(self, rel: str) -> int:
        return self._member(rel).size


@contextmanager
def open_source(path: Path) -> Iterator[Source]:
    if path.is_dir():
        yield DirSource(path)
        return
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the with below, after the yield
    except (OSError, tarfile.TarError) as exc:
        raise ImageError(f"{path}: not a readable tar archive or directory: {exc}") from exc
    with tar:
        yield TarSource(tar, str(path))


@dataclass(frozen=True)
class LayerRef:
    path: str                    # blob path inside the source
    media_type: str
    digest: str | None           # digest of the blob as stored (None: docker-save, only diff_id known)
    size: int | None
    diff_id: str                 # digest of the uncompressed tar, from the config


@dataclass(frozen=True)
class ImportPlan:
    manifest: bytes
    manifest_digest: str
    config: bytes
    config_digest: str
    config_doc: dict[str, Any]
    layers: list[LayerRef]
    names: list[str] = field(default_factory=list)


def _read_json(src: Source, rel: str, *, digest: str | None = None) -> tuple[bytes, Any]:
    with src.open(rel) as f:
        data = f.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise ImageError(f"{src.label}: {rel} is larger than {MAX_JSON} bytes")
    if digest is not None and sha256_digest(data) != digest:
        raise ImageError(f"{src.label}: {rel}: digest mismatch (want {digest}, got {sha256_digest(data)})")
    try:
        return data, json.loads(data)
    except ValueError as exc:
        raise ImageError(f"{src.label}: {rel} is not valid JSON: {exc}") from exc


def _blob(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _diff_ids(src: Source, config: Any) -> list[str]:
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list):
        raise ImageError(f"{src.label}: image config has no rootfs.diff_ids list")
    return [check_digest(d, what=f"{src.label}: diff_id") for d in ids]


def read_plan(src: Source, *, name: str | None = None) -> ImportPlan:
    """What the archive at ``src`` holds; ``name`` (normalized) picks among several images."""
    if src.exists("oci-layout") and src.exists("index.json"):
        return _read_oci(src, name)
    if src.exists("manifest.json"):
        return _read_docker(src, name)
    raise ImageError(f"{src.label}: neither an OCI image layout (oci-layout, index.json) "
                     "nor a docker save archive (manifest.json)")


def _pick(src: Source, descs: list[Any], name: str | None) -> dict[str, Any]:
    """One manifest descriptor among an index's: by ref name, then by platform."""
    descs = [d for d in descs if isinstance(d, dict)]
    if name and len(descs) > 1:
        tag = name.rsplit(":", 1)[1]
        named = [d for d in descs if (d.get("annotations") or {}).get(REF_NAME) in (name, tag)]
        descs = named or descs
    if len(descs) > 1:
        plat = [d for d in descs if (d.get("platform") or {}).get("architecture") == _ARCH
                and (d.get("platform") or {}).get("os", "linux") == "linux"]
        descs = plat or descs
    if len(descs) != 1:
        refs = [(d.get("annotations") or {}).get(REF_NAME, d.get("digest")) for d in descs]
        raise ImageError(f"{src.label}: {len(descs)} images in the archive ({refs}); pick one with --name")
    return cast(dict[str, Any], descs[0])


def _read_oci(src: Source, name: str | None) -> ImportPlan:
    _, index = _read_json(src, "index.json")
    ref = ""
    for _depth in range(4):                      # index -> (nested index ->) manifest
        desc = _pick(src, index.get("manifests") or [] if isinstance(index, dict) else [], name)
        notes = desc.get("annotations") or {}
        # containerd/docker 25+ put the full name in their own key and only the tag in the OCI one
        ref = ref or notes.get(CONTAINERD_NAME) or notes.get(REF_NAME, "")
        digest = check_digest(desc.get("digest"), what=f"{src.label}: manifest descriptor")
        raw, doc = _read_json(src, _blob(digest), digest=digest)
        mtype = desc.get("mediaType") or (doc.get("mediaType") if isinstance(doc, dict) else "")
        if mtype in (OCI_INDEX, DOCKER_LIST):
            index = doc
            continue
        if mtype not in (OCI_MANIFEST, DOCKER_MANIFEST, None, ""):
            raise ImageError(f"{src.label}: unsupported manifest media type {mtype!r}")
        break
    else:
        raise ImageError(f"{src.label}: image index nesting too deep")
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise ImageError(f"{src.label}: manifest {digest} has no config descriptor")
    cdigest = check_digest(doc["config"].get("digest"), what=f"{src.label}: config descriptor")
    craw, config = _read_json(src, _blob(cdigest), digest=cdigest)
    diff_ids = _diff_ids(src, config)
    descs = doc.get("layers") or []
    if len(descs) != len(diff_ids):
        raise ImageError(f"{src.label}: manifest lists {len(descs)} layers but config has "
                         f"{len(diff_ids)} diff_ids")
    layers = []
    for d, diff_id in zip(descs, diff_ids, strict=True):
        ldigest = check_digest(d.get("digest"), what=f"{src.label}: layer descriptor")
        layers.append(LayerRef(_blob(ldigest), str(d.get("mediaType", "")), ldigest,
                               int(d["size"]) if isinstance(d.get("size"), int) else None, diff_id))
    names = []
    if ref and ":" in ref.rsplit("/", 1)[-1]:
        names.append(ref)
    elif ref:                                   # a bare tag: name it after the archive file
        stem = Path(src.label).name.split(".")[0].lower()
        names.append(f"{stem}:{ref}")
    return ImportPlan(raw, digest, craw, cdigest, config, layers, _valid_names(names))


def _valid_names(names: list[Any]) -> list[str]:
    out = []
    for n in names:
        try:
            out.append(normalize_name(str(n)))
        except ImageError:
            continue                             # an odd name in an archive is not fatal; skip it
    return out


def _read_docker(src: Source, name: str | None) -> ImportPlan:
    _, entries = _read_json(src, "manifest.json")
    if not isinstance(entries, list) or not entries:
        raise ImageError(f"{src.label}: manifest.json is not a non-empty list")
    if len(entries) > 1 and name:
        entries = [e for e in entries if name in _valid_names(e.get("RepoTags") or [])] or entries
    if len(entries) != 1:
        raise ImageError(f"{src.label}: {len(entries)} images in the archive; pick one with --name")
    entry = entries[0]
    cpath = entry.get("Config")
    if not isinstance(cpath, str):
        raise ImageError(f"{src.label}: manifest.json entry has no Config")
    craw, config = _read_json(src, cpath)
    cdigest = sha256_digest(craw)
    hexpart = os.path.basename(cpath).removesuffix(".json")
    if len(hexpart) == 64 and hexpart != cdigest.removeprefix("sha256:"):
        raise ImageError(f"{src.label}: {cpath}: digest mismatch (got {cdigest})")
    diff_ids = _diff_ids(src, config)
    paths = entry.get("Layers") or []
    if len(paths) != len(diff_ids) or not all(isinstance(p, str) for p in paths):
        raise ImageError(f"{src.label}: manifest.json lists {len(paths)} layers but config has "
                         f"{len(diff_ids)} diff_ids")
    layers = [LayerRef(p, "", None, None, d) for p, d in zip(paths, diff_ids, strict=True)]
    # docker save has no manifest blob: record an OCI manifest of the uncompressed layers we verified
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest,
                           "size": len(craw)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d,
                            "size": src.size(p)} for p, d in zip(paths, diff_ids, strict=True)]}
    raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return ImportPlan(raw, sha256_digest(raw), craw, cdigest, config, layers,
                      _valid_names(entry.get("RepoTags") or []))
