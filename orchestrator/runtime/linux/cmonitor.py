"""Builds (once) and locates the C programs: ``orch-supervise``, ``orch-spare`` and ``orch-init``.

A Python monitor that stays resident costs each container a few MB of unique memory (20 MB once the fork
server it was forked from is gone); ``monitor.run`` therefore execs this ~100 kB program after set-up.
It is compiled from ``supervise.c`` on first use into ``<state_dir>/.bin/``, named by a hash of the
source, so an upgrade builds a new binary and running containers keep the one they were started with.
Without a C compiler ``build`` returns "" and the monitor keeps supervising in Python (same files, same
format). Called by ``native.LinuxRuntime`` at construction, outside any container. With a restart
policy the same binary also waits out the backoff and execs the Python ``restarter`` (``supervise.c``).
``orch-spare`` (``sparemon.c``) and ``orch-init`` (``init.c``, ``init_fs.c``, ``init_proc.c``) are built
the same way: a warm spare's monitor and container init (``cspare``, ``initplan``); without them the
spares are Python ones. A program's hash covers its sources and every header beside them (``init.h``,
``orchc.h``), so a change to any of them builds a new binary.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from orchestrator.errors import RuntimeFailure

_HERE = Path(__file__).parent
SOURCE = (_HERE / "supervise.c",)
INIT_SOURCE = tuple(_HERE / f for f in ("init.c", "init_fs.c", "init_proc.c"))  # orch-init: a spare's init
SPARE_SOURCE = (_HERE / "sparemon.c",)                                          # orch-spare: its monitor
PROGRAMS = {"orch-supervise": SOURCE, "orch-spare": SPARE_SOURCE, "orch-init": INIT_SOURCE}  # name -> sources


def _digest(sources: Sequence[Path]) -> str:
    """Of the sources and every header in their directories: what the program is built from."""
    headers = sorted({h for s in sources for h in s.parent.glob("*.h")})
    sha = hashlib.sha256()
    for path in (*sources, *headers):
        data = path.read_bytes()
        sha.update(f"{path.name}\0{len(data)}\0".encode())
        sha.update(data)
    return sha.hexdigest()[:16]


def build(bin_dir: Path, sources: Sequence[Path] = SOURCE, name: str = "orch-supervise") -> str:
    """Path of the program compiled from ``sources`` (the supervisor by default), building it if
    needed; "" without a compiler."""
    target = bin_dir / f"{name}-{_digest(sources)}"
    if target.exists():
        return str(target)
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return ""
    bin_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        # hardened: these run as root (the init with a container's input)
        proc = subprocess.run([cc, "-O2", "-s", "-Wall", "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2",
                               "-Wl,-z,relro,-z,now", "-o", str(tmp), *map(str, sources)],
                              capture_output=True, text=True, check=False)
    except OSError as exc:
        raise RuntimeFailure(f"cannot run the C compiler: {exc}", op="build", path=cc,
                             errno=exc.errno or 0) from exc
    if proc.returncode != 0:
        raise RuntimeFailure(f"building {name} failed: {proc.stderr.strip()[:500]}", op="build",
                             path=str(sources[0]))
    os.replace(tmp, target)          # atomic: a concurrent builder at worst replaces it with the same
    return str(target)
