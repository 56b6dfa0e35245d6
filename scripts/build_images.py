#!/usr/bin/env python3
"""Build the demo/test images as OCI image-layout tars from Debian's busybox-static, reproducibly.

    scripts/build_images.py OUTDIR [--layers N] [--busybox /bin/busybox]

writes ``OUTDIR/busybox.oci.tar`` (one layer: busybox, its applet symlinks, /etc/passwd, /etc/group and
the usual dirs), ``OUTDIR/layered.oci.tar`` (the busybox layer plus three more that exercise a whiteout
``.wh.`` of a lower file, an opaque dir ``.wh..wh..opq`` and a plain, uncompressed layer) and, with
``--layers N``, ``OUTDIR/stack-N.oci.tar`` (busybox plus N-1 tiny layers: N layers in all).

Every tar has sorted entries, fixed mtimes and owners, and gzip with mtime 0, so the digests only change
when busybox does; a file whose content is unchanged is not rewritten (idempotent). Used by the tests
(``tests/integration/images``) and the README demo; imported by ``orchestrator image import``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import platform
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MTIME = 1_704_067_200                  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
COMMON_APPLETS = ("sh", "ls", "cat", "echo", "true", "false", "sleep", "httpd", "wget", "nc", "ps", "id",
                  "hostname", "mount", "grep", "env", "touch", "rm", "mkdir", "cp", "mv", "ln", "chmod",
                  "stat", "head", "tail", "wc", "sed", "awk", "kill", "uname", "df", "du", "find", "vi",
                  "printf", "test", "readlink", "ip", "ifconfig", "ping", "dd", "date", "sort", "xargs")


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str = "file"             # file | dir | symlink
    data: bytes = b""
    mode: int = 0o644
    target: str = ""


def _tar(entries: Iterable[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in sorted(entries, key=lambda e: e.name):
            info = tarfile.TarInfo(e.name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "root", "root"
            info.mode = e.mode
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif e.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.target
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Layer:
    tar: bytes
    gzip: bool = True

    @property
    def blob(self) -> bytes:
        return gzip.compress(self.tar, compresslevel=6, mtime=0) if self.gzip else self.tar

    @property
    def media_type(self) -> str:
        return LAYER_TAR + "+gzip" if self.gzip else LAYER_TAR


def _applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout
    paths = sorted({p.strip() for p in out.splitlines() if p.strip()})
    have = {p.rsplit("/", 1)[-1] for p in paths}
    missing = [a for a in COMMON_APPLETS if a not in have]
    if missing:
        sys.exit(f"{busybox} lacks applets {missing}")
    return [p for p in paths if p != "bin/busybox"]


def busybox_entries(busybox: Path) -> list[Entry]:
    entries = [Entry(d, "dir", mode=0o755) for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "proc",
                                                       "sys", "dev", "etc", "var", "var/www")]
    entries += [Entry("tmp", "dir", mode=0o1777), Entry("root", "dir", mode=0o700)]
    entries.append(Entry("bin/busybox", data=busybox.read_bytes(), mode=0o755))
    entries += [Entry(p, "symlink", target="/bin/busybox", mode=0o777) for p in _applets(busybox)]
    entries.append(Entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"
                                             b"daemon:x:1:1:daemon:/:/bin/false\n"
                                             b"nobody:x:65534:65534:nobody:/:/bin/false\n"))
    entries.append(Entry("etc/group", data=b"root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n"))
    entries.append(Entry("var/www/index.html", data=b"hello from busybox\n"))
    return entries


def layered_layers(base: Layer) -> list[Layer]:
    lower = Layer(_tar([Entry("data", "dir", mode=0o755), Entry("data/keep.txt", data=b"keep\n"),
                        Entry("data/gone.txt", data=b"gone\n"), Entry("opq", "dir", mode=0o755),
                        Entry("opq/lower1.txt", data=b"lower1\n"), Entry("opq/sub", "dir", mode=0o755),
                        Entry("opq/sub/lower2.txt", data=b"lower2\n")]))
    middle = Layer(_tar([Entry("data", "dir", mode=0o755), Entry("data/.wh.gone.txt"),
                         Entry("data/middle.txt", data=b"middle\n"), Entry("opq", "dir", mode=0o755),
                         Entry("opq/.wh..wh..opq"), Entry("opq/new.txt", data=b"new\n")]), gzip=False)
    top = Layer(_tar([Entry("data", "dir", mode=0o755), Entry("data/.wh.middle.txt"),
                      Entry("etc", "dir", mode=0o755), Entry("etc/layered-release", data=b"layered 1\n")]))
    return [base, lower, middle, top]


def stack_layers(base: Layer, n: int) -> list[Layer]:
    return [base] + [Layer(_tar([Entry("layers", "dir", mode=0o755),
                                 Entry(f"layers/{i:04d}", data=f"{i}\n".encode())])) for i in range(1, n)]


def oci_archive(layers: list[Layer], ref: str) -> bytes:
    blobs: dict[str, bytes] = {}
    descs = []
    for layer in layers:
        blob = layer.blob
        blobs[_digest(blob)] = blob
        descs.append({"mediaType": layer.media_type, "digest": _digest(blob), "size": len(blob)})
    config = {"created": CREATED, "architecture": ARCH, "os": "linux",
              "config": {"Env": [PATH_ENV], "Cmd": ["sh"], "WorkingDir": "/"},
              "rootfs": {"type": "layers", "diff_ids": [_digest(layer.tar) for layer in layers]},
              "history": [{"created": CREATED, "created_by": "scripts/build_images.py"} for _ in layers]}
    craw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    blobs[_digest(craw)] = craw
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(craw),
                           "size": len(craw)}, "layers": descs}
    mraw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    blobs[_digest(mraw)] = mraw
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": manifest["mediaType"], "digest": _digest(mraw), "size": len(mraw),
                            "annotations": {"org.opencontainers.image.ref.name": ref}}]}
    files = [Entry("blobs", "dir", mode=0o755), Entry("blobs/sha256", "dir", mode=0o755),
             Entry("oci-layout", data=b'{"imageLayoutVersion":"1.0.0"}'),
             Entry("index.json", data=json.dumps(index, sort_keys=True, separators=(",", ":")).encode())]
    files += [Entry("blobs/sha256/" + d.removeprefix("sha256:"), data=b) for d, b in blobs.items()]
    return _tar(files)


def write_if_changed(path: Path, data: bytes) -> bool:
    if path.exists() and path.read_bytes() == data:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--layers", type=int, default=0, help="also build stack-N.oci.tar with N layers")
    ap.add_argument("--busybox", type=Path, default=Path("/bin/busybox"))
    args = ap.parse_args(argv)
    if args.layers < 0 or args.layers == 1:
        ap.error("--layers must be 2 or more")
    args.outdir.mkdir(parents=True, exist_ok=True)
    base = Layer(_tar(busybox_entries(args.busybox)))
    outputs = {"busybox.oci.tar": oci_archive([base], "busybox:latest"),
               "layered.oci.tar": oci_archive(layered_layers(base), "layered:latest")}
    if args.layers:
        outputs[f"stack-{args.layers}.oci.tar"] = oci_archive(stack_layers(base, args.layers),
                                                              f"stack:{args.layers}")
    for fname, data in outputs.items():
        changed = write_if_changed(args.outdir / fname, data)
        print(f"{args.outdir / fname}: {'written' if changed else 'unchanged'} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
