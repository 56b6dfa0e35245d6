"""Shared helpers for the reconcile unit tests: model builders, a recording builder, a controller on the
fake runtime with a real (temp) SQLite store."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.manifest.model import Dependency, Healthcheck, Resources, Service, Stack, StackSet, Volume
from orchestrator.reconcile.controller import Controller
from orchestrator.reconcile.execute import Options
from orchestrator.runtime.base import Mount
from orchestrator.runtime.fake import FakeRuntime
from orchestrator.state.desired import DesiredContainer
from orchestrator.store import open_store
from orchestrator.store.inventory import Inventory


def svc(name: str, image: str = "busybox:1", **kw: Any) -> Service:
    return Service(name=name, image=image, command=("sleep", "1000"), **kw)


def stack(name: str, *services: Service, volumes: Sequence[str] = ()) -> Stack:
    return Stack(name=name, services=tuple(sorted(services, key=lambda s: s.name)),
                 volumes=tuple(Volume(v) for v in volumes))


def sset(*stacks: Stack) -> StackSet:
    return StackSet(stacks=tuple(sorted(stacks, key=lambda s: s.name)))


def mem(service: Service, memory: int) -> Service:
    return replace(service, resources=Resources(memory=memory))


def dep(name: str, condition: str = "started") -> Dependency:
    return Dependency(name, condition)  # type: ignore[arg-type]


def exec_hc(**kw: Any) -> Healthcheck:
    return Healthcheck(kind="exec", exec=("true",), interval_s=0.01, timeout_s=1.0, **kw)


class DirBuilder:
    """Writes nothing but a directory per container: enough for the fake runtime."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prepared: list[str] = []
        self.cleaned: list[str] = []
        self.images: dict[str, str] = {}

    def prepare(self, dc: DesiredContainer, cid: str, netns_path: str = "") -> tuple[Path, Sequence[Mount]]:
        self.prepared.append(cid)
        self.images[cid] = dc.image
        path = self.root / "containers" / cid
        path.mkdir(parents=True, exist_ok=True)
        return path, ()

    def resources(self, dc: DesiredContainer) -> Mapping[str, Any]:
        return {"memory": {"limit": dc.spec.resources.memory}}

    def cleanup(self, cid: str) -> None:
        self.cleaned.append(cid)
        shutil.rmtree(self.root / "containers" / cid, ignore_errors=True)

    def volume_path(self, stack: str, name: str) -> Path:
        return self.root / "volumes" / f"{stack}_{name}"

    def make_volume(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)

    def remove_volume(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


class NoNetwork:
    """The kernel-facing network wiring is out of scope here (integration tests cover it)."""

    def __init__(self, *args: object) -> None:
        pass

    def netns_for(self, dc: object) -> str:
        return ""

    def attach(self, dc: object, cid: str, pid: int) -> None:
        pass

    def detach(self, cid: str) -> None:
        pass

    def forget_stack(self, stack: str) -> None:
        pass

    def close(self) -> None:
        pass


IMAGES = {"busybox:1": "sha256:" + "1" * 64, "busybox:2": "sha256:" + "2" * 64}


class World:
    """A fake runtime + real store + controller, in ``root``."""

    def __init__(self, root: Path, runtime: FakeRuntime | None = None) -> None:
        self.root = root
        self.rt = runtime or FakeRuntime()
        self.inv: Inventory = open_store(root / "state.db")
        self.builder = DirBuilder(root)
        self.ctl = Controller(self.rt, self.inv, self.builder, resolve_image=lambda ref: IMAGES[ref])

    def apply(self, ss: StackSet, **kw: Any) -> Any:
        kw.setdefault("source", "test")
        opts = kw.pop("options", Options(timeout_s=5.0, settle_s=0.0))
        return self.ctl.reconcile_once(ss, options=opts, **kw)

    def plan(self, ss: StackSet, **kw: Any) -> Any:
        kw.setdefault("source", "test")
        return self.ctl.plan(ss, **kw)[0]

    def running(self) -> dict[str, str]:
        """slot -> container id of every inventory record whose runtime container runs."""
        states = {s.id: s for s in self.rt.list()}
        return {r.slot: r.id for r in self.inv.containers()
                if r.id in states and states[r.id].status == "running"}
