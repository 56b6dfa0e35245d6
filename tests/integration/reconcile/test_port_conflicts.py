"""Host ports held by something else are reported at plan time, before anything is created."""

from __future__ import annotations

import shutil
import socket
import uuid
from contextlib import closing
from pathlib import Path

import pytest

from orchestrator import manifest
from orchestrator.errors import ReconcileError
from orchestrator.manifest.model import StackSet
from orchestrator.reconcile.session import Session
from orchestrator.settings import Settings

pytestmark = pytest.mark.root


def test_a_port_in_use_stops_the_apply_before_anything_is_made(state_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    for d in ("bin", "etc", "proc", "dev", "sys", "tmp"):
        (root / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin/busybox")
    (root / "bin/httpd").symlink_to("busybox")
    with closing(socket.socket()) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        name = f"pc{uuid.uuid4().hex[:6]}"
        path = tmp_path / "stack.yaml"
        path.write_text(f"""apiVersion: orchestrator/v1
kind: Stack
metadata: {{name: {name}}}
spec:
  services:
    web:
      rootfs: ./rootfs
      command: ["httpd", "-f", "-p", "8080"]
      ports: ["127.0.0.1:{port}:8080/tcp"]
""")
        s = Session(Settings.from_env(str(state_root)))
        try:
            for dry_run in (True, False):
                with pytest.raises(ReconcileError, match=rf"{name}/web-1: port 127.0.0.1:{port}:8080/tcp"):
                    s.controller.reconcile_once(manifest.load([path]), dry_run=dry_run)
            assert list(s.inventory.containers(name)) == []
            assert s.runtime.list() == []
        finally:
            s.controller.reconcile_once(StackSet(), prune=False, remove=frozenset({name}))
            s.close()
