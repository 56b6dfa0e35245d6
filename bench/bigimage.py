"""Bigger test images for the disk and import benchmarks: busybox plus layers of random data.

``scripts/build_images.py`` makes a ~1 MB busybox image; the disk case wants ~50 MB and the import case
several layers with real content. ``extend(src, dest, layers)`` reads an OCI image-layout tar (one
manifest), appends gzip-compressed layers (each: one random file of ``mb`` MB plus ``files`` small text
files, a realistic mix of bulk data and entry overhead), rewrites config (diff_ids, history), manifest
and index, and writes a new OCI image-layout tar. Deterministic for a given seed.

    python3 bench/bigimage.py SRC.oci.tar DEST.oci.tar --layers 5 --mb 10
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LayerSpec:
    mb: int
    files: int = 200


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer_tar(index: int, spec: LayerSpec, rng: random.Random) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, data: bytes | None, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 1704067200, mode
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        add("data", None)
        add(f"data/layer{index}", None)
        add(f"data/layer{index}/blob.bin", rng.randbytes(spec.mb << 20))
        for i in range(spec.files):
            add(f"data/layer{index}/f{i:04d}.txt", f"layer {index} file {i}\n".encode() * 20)
    return buf.getvalue()


def extend(src: Path, dest: Path, layers: list[LayerSpec], *, seed: int = 1, tag: str = "big:latest") -> int:
    """Write ``dest``: the image of ``src`` plus ``layers``. Returns the total size of the layer blobs."""
    rng = random.Random(seed)
    with tarfile.open(src) as t:
        blobs = {m.name: t.extractfile(m).read() for m in t.getmembers()  # type: ignore[union-attr]
                 if m.isfile()}
    index = json.loads(blobs["index.json"])
    mdesc = index["manifests"][0]
    manifest = json.loads(blobs["blobs/sha256/" + mdesc["digest"].split(":")[1]])
    config = json.loads(blobs["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    for i, spec in enumerate(layers):
        raw = _layer_tar(i, spec, rng)
        gz = gzip.compress(raw, compresslevel=1, mtime=0)
        blobs["blobs/sha256/" + _sha(gz).split(":")[1]] = gz
        manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                   "digest": _sha(gz), "size": len(gz)})
        config["rootfs"]["diff_ids"].append(_sha(raw))
        config.setdefault("history", []).append({"created": "2024-01-01T00:00:00Z",
                                                 "created_by": f"bench/bigimage.py layer {i}"})
    cfg = json.dumps(config, sort_keys=True).encode()
    blobs["blobs/sha256/" + _sha(cfg).split(":")[1]] = cfg
    manifest["config"] = {**manifest["config"], "digest": _sha(cfg), "size": len(cfg)}
    man = json.dumps(manifest, sort_keys=True).encode()
    blobs["blobs/sha256/" + _sha(man).split(":")[1]] = man
    index["manifests"] = [{**mdesc, "digest": _sha(man), "size": len(man),
                           "annotations": {"org.opencontainers.image.ref.name": tag}}]
    blobs["index.json"] = json.dumps(index, sort_keys=True).encode()
    with tarfile.open(dest, "w") as out:
        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1704067200
            out.addfile(info)
        for name, data in sorted(blobs.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1704067200
            out.addfile(info, io.BytesIO(data))
    return sum(d["size"] for d in manifest["layers"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("src", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--mb", type=int, default=48)
    args = ap.parse_args()
    size = extend(args.src, args.dest, [LayerSpec(args.mb)] * args.layers)
    print(f"{args.dest}: {size / 1e6:.1f} MB of layers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
