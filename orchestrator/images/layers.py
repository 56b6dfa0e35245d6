"""One layer blob -> one verified, unpacked layer directory, in a single streaming pass.

Called by ``orchestrator.images.store`` for each layer it does not have yet. The blob is read once:
a hashing reader checks the stored blob digest (and size), gzip is undone when the magic says so, a second
hashing reader over the uncompressed stream checks the config's diff_id, and ``images.extract`` writes the
entries. Any mismatch raises ImageError; the caller throws the half-written directory away.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from orchestrator.errors import ImageError, UnsafeArchiveError
from orchestrator.images.archive import LayerRef, Source
from orchestrator.images.extract import LayerStats, Limits, Readable, extract_layer

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20


class HashingReader:
    """A read-only stream that hashes (sha256) and counts everything read through it."""

    def __init__(self, f: Readable, on_bytes: Callable[[int], None] | None = None, *,
                 limit: int | None = None, label: str = "") -> None:
        self._f, self._on_bytes, self._limit, self._label = f, on_bytes, limit, label
        self.sha = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        if self._limit is not None:
            # bound every request: tarfile reads a whole PAX header in one call, and a header can
            # claim gigabytes; the entry caps alone would only see it after it is in memory
            room = self._limit - self.count
            if room <= 0 and self._f.read(1):
                raise UnsafeArchiveError(f"{self._label}: uncompressed layer stream exceeds "
                                         f"{self._limit} bytes")
            n = room if n < 0 or n > room else n
            if n <= 0:
                return b""
        data = self._f.read(n)
        if data:
            self.sha.update(data)
            self.count += len(data)
            if self._on_bytes is not None:
                self._on_bytes(len(data))
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


@dataclass(frozen=True)
class UnpackedLayer:
    diff_id: str
    blob_digest: str
    entries: int
    bytes: int


def unpack_layer(src: Source, ref: LayerRef, dest: Path, *, limits: Limits,
                 on_bytes: Callable[[int], None] | None = None) -> UnpackedLayer:
    """Unpack ``ref`` from ``src`` into the empty dir ``dest`` and verify its digests."""
    label = f"{src.label}: layer {ref.path}"
    if "zstd" in ref.media_type:
        raise ImageError(f"{label}: zstd layers are not supported ({ref.media_type})")
    with src.open(ref.path) as raw:
        blob = HashingReader(raw, on_bytes)
        head = blob.read(4)
        if head.startswith(_ZSTD_MAGIC):
            raise ImageError(f"{label}: zstd-compressed data is not supported")
        # put the peeked bytes back in front of the stream, without hashing them twice
        body = _Unread(head, blob)
        # GzipFile only calls read() on its fileobj when reading
        stream: Readable = (gzip.GzipFile(fileobj=cast(IO[bytes], body), mode="rb")
                            if head.startswith(_GZIP_MAGIC) else body)
        # tar overhead on top of the content cap: headers, padding and PAX records per entry
        cap = limits.max_bytes + 4096 * limits.max_entries + (1 << 20)
        diff = HashingReader(stream, limit=cap, label=label)
        try:
            try:
                stats: LayerStats = extract_layer(diff, dest, archive=label, limits=limits)
                diff.drain()                        # the tar's trailing zero blocks count in the diff_id
            except (OSError, EOFError, zlib.error) as exc:
                # OSError here is gzip's BadGzipFile / CRC errors: the blob is corrupt, not the host
                raise ImageError(f"{label}: corrupt compressed data: {exc}") from exc
            finally:
                blob.drain()
        except ImageError as exc:
            # a blob that fails its digest explains any decoding error better than the error itself
            if ref.digest is not None and blob.digest != ref.digest:
                raise ImageError(f"{label}: blob digest mismatch (want {ref.digest}, got {blob.digest})") \
                    from exc
            raise
    if ref.digest is not None and blob.digest != ref.digest:
        raise ImageError(f"{label}: blob digest mismatch (want {ref.digest}, got {blob.digest})")
    if ref.size is not None and blob.count != ref.size:
        raise ImageError(f"{label}: blob size mismatch (want {ref.size}, got {blob.count})")
    if diff.digest != ref.diff_id:
        raise ImageError(f"{label}: diff_id mismatch (config says {ref.diff_id}, content is {diff.digest})")
    if diff.count % 512:
        # tarfile takes a header cut short for the end of the archive; a tar is whole 512-byte blocks
        raise ImageError(f"{label}: truncated tar stream ({diff.count} bytes is not a whole number of "
                         "512-byte blocks)")
    return UnpackedLayer(ref.diff_id, blob.digest, stats.entries, stats.bytes)


class _Unread:
    """``head`` then the rest of ``f``: undoes a peek without re-hashing (``f`` hashed it already)."""

    def __init__(self, head: bytes, f: HashingReader) -> None:
        self._head, self._f = head, f

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0 or n >= len(self._head):
                data, self._head = self._head, b""
                return data + (self._f.read(n - len(data)) if n > len(data) else b"")
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._f.read(n)
