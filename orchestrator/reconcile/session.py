"""Wiring for the CLI and the sources: settings -> runtime, store, builder, network, controller.

``Session(settings)`` opens the store at once (cheap) and the runtime, image store and network layer on
first use; ``close()`` stops what was started (the native runtime's fork server, the netlink socket).
Mutating callers take ``store.lock.ApplyLock`` themselves, so a watch loop can hold one session across
passes. In-place limit changes and the loop's limit readings use the runtime's ``update``/``stats``
when it has them (the native runtime does; runc does not).

Neighbours: ``cli.stack_cmds`` (every stack verb and ``apply_stackset`` for the sources).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from orchestrator.errors import ImageError, UsageError
from orchestrator.reconcile.bundle import BundleBuilder
from orchestrator.reconcile.controller import Controller
from orchestrator.reconcile.network import NetworkWiring
from orchestrator.runtime.base import Runtime
from orchestrator.settings import Settings
from orchestrator.store import open_store
from orchestrator.store.inventory import Inventory


def open_runtime(settings: Settings) -> Runtime:
    if settings.runtime == "native":
        from orchestrator.runtime.linux.native import LinuxRuntime
        return LinuxRuntime(settings.root / "runtime", settings.cgroup_root, settings.cgroup_parent)
    if settings.runtime == "runc":
        # Debian's runc over the same bundles; what our supervisor adds (restart policies, in-memory
        # config/secret files) is native-only, and a stack asking for files is refused at create
        from orchestrator.runtime.runc import RuncRuntime
        return RuncRuntime(settings.root / "runtime-runc")
    raise UsageError(f"runtime {settings.runtime!r} is not available (supported: native, runc)")


class Session:
    def __init__(self, settings: Settings, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.inventory: Inventory = open_store(settings.db_path)
        self._runtime = runtime
        self._owns_runtime = runtime is None
        self._builder: BundleBuilder | None = None
        self._controller: Controller | None = None
        self._network: NetworkWiring | None = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = open_runtime(self.settings)
        return self._runtime

    @property
    def builder(self) -> BundleBuilder:
        if self._builder is None:
            self._builder = BundleBuilder(self.settings)
        return self._builder

    def resolve_image(self, ref: str) -> str:
        try:
            return self.builder.image(ref).id
        except ImageError as exc:
            raise ImageError(f"{exc}; import it first with 'orchestrator image import'") from exc

    @property
    def controller(self) -> Controller:
        if self._controller is None:
            self._network = NetworkWiring(self.settings.db_path, self.runtime, self.inventory,
                                          self.settings.containers_dir)
            self._controller = Controller(self.runtime, self.inventory, self.builder,
                                          resolve_image=self.resolve_image, network=self._network,
                                          updater=self.updater(), env=dict(os.environ),
                                          limits=self._limits_reader(),
                                          # a test double of the wiring may have no upkeep
                                          upkeep=getattr(self._network, "upkeep", None))
        return self._controller

    def updater(self) -> Callable[[str, Mapping[str, Any]], None] | None:
        """In-place limit changes: the runtime's ``update``, if it has one."""
        return getattr(self.runtime, "update", None)

    def _limits_reader(self) -> Callable[[str], tuple[int | None, int | None]] | None:
        """(memory limit bytes, pids limit) as the kernel has them now, from the runtime's ``stats``."""
        stats = getattr(self.runtime, "stats", None)
        if stats is None:
            return None

        def limits(container_id: str) -> tuple[int | None, int | None]:
            st = stats(container_id)
            return st.memory_limit_bytes, st.pids_limit
        return limits

    def close(self) -> None:
        if self._network is not None:
            self._network.close()
        if self._builder is not None:
            self._builder.close()
        rt: Any = self._runtime
        if self._owns_runtime and rt is not None and hasattr(rt, "close"):
            rt.close()
        self._runtime = None
        self.inventory.store.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
