"""A busybox root filesystem for real-kernel tests: static busybox, every applet linked, passwd/group.

Shared by the runtime and escape suites (importable from any test: pytest puts ``tests/`` on sys.path
for the top-level conftest).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc", "tmp", "root")


def build_busybox_rootfs(dest: Path, extra_dirs: Sequence[str] = ()) -> Path:
    for d in (*DIRS, *extra_dirs):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = dest / applet
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink("/bin/busybox", link)
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (dest / "tmp").chmod(0o1777)
    return dest
