"""Container lifecycle: the phase we record, the status we observe, and the allowed transitions.

``Phase`` is what the inventory says we did last (written by ``reconcile.execute`` around each runtime
call); ``Status`` is what a pass concludes from the phase AND the runtime's answer, re-read every pass:
a record whose process died, or whose container vanished, is ``EXITED`` or ``MISSING`` whatever the
phase claims. ``derive_status`` is that rule, ``check_transition`` guards the executor's phase writes.
Pure; no I/O.
"""

from __future__ import annotations

import enum

from orchestrator.errors import ReconcileError
from orchestrator.runtime.base import ContainerState
from orchestrator.runtime.base import Status as RuntimeStatus


class Phase(enum.StrEnum):
    CREATING = "creating"      # recorded; runtime.create and network set-up may or may not have happened
    CREATED = "created"        # runtime.create returned and the container's network is set up
    RUNNING = "running"        # runtime.start returned
    DELETING = "deleting"      # runtime.delete begun


class Status(enum.StrEnum):
    PENDING = "pending"        # our create sequence never finished (interrupted): not trustworthy
    CREATED = "created"        # made, never started
    RUNNING = "running"
    EXITED = "exited"          # its process ended (exit code, signal, OOM in the runtime state)
    MISSING = "missing"        # we recorded it running but the runtime no longer has it (drift)
    DELETING = "deleting"      # a delete was interrupted
    UNKNOWN = "unknown"        # the runtime cannot verify its process


# phase -> phases it may move to
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.CREATING: frozenset({Phase.CREATED, Phase.DELETING}),
    Phase.CREATED: frozenset({Phase.RUNNING, Phase.DELETING}),
    Phase.RUNNING: frozenset({Phase.DELETING}),
    Phase.DELETING: frozenset({Phase.DELETING}),
}


def check_transition(container: str, old: str, new: Phase) -> None:
    if new not in TRANSITIONS.get(Phase(old), frozenset()):
        raise ReconcileError(f"container {container}: cannot go from {old} to {new}")


def derive_status(phase: str, state: ContainerState | None) -> Status:
    """The observed status of one inventory record, given the runtime's current state (or None)."""
    if phase == Phase.DELETING:
        return Status.DELETING
    if phase == Phase.CREATING:
        # cut short somewhere between the record and the end of set-up (bundle, create, network):
        # whatever the runtime holds is half-made, so it is replaced, never started
        return Status.PENDING
    if state is None:
        return Status.MISSING
    if state.status == RuntimeStatus.RUNNING:
        return Status.RUNNING
    if state.status in (RuntimeStatus.CREATED, RuntimeStatus.CREATING):
        # runtime.create finished (or was cut short) but nobody started it
        return Status.CREATED
    if state.status == RuntimeStatus.STOPPED:
        return Status.EXITED
    return Status.UNKNOWN


def describe_exit(state: ContainerState | None) -> str:
    """``exited 137 (OOMKilled)``, ``killed by signal 9``, ``exited 0``."""
    if state is None:
        return "gone from the runtime"
    if state.oom_killed:
        return f"exited {state.exit_code if state.exit_code is not None else '?'} (OOMKilled)"
    if state.exit_signal:
        return f"killed by signal {state.exit_signal}"
    return f"exited {state.exit_code if state.exit_code is not None else '?'}"
