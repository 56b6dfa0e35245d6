"""state.lifecycle: the observed status of a record given the runtime's answer, and phase transitions."""

from __future__ import annotations

import pytest

from orchestrator.errors import ReconcileError
from orchestrator.runtime.base import ContainerState
from orchestrator.runtime.base import Status as RS
from orchestrator.state.lifecycle import Phase, Status, check_transition, derive_status, describe_exit


def st(status: RS, **kw: object) -> ContainerState:
    return ContainerState("c", status, "/b", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("phase", "state", "want"), [
    (Phase.CREATING, None, Status.PENDING),
    (Phase.CREATING, st(RS.CREATED), Status.PENDING),        # half-made: replaced, never started
    (Phase.CREATED, st(RS.CREATED), Status.CREATED),
    (Phase.RUNNING, st(RS.RUNNING), Status.RUNNING),
    (Phase.RUNNING, st(RS.STOPPED), Status.EXITED),
    (Phase.RUNNING, None, Status.MISSING),
    (Phase.RUNNING, st(RS.UNKNOWN), Status.UNKNOWN),
    (Phase.DELETING, st(RS.RUNNING), Status.DELETING),
])
def test_derive_status(phase: Phase, state: ContainerState | None, want: Status) -> None:
    assert derive_status(phase, state) is want


def test_transitions() -> None:
    check_transition("c", "creating", Phase.CREATED)
    check_transition("c", "running", Phase.DELETING)
    with pytest.raises(ReconcileError, match="container c: cannot go from running to created"):
        check_transition("c", "running", Phase.CREATED)


def test_describe_exit() -> None:
    assert describe_exit(None) == "gone from the runtime"
    assert describe_exit(st(RS.STOPPED, exit_code=137, oom_killed=True)) == "exited 137 (OOMKilled)"
    assert describe_exit(st(RS.STOPPED, exit_code=137, exit_signal=9)) == "killed by signal 9"
    assert describe_exit(st(RS.STOPPED, exit_code=0)) == "exited 0"
