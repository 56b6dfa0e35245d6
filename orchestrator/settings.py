"""Frozen process-wide settings: where state lives and how the runtime is reached.

Built once by the CLI from flags and environment (``ORCHESTRATOR_ROOT`` lets tests isolate every run in
a temp dir) and passed down explicitly; nothing below the CLI reads the environment for these.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path("/var/lib/orchestrator")
ROOT_ENV = "ORCHESTRATOR_ROOT"


@dataclass(frozen=True)
class Settings:
    root: Path = DEFAULT_ROOT
    runtime: str = "native"                 # "native" | "runc"
    cgroup_root: Path = Path("/sys/fs/cgroup")
    cgroup_parent: str = ""                 # "" = under the orchestrator's own cgroup + "/orchestrator"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def containers_dir(self) -> Path:
        return self.root / "containers"

    @property
    def volumes_dir(self) -> Path:
        return self.root / "volumes"

    @property
    def db_path(self) -> Path:
        return self.root / "state.db"

    @staticmethod
    def from_env(root: str | None = None, runtime: str | None = None) -> Settings:
        chosen = root or os.environ.get(ROOT_ENV) or str(DEFAULT_ROOT)
        return Settings(root=Path(chosen).absolute(), runtime=runtime or "native")
