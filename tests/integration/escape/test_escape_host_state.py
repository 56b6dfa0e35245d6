"""What a container leaves on the host: its rootfs writes land in its overlay upper dir, a host
directory. With the default capabilities (CHOWN, FSETID, FOWNER, MKNOD) a container can put a
setuid-root executable or a world-writable node of the host's disk there, as under Docker; what keeps
that from being a host privilege escalation is that no host user but root can reach the directory
(Docker: /var/lib/docker and overlay2 are 0710/0700). The state is laid out by the reconciler's own
``BundleBuilder.prepare`` under a fresh state root, exactly as ``orchestrator apply`` would.
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest
from escapekit import Escape

from orchestrator.reconcile.bundle import BundleBuilder
from orchestrator.settings import Settings

pytestmark = pytest.mark.root


def test_container_upper_dir_is_not_reachable_by_other_host_users(esc: Escape, tmp_path: Path) -> None:
    """Fixed: the state root is 0711, ``containers/`` and each bundle 0700 (Docker: 0710/0700)."""
    settings = Settings.from_env(str(tmp_path / "fresh-state-root"))
    dev = os.stat("/").st_dev
    script = ("cp /bin/busybox /tmp/suidsh && chmod 4755 /tmp/suidsh && "
              f"mknod -m 666 /tmp/hostdisk b {os.major(dev)} {os.minor(dev)}")
    cid = f"esc-{uuid.uuid4().hex[:10]}"
    bundle, mounts = BundleBuilder(settings).prepare(esc.desired(esc.service(["sh", "-c", script])), cid)
    esc.containers.append((esc.runtime, cid))
    esc.runtime.create(cid, bundle, mounts)
    esc.runtime.start(cid)
    assert esc.runtime.wait(cid, timeout=20).exit_code == 0
    upper = bundle / "upper"
    suid, node = upper / "tmp" / "suidsh", upper / "tmp" / "hostdisk"
    try:
        # what the container could plant on the host (allowed, as under Docker)
        assert suid.stat().st_uid == 0 and suid.stat().st_mode & stat.S_ISUID
        assert stat.S_ISBLK(node.stat().st_mode) and node.stat().st_mode & 0o006 == 0o006
        # ...and who can reach it: at least one directory the orchestrator made must shut others out
        chain = [settings.root, settings.containers_dir, bundle, upper]
        modes = {str(p): oct(p.stat().st_mode & 0o777) for p in chain}
        assert any(not p.stat().st_mode & 0o001 for p in chain), f"world-searchable all the way: {modes}"
    finally:
        node.unlink(missing_ok=True)
        suid.unlink(missing_ok=True)
