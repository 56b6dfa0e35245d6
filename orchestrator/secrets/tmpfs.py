"""A per-container tmpfs for secret files: mounted, sized, never swapped, and taken down.

``make_tmpfs`` mounts a tmpfs (nosuid, nodev, noexec; ``noswap`` on kernels that have it, 6.4+, so
secret pages never reach a swap device) of ``size`` bytes at ``path``; ``unmount`` takes it down and is
idempotent. Both go through ``runtime.linux.syscalls``, the one seam for mount(2). Meant to be called in
the container's own mount namespace (the host mount table never changes), then filled with
``materialise.write_secret_files``.

Neighbours: ``runtime.linux.syscalls``; ``secrets.materialise`` writes into it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.linux import syscalls

DEFAULT_SIZE = 4 * 1024 * 1024
FLAGS = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC


def make_tmpfs(path: Path, size: int = DEFAULT_SIZE, *, mode: int = 0o755, uid: int = 0,
               gid: int = 0) -> bool:
    """Mount a tmpfs at ``path`` (created if missing). Returns True when ``noswap`` was applied."""
    path.mkdir(parents=True, exist_ok=True)
    data = f"size={size},mode={mode:o},uid={uid},gid={gid}"
    try:
        syscalls.mount("tmpfs", str(path), "tmpfs", FLAGS, data + ",noswap")
        return True
    except RuntimeFailure as exc:
        if exc.errno != errno.EINVAL:      # EINVAL: a kernel before 6.4 without noswap
            raise
    syscalls.mount("tmpfs", str(path), "tmpfs", FLAGS, data)
    return False


def unmount(path: Path) -> None:
    """Unmount the tmpfs at ``path``; its pages are freed at once. Not mounted is not an error."""
    try:
        syscalls.umount2(str(path))
    except RuntimeFailure as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise


def is_mountpoint(path: Path) -> bool:
    return os.path.ismount(path)
