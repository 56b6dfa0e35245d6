"""Files delivered into a container by the runtime (configs and secrets): the value type and pure plans.

``FileSpec`` is what a caller hands to ``LinuxRuntime.create(..., files=...)`` and
``LinuxRuntime.update_files``: a container path, the content (bytes, or a ``SecretValue`` that never
prints), owner and mode. This module is pure: it checks targets (:func:`check_files`), decides which
targets share one directory mount and which are single-file binds (:func:`plan_mounts`), and frames
the contents into one binary payload (:func:`encode_payload` / :func:`decode_payload`) that travels in
memory (a memfd passed over the fork server's socket) to the container init, never through
config.json, the state dir or any other file. The kernel side is ``runtime.linux.filemounts``.

A secret mount with ``env: NAME`` is a FileSpec with ``env`` set: the same content is also the value of
the environment variable NAME of the container's process. It rides in the same payload (the header
carries the name, never the value), so a restart replays it like the files; :func:`environment` is
what the init adds to the process environment right before ``execve``.

Neighbours: ``secrets.materialise`` (writes the files; its ``FileSpec`` is ours minus the content; its
``relative_parts``/``FileMeta``/``content_bytes`` are the path check and types used here too),
``secrets.value`` (SecretValue); the reconciler builds these from ``secrets.digest.config_items`` /
``secret_items`` with :func:`file_specs`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import RuntimeFailure
from orchestrator.secrets.materialise import FileMeta, content_bytes, relative_parts
from orchestrator.secrets.value import SecretValue

# targets below these directories are delivered as one read-only directory mount each (rotation by
# atomic rename reaches readers); every other target is a single-file bind (rotation in place)
DIR_MOUNTS = ("/run/secrets", "/run/configs")
MAX_TOTAL_BYTES = 64 << 20           # all files of one container together (each tmpfs page counts)
_HEADER = struct.Struct("!I")        # length of the JSON header that precedes the contents


@dataclass(frozen=True)
class FileSpec:
    """One file in a container. ``content`` is left out of ``repr`` (and a ``SecretValue`` prints as
    ``<redacted sha256:…>`` anyway), so a FileSpec is safe in logs and error messages."""

    target: str                                  # absolute path in the container
    content: bytes | SecretValue = field(repr=False)
    uid: int = 0
    gid: int = 0
    mode: int = 0o444
    secret: bool = False
    env: str = ""                                # also the value of this environment variable

    def data(self) -> bytes:
        return content_bytes(self.content)


def file_specs(configs: Iterable[tuple[FileMeta, bytes | SecretValue]] = (),
               secrets: Iterable[tuple[FileMeta, bytes | SecretValue]] = ()) -> list[FileSpec]:
    """FileSpecs from ``secrets.digest.config_items`` / ``secret_items`` (anything with
    target/uid/gid/mode paired with its content)."""
    out = [FileSpec(m.target, c, m.uid, m.gid, m.mode, secret=False) for m, c in configs]
    out += [FileSpec(m.target, c, m.uid, m.gid, m.mode, secret=True, env=str(getattr(m, "env", "") or ""))
            for m, c in secrets]
    return out


def check_env_name(name: str, target: str) -> None:
    """A variable name execve and a shell can carry: no ``=``, no NUL, not empty, ASCII."""
    if not name or "=" in name or "\0" in name or not name.isascii() or not name.isprintable():
        raise RuntimeFailure(f"invalid environment variable name {name!r}", op="files", path=target)


def env_value(f: FileSpec) -> str:
    """The text of ``f``'s environment variable. Refuses NUL and non-UTF-8 naming the variable, never
    quoting the value (it is a secret)."""
    data = f.data()
    if b"\0" in data:
        raise RuntimeFailure(f"secret for environment variable {f.env} contains a NUL byte", op="env",
                             path=f.env)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise RuntimeFailure(f"secret for environment variable {f.env} is not valid UTF-8", op="env",
                             path=f.env) from None


def environment(files: Sequence[FileSpec]) -> dict[str, str]:
    """NAME -> value for every FileSpec with ``env`` set (checked as :func:`env_value`)."""
    return {f.env: env_value(f) for f in files if f.env}


def normalise(target: str) -> str:
    return "/" + "/".join(relative_parts(target, op="files"))


def check_files(files: Sequence[FileSpec]) -> None:
    """Refuse what the init could not do: relative or escaping targets, duplicates, a target inside
    another file, a mode out of range, ids out of range, too much content."""
    seen: set[str] = set()
    names: set[str] = set()
    total = 0
    for f in files:
        target = normalise(f.target)
        if target in seen:
            raise RuntimeFailure("two files for the same target", op="files", path=target)
        seen.add(target)
        if not 0 <= f.mode <= 0o7777:
            raise RuntimeFailure(f"file mode {f.mode:#o} out of range", op="files", path=target)
        if not (0 <= f.uid < 2**32 - 1 and 0 <= f.gid < 2**32 - 1):
            raise RuntimeFailure("file uid/gid out of range", op="files", path=target)
        if target in DIR_MOUNTS:
            raise RuntimeFailure("a file cannot replace a shared files directory", op="files", path=target)
        total += len(f.data())
        if f.env:
            check_env_name(f.env, target)
            if f.env in names:
                raise RuntimeFailure(f"two secrets for environment variable {f.env}", op="files", path=target)
            names.add(f.env)
            env_value(f)
    if total > MAX_TOTAL_BYTES:
        raise RuntimeFailure(f"files too large ({total} bytes, at most {MAX_TOTAL_BYTES})", op="files",
                             path=sorted(seen)[0])
    for target in seen:
        parent = target.rsplit("/", 1)[0]
        while parent:
            if parent in seen:
                raise RuntimeFailure(f"file target is below another file {parent}", op="files", path=target)
            parent = parent.rsplit("/", 1)[0]


def dir_mount_of(target: str) -> str:
    """The shared directory mount a target belongs to, or "" for a single-file bind."""
    target = normalise(target)
    return next((d for d in DIR_MOUNTS if target.startswith(d + "/")), "")


@dataclass(frozen=True)
class MountPlan:
    """Bind mounts from the files tmpfs into the container: ``dirs`` (container dirs, each one mount of
    the same-named tmpfs dir) then ``files`` (single-file binds), in the order to make them."""

    dirs: tuple[str, ...]
    files: tuple[str, ...]

    def to_dict(self) -> dict[str, list[str]]:
        return {"dirs": list(self.dirs), "files": list(self.files)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MountPlan:
        return cls(tuple(raw.get("dirs", ())), tuple(raw.get("files", ())))


def plan_mounts(files: Sequence[FileSpec]) -> MountPlan:
    dirs = sorted({d for f in files if (d := dir_mount_of(f.target))})
    singles = sorted(normalise(f.target) for f in files if not dir_mount_of(f.target))
    # a parent before its children: a file bind below a directory mount must come after it (sorted
    # order does that), and nothing else overlaps
    return MountPlan(tuple(dirs), tuple(singles))


def layout(files: Sequence[FileSpec]) -> list[dict[str, Any]]:
    """What may be recorded on disk about the files: targets, owners, modes, environment variable
    names; no content."""
    return [{"target": normalise(f.target), "uid": f.uid, "gid": f.gid, "mode": f.mode, "secret": f.secret,
             "env": f.env} for f in files]


def encode_payload(files: Sequence[FileSpec]) -> bytes:
    """``!I`` header length, a JSON header (metadata and sizes only), then the contents back to back."""
    contents = [f.data() for f in files]
    header = json.dumps([{**meta, "size": len(c)} for meta, c in zip(layout(files), contents, strict=True)])
    raw = header.encode()
    return b"".join([_HEADER.pack(len(raw)), raw, *contents])


def decode_payload(payload: bytes) -> list[FileSpec]:
    """The inverse of :func:`encode_payload`; secret contents come back as ``SecretValue``."""
    try:
        (size,) = _HEADER.unpack_from(payload, 0)
        header = json.loads(payload[_HEADER.size:_HEADER.size + size])
        offset = _HEADER.size + size
        out: list[FileSpec] = []
        for meta in header:
            data = payload[offset:offset + int(meta["size"])]
            if len(data) != int(meta["size"]):
                raise ValueError("truncated")
            offset += len(data)
            content: bytes | SecretValue = SecretValue(data) if meta["secret"] else data
            out.append(FileSpec(meta["target"], content, int(meta["uid"]), int(meta["gid"]),
                                int(meta["mode"]), bool(meta["secret"]), str(meta.get("env", ""))))
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        # never echo the payload: it holds secret bytes
        raise RuntimeFailure(f"malformed files payload ({type(exc).__name__})", op="files") from None
    if offset != len(payload):
        raise RuntimeFailure("malformed files payload (trailing bytes)", op="files")
    return out
