"""The executor's seams and values: what it needs from the host (``Builder``, ``NetworkHook``), how it
is told to run (``Options``) and what it reports (``Failure``, ``Report``).

Neighbours: ``reconcile.execute`` uses them; ``reconcile.bundle`` and ``reconcile.network`` implement the
protocols for the native runtime; the unit tests implement them over temp directories.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.reconcile.actions import Action
from orchestrator.runtime.base import Mount
from orchestrator.state.desired import DesiredContainer


class Builder(Protocol):
    """Turns a desired container into what the runtime needs; owns bundle and volume directories."""

    def prepare(self, dc: DesiredContainer, cid: str, netns_path: str = "") -> tuple[Path, Sequence[Mount]]:
        ...
    def resources(self, dc: DesiredContainer) -> Mapping[str, Any]: ...
    def cleanup(self, cid: str) -> None: ...
    def volume_path(self, stack: str, name: str) -> Path: ...
    def make_volume(self, path: Path) -> None: ...
    def remove_volume(self, path: Path) -> None: ...


class NetworkHook(Protocol):
    """The network side of a container's life (``reconcile.network.NetworkWiring``)."""

    def netns_for(self, dc: DesiredContainer) -> str: ...
    def attach(self, dc: DesiredContainer, cid: str, pid: int) -> None: ...
    def detach(self, cid: str) -> None: ...
    def forget_stack(self, stack: str) -> None: ...


@dataclass
class Options:
    wait: bool = True
    timeout_s: float = 300.0
    workers: int = 8
    on_step: Callable[[int, str], None] | None = None
    progress: Callable[[str], None] | None = None
    settle_s: float = 0.25       # with wait: how long a new container must stay up to count as started


@dataclass
class Failure:
    stack: str
    service: str
    target: str
    message: str


@dataclass
class Report:
    done: list[Action] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    generations: dict[str, int] = field(default_factory=dict)
