"""The content-addressed image store: import, lookup, removal with layer GC, and rootfs mounts.

Neighbours: ``images.archive`` reads archives into a plan, ``images.layers`` unpacks and verifies one
layer, ``images.mounts`` describes the overlay; the CLI (``cli.image_cmds``) and the reconciler call the
``ImageStore`` API. Layout under ``root`` (the state root's ``images/``)::

    lock                     flock held by import and remove (one writer at a time)
    tmp/                     scratch; anything here is a leftover of a crash and is removed on next write
    blobs/sha256/<hex>       manifest and config blobs (layer blobs are not kept: their content is in diff/)
    layers/<chain hex>/diff  one unpacked layer in overlayfs form, shared by every image that has it
    layers/<chain hex>/layer.json   diff_id, entries, bytes
    l/<16 hex>               symlink -> ../layers/<chain hex>/diff (short lowerdir names, like overlay2)
    records/<id hex>.json    image record: manifest digest, layers (chain ids), diff_ids, size
    names.json               {"name:tag": "sha256:<image id>"}

Crash safety: layers are unpacked under ``tmp/`` and renamed into ``layers/`` only after every layer of
the archive verified; records are written to a temp file and renamed. A kill -9 at any point leaves temp
dirs or unreferenced layers, both removed by the next import or remove. Bad archives leave the store as it
was (their temp dirs are removed at once).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ImageError
from orchestrator.fsutil import write_atomic
from orchestrator.images.archive import ImportPlan, open_source, read_plan
from orchestrator.images.extract import Limits
from orchestrator.images.layers import unpack_layer
from orchestrator.images.model import Image, ImageConfig, chain_ids, normalize_name
from orchestrator.images.mounts import overlay_mount
from orchestrator.runtime.base import Mount

Progress = Callable[[int, int], None]          # (bytes read so far, total bytes of layer blobs)
InUse = Callable[[str], bool] | Collection[str]
SHORT_LEN = 16
DEFAULT_LIMITS = Limits()
# module-level aliases: inside ImageStore the name ``list`` is the method
Staged = list[tuple[Path, str]]
ChainIds = list[str]
Mounts = list[Mount]


@dataclass(frozen=True)
class Removed:
    untagged: tuple[str, ...]
    deleted: str | None                  # image id, when the image itself went
    layers: int                          # layers garbage-collected


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class ImageStore:
    def __init__(self, root: Path, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.root = root
        self.limits = limits

    # ---- reading ----------------------------------------------------------------------------------
    def _save_names(self, names: dict[str, str]) -> None:
        write_atomic(self.root / "names.json", json.dumps(names, sort_keys=True, indent=1).encode(),
                     mode=0o644, fsync=True)

    def _names(self) -> dict[str, str]:
        try:
            data = json.loads((self.root / "names.json").read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ImageError(f"{self.root}/names.json is corrupt: {exc}") from exc
        return {str(k): str(v) for k, v in data.items()}

    def _records(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        d = self.root / "records"
        if not d.is_dir():
            return out
        for f in sorted(d.glob("*.json")):
            try:
                rec = json.loads(f.read_bytes())
            except ValueError as exc:
                raise ImageError(f"image record {f} is corrupt: {exc}") from exc
            out[rec["id"]] = rec
        return out

    def _image(self, rec: dict[str, Any], names: dict[str, str]) -> Image:
        try:
            config = json.loads((self.root / "blobs/sha256" / _hex(rec["id"])).read_bytes())
        except (OSError, ValueError) as exc:
            raise ImageError(f"image {rec['id']}: config blob missing or corrupt: {exc}") from exc
        return Image(id=rec["id"], names=tuple(sorted(n for n, i in names.items() if i == rec["id"])),
                     layers=tuple(rec["layers"]), size=int(rec["size"]),
                     created=str(config.get("created", "")),
                     config=ImageConfig.from_oci(config), manifest_digest=rec["manifest_digest"],
                     diff_ids=tuple(rec["diff_ids"]), architecture=str(config.get("architecture", "")),
                     os=str(config.get("os", "")))

    def list(self) -> list[Image]:
        names = self._names()
        return [self._image(rec, names) for rec in self._records().values()]

    def get(self, ref: str) -> Image:
        """By ``name[:tag]``, by full id, or by a unique id prefix (4+ hex, ``sha256:`` optional)."""
        names, records = self._names(), self._records()
        try:
            image_id: str | None = names.get(normalize_name(ref))
        except ImageError:
            image_id = None
        if image_id is None:
            prefix = ref.removeprefix("sha256:")
            if len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix):
                hits = [i for i in records if _hex(i).startswith(prefix)]
                if len(hits) > 1:
                    raise ImageError(f"image id prefix {ref!r} is ambiguous ({len(hits)} images)")
                image_id = hits[0] if hits else None
        if image_id is None or image_id not in records:
            raise ImageError(f"image {ref!r} not found in {self.root}")
        return self._image(records[image_id], names)

    # ---- writing ----------------------------------------------------------------------------------
    def _private_root(self) -> None:
        """The store root is 0700: layers keep the modes of the image (setuid binaries, device nodes),
        so no host user but root may reach them (Docker: image dirs 0700). Missing parents (a fresh
        state root) are made 0711."""
        try:
            for parent in reversed(self.root.absolute().parents):
                if not parent.exists():
                    parent.mkdir(mode=0o711)
                    os.chmod(parent, 0o711)          # mkdir's mode is filtered by the umask
            self.root.mkdir(mode=0o700, exist_ok=True)
            if self.root.stat().st_mode & 0o7777 != 0o700:
                os.chmod(self.root, 0o700)
        except OSError as exc:
            raise ImageError(f"cannot create the image store {self.root}: {exc.strerror}") from exc

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._private_root()
        for sub in ("tmp", "blobs/sha256", "layers", "l", "records"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._collect()
            yield
        finally:
            os.close(fd)

    def _collect(self) -> int:
        """Remove leftovers: temp dirs, layers and blobs no record references, dangling links."""
        for entry in (self.root / "tmp").iterdir():
            _rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        for half_written in [*self.root.glob(".*.tmp"), *(self.root / "records").glob(".*.tmp")]:
            half_written.unlink()                    # write_atomic's temp files (.<name>.<pid>.<rand>.tmp)
        records = self._records().values()
        used = {_hex(c) for r in records for c in r["layers"]}
        removed = 0
        for layer in (self.root / "layers").iterdir():
            if layer.name not in used:
                # rename first so a crash mid-delete leaves only a temp dir
                grave = self.root / "tmp" / f"gc-{layer.name}"
                os.rename(layer, grave)
                _rmtree(grave)
                removed += 1
        for link in (self.root / "l").iterdir():
            if not link.exists():
                link.unlink()
        blobs = {_hex(d) for r in records for d in (r["id"], r["manifest_digest"])}
        for blob in (self.root / "blobs/sha256").iterdir():
            if blob.name not in blobs:
                blob.unlink()
        return removed

    def import_archive(self, path: Path, name: str | None = None, *,
                       progress: Progress | None = None) -> Image:
        """Import an OCI layout (dir or tar) or docker-save tar; returns the stored image.
        ``progress(done, total)`` is called as layer blob bytes are read."""
        wanted = normalize_name(name) if name else None
        try:
            return self._import(path, wanted, progress)
        except OSError as exc:               # the store's own disk: full, read-only, permissions
            raise ImageError(f"import of {path} into {self.root} failed: {exc}") from exc

    def _import(self, path: Path, wanted: str | None, progress: Progress | None) -> Image:
        with self._locked(), open_source(path) as src:
            plan = read_plan(src, name=wanted)
            chains = chain_ids([lr.diff_id for lr in plan.layers])
            total = sum(src.size(lr.path) for lr in plan.layers)
            done = 0

            def on_bytes(n: int) -> None:
                nonlocal done
                done += n
                if progress is not None:
                    progress(done, total)

            staged: Staged = []
            size, entries = 0, 0
            try:
                for lr, chain in zip(plan.layers, chains, strict=True):
                    existing = self.root / "layers" / _hex(chain) / "layer.json"
                    if existing.exists():               # shared with an image we already have
                        size += int(json.loads(existing.read_bytes())["bytes"])
                        on_bytes(src.size(lr.path))
                        continue
                    tmp = self.root / "tmp" / f"layer-{uuid.uuid4().hex}"
                    (tmp / "diff").mkdir(parents=True)
                    staged.append((tmp, chain))
                    budget = Limits(self.limits.max_entries - entries, self.limits.max_bytes - size)
                    got = unpack_layer(src, lr, tmp / "diff", limits=budget, on_bytes=on_bytes)
                    size, entries = size + got.bytes, entries + got.entries
                    (tmp / "layer.json").write_text(json.dumps(
                        {"chain_id": chain, "diff_id": got.diff_id, "blob": got.blob_digest,
                         "entries": got.entries, "bytes": got.bytes}, sort_keys=True))
                self._commit(plan, chains, staged, size, wanted)
            finally:
                for tmp, _ in staged:
                    if tmp.exists():
                        _rmtree(tmp)
        names = [wanted] if wanted else plan.names
        return self.get(names[0] if names else plan.config_digest)

    def _commit(self, plan: ImportPlan, chains: ChainIds, staged: Staged, size: int,
                wanted: str | None) -> None:
        """Everything verified: blobs, layers, links, then the record and names (the commit point)."""
        blobs = self.root / "blobs/sha256"
        write_atomic(blobs / _hex(plan.manifest_digest), plan.manifest, mode=0o644, fsync=True)
        write_atomic(blobs / _hex(plan.config_digest), plan.config, mode=0o644, fsync=True)
        for tmp, chain in staged:
            os.rename(tmp, self.root / "layers" / _hex(chain))
        for chain in chains:
            link = self.root / "l" / _hex(chain)[:SHORT_LEN]
            target = f"../layers/{_hex(chain)}/diff"
            if link.is_symlink() and os.readlink(link) != target:
                raise ImageError(f"short layer name {link.name} collides for {chain}; store needs repair")
            if not link.is_symlink():
                os.symlink(target, link)
        record = {"id": plan.config_digest, "manifest_digest": plan.manifest_digest,
                  "layers": chains, "diff_ids": [lr.diff_id for lr in plan.layers], "size": size}
        write_atomic(self.root / "records" / f"{_hex(plan.config_digest)}.json",
                      json.dumps(record, sort_keys=True, indent=1).encode(), mode=0o644, fsync=True)
        names = self._names()
        for n in [wanted] if wanted else plan.names:
            names[n] = plan.config_digest
        self._save_names(names)

    def remove(self, ref: str, in_use: InUse = ()) -> Removed:
        """Untag ``ref`` if it is one of several names; else delete the image (refused while a container
        uses it: ``in_use(image_id)`` true or the id in the given collection) and GC its layers."""
        try:
            return self._remove(ref, in_use)
        except OSError as exc:
            raise ImageError(f"removing image {ref!r} from {self.root} failed: {exc}") from exc

    def _remove(self, ref: str, in_use: InUse) -> Removed:
        with self._locked():
            image = self.get(ref)
            names = self._names()
            try:
                by_name = normalize_name(ref) in image.names
            except ImageError:
                by_name = False
            if by_name and len(image.names) > 1:
                del names[normalize_name(ref)]
                self._save_names(names)
                return Removed((normalize_name(ref),), None, 0)
            used = in_use(image.id) if callable(in_use) else image.id in in_use
            if used:
                raise ImageError(f"image {ref!r} ({image.short_id}) is in use by a container; "
                                 "delete the container first")
            for n in image.names:
                del names[n]
            self._save_names(names)
            (self.root / "records" / f"{_hex(image.id)}.json").unlink()
            return Removed(image.names, image.id, self._collect())

    # ---- mounts -----------------------------------------------------------------------------------
    def layer_dir(self, chain_id: str) -> Path:
        return self.root / "layers" / _hex(chain_id) / "diff"

    def rootfs_mounts(self, image: Image, upper: Path, work: Path, readonly: bool = False) -> Mounts:
        """The overlay for a container of ``image``: its layers (topmost first) as shared lowers, via the
        short ``l/`` links relative to ``Mount.cwd`` (the store root), plus the container's upper/work.
        ``readonly`` adds ``ro`` (the runtime maps it to MS_RDONLY)."""
        lowers = []
        for chain in reversed(image.layers):
            link = f"l/{_hex(chain)[:SHORT_LEN]}"
            if not (self.root / link).is_dir():
                raise ImageError(f"image {image.short_id}: layer {chain} is missing from {self.root}")
            lowers.append(link)
        return [overlay_mount(lowers, upper, work, cwd=str(self.root.absolute()), readonly=readonly)]
