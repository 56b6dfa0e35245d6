"""Builds (once) and locates the C programs: ``orch-supervise``, ``orch-spare`` and ``orch-init``.

A Python monitor that stays resident costs each container a few MB of unique memory (20 MB once the fork
server it was forked from is gone); ``monitor.run`` therefore execs this ~100 kB program after set-up.
It is compiled from ``supervise.c`` on first use into ``<state_dir>/.bin/``, named by a hash of the
source, so an upgrade builds a new binary and running containers keep the one they were started with.
Without a C compiler ``build`` returns "" and the monitor keeps supervising in Python (same files, same
format). Called by ``native.LinuxRuntime`` at construction, outside any container. With a restart
policy the same binary also waits out the backoff and execs the Python ``restarter`` (``supervise.c``).
``orch-spare`` (``sparemon.c``) and ``orch-init`` (``init.c``) are built the same way: a warm spare's
monitor and container init (``cspare``, ``initplan``); without them the spares are Python ones.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from orchestrator.errors import RuntimeFailure

SOURCE = Path(__file__).with_name("supervise.c")
INIT_SOURCE = Path(__file__).with_name("init.c")      # orch-init: a warm spare's container init
SPARE_SOURCE = Path(__file__).with_name("sparemon.c")  # orch-spare: a warm spare's monitor


def build(bin_dir: Path, source_path: Path = SOURCE, name: str = "orch-supervise") -> str:
    """Path of the program compiled from ``source_path`` (the supervisor by default), building it if
    needed; "" without a compiler."""
    source = source_path.read_bytes()
    target = bin_dir / f"{name}-{hashlib.sha256(source).hexdigest()[:16]}"
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
                               "-Wl,-z,relro,-z,now", "-o", str(tmp), str(source_path)],
                              capture_output=True, text=True, check=False)
    except OSError as exc:
        raise RuntimeFailure(f"cannot run the C compiler: {exc}", op="build", path=cc,
                             errno=exc.errno or 0) from exc
    if proc.returncode != 0:
        raise RuntimeFailure(f"building {name} failed: {proc.stderr.strip()[:500]}", op="build",
                             path=str(source_path))
    os.replace(tmp, target)          # atomic: a concurrent builder at worst replaces it with the same
    return str(target)
