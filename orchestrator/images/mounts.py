"""Root filesystem mounts as data: the overlay that stacks an image's layers under a container's upper dir.

``orchestrator.images.store.ImageStore.rootfs_mounts`` calls ``overlay_mount`` with the short layer links
(``l/<id>``, Docker overlay2 style) and the store root as ``Mount.cwd``; the runtime chdirs there before
``mount(2)`` so the relative lowerdirs resolve. That keeps the option string (one page, 4096 bytes incl.
the NUL, is all the kernel reads) short enough for well over 100 layers. Pure: nothing here mounts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orchestrator.errors import ImageError
from orchestrator.runtime.base import Mount

MOUNT_DATA_MAX = 4095          # PAGE_SIZE minus the terminating NUL


def _check_path(p: str, what: str) -> str:
    # overlay splits options on ',' and lowerdir on ':'; we do not escape, we refuse
    if any(c in p for c in ",:\n") or not p:
        raise ImageError(f"{what} path {p!r} is empty or contains ',' or ':' (unsupported by overlay)")
    return p


def overlay_mount(lowers: Sequence[str], upper: Path | None, work: Path | None, *, cwd: str = "",
                  readonly: bool = False) -> Mount:
    """An overlay of ``lowers`` (topmost first) with optional upper/work; checked against the page limit."""
    if not lowers:
        raise ImageError("an overlay needs at least one lower layer")
    if upper is None and len(lowers) < 2:
        raise ImageError("an overlay without an upper dir needs at least two lower layers")
    opts = ["lowerdir=" + ":".join(_check_path(lo, "lower") for lo in lowers)]
    if upper is not None and work is not None:
        opts += [f"upperdir={_check_path(str(upper), 'upper')}", f"workdir={_check_path(str(work), 'work')}"]
    if readonly:
        opts.append("ro")
    data = ",".join(o for o in opts if o != "ro")
    if len(data) > MOUNT_DATA_MAX:
        raise ImageError(f"overlay mount data is {len(data)} bytes for {len(lowers)} layers; the kernel "
                         f"limit is {MOUNT_DATA_MAX} (shorten the upper/work paths or flatten the image)")
    return Mount(type="overlay", source="overlay", target="", options=tuple(opts), cwd=cwd)


def dir_rootfs_mounts(rootfs_dir: Path, upper: Path, work: Path, *, readonly: bool = False) -> list[Mount]:
    """``rootfs: ./dir``: the directory as the single read-only lower of an overlay, so the container's
    writes still land in its own upper dir and the user's directory is never modified."""
    if not rootfs_dir.is_dir():
        raise ImageError(f"rootfs directory {rootfs_dir} does not exist or is not a directory")
    return [overlay_mount([str(rootfs_dir.absolute())], upper, work, readonly=readonly)]
