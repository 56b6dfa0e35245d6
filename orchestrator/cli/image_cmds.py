"""``orchestrator image import|ls|inspect|rm``: the CLI face of ``orchestrator.images.store.ImageStore``.

The store lives in ``ctx.settings.images_dir``. In-use contract for ``image rm``: a container that uses
an image has a file ``<containers_dir>/<container id>/image`` whose content (whitespace stripped) is the
image id (``sha256:<hex>``, the config digest). The reconciler writes it when it creates the container and
it goes away with the container's state dir; ``image rm`` refuses to delete an image named by any such
file. Errors are ImageError from the store; ``orchestrator.cli`` turns them into exit codes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.cli.context import Context
from orchestrator.images.store import ImageStore

_PROGRESS_MIN_BYTES = 16 << 20          # smaller archives import too fast for a progress line to help


def register(sub: Any) -> None:
    p = sub.add_parser("image", help="import, list, inspect and remove images")
    verbs = p.add_subparsers(dest="image_verb", metavar="SUBVERB", required=True)
    imp = verbs.add_parser("import", help="import an OCI layout (dir or tar) or a docker save tar")
    imp.add_argument("file", type=Path)
    imp.add_argument("--name", default=None, help="name:tag to give the image (default: from the archive)")
    imp.set_defaults(func=cmd_import)
    verbs.add_parser("ls", help="list images").set_defaults(func=cmd_ls)
    ins = verbs.add_parser("inspect", help="show one image (name:tag or id prefix)")
    ins.add_argument("ref")
    ins.set_defaults(func=cmd_inspect)
    rm = verbs.add_parser("rm", help="remove an image (refused while a container uses it)")
    rm.add_argument("ref")
    rm.set_defaults(func=cmd_rm)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1000
    return f"{n}B"


def _progress(path: Path) -> Any:
    if not sys.stderr.isatty():
        return None
    last, finished = [0.0], [False]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if total < _PROGRESS_MIN_BYTES or finished[0] or (now - last[0] < 0.2 and done < total):
            return
        last[0], finished[0] = now, done >= total
        pct = 100 * done // max(total, 1)
        sys.stderr.write(f"\rimporting {path.name}: {pct:3d}% ({_human(done)} / {_human(total)})")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return show


def cmd_import(args: argparse.Namespace, ctx: Context) -> int:
    store = ImageStore(ctx.settings.images_dir)
    image = store.import_archive(args.file, args.name, progress=_progress(args.file))
    ctx.emit(image.to_dict(), text=f"imported {', '.join(image.names) or image.short_id} "
                                   f"({image.short_id}, {len(image.layers)} layers, {_human(image.size)})")
    return 0


def cmd_ls(args: argparse.Namespace, ctx: Context) -> int:
    images = ImageStore(ctx.settings.images_dir).list()
    rows = []
    for im in sorted(images, key=lambda i: (i.names[:1], i.id)):
        for name in im.names or ("<none>:<none>",):
            repo, tag = name.rsplit(":", 1)
            rows.append([repo, tag, im.short_id, len(im.layers), _human(im.size), im.created])
    ctx.emit([im.to_dict() for im in images],
             headers=("repository", "tag", "id", "layers", "size", "created"), rows=rows)
    return 0


def cmd_inspect(args: argparse.Namespace, ctx: Context) -> int:
    image = ImageStore(ctx.settings.images_dir).get(args.ref)
    data = image.to_dict()
    if ctx.output == "table":
        c = image.config
        text = "\n".join([f"id:          {image.id}", f"names:       {', '.join(image.names) or '<none>'}",
                          f"created:     {image.created}", f"platform:    {image.os}/{image.architecture}",
                          f"size:        {_human(image.size)}", f"layers:      {len(image.layers)}",
                          f"entrypoint:  {list(c.entrypoint)}", f"cmd:         {list(c.cmd)}",
                          f"env:         {list(c.env)}", f"workdir:     {c.working_dir}",
                          f"user:        {c.user}"])
        ctx.emit(data, text=text)
    else:
        ctx.emit(data)
    return 0


def images_in_use(containers_dir: Path) -> set[str]:
    """Image ids named by ``<containers_dir>/*/image`` files (see the module docstring)."""
    used: set[str] = set()
    if containers_dir.is_dir():
        for f in containers_dir.glob("*/image"):
            try:
                used.add(f.read_text().strip())
            except OSError:
                continue                      # container deleted while we looked: not in use
    return used


def cmd_rm(args: argparse.Namespace, ctx: Context) -> int:
    store = ImageStore(ctx.settings.images_dir)
    removed = store.remove(args.ref, images_in_use(ctx.settings.containers_dir))
    lines = [f"untagged {n}" for n in removed.untagged]
    if removed.deleted:
        lines.append(f"deleted {removed.deleted} ({removed.layers} layers freed)")
    ctx.emit({"untagged": list(removed.untagged), "deleted": removed.deleted, "layers": removed.layers},
             text="\n".join(lines))
    return 0
