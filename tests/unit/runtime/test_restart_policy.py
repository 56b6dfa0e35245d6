"""The restart policy as pure functions: parsing annotations, deciding, and what the C supervisor gets."""

from __future__ import annotations

import signal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.linux import restart
from orchestrator.runtime.linux.restart import Exit, RestartPolicy, should_restart

FAIL, OK, OOM = Exit(1), Exit(0), Exit(0, oom_killed=True)


def test_defaults_and_parsing() -> None:
    assert restart.from_annotations({}) == RestartPolicy("never")
    parsed = restart.from_annotations({restart.POLICY: "on-failure", restart.MAX_RETRIES: "5",
                                       restart.BACKOFF_INITIAL: "0.05", restart.BACKOFF_MAX: "2",
                                       restart.RESET_AFTER: "30"})
    assert parsed == RestartPolicy("on-failure", 5, 0.05, 2.0, 30.0)
    slow = restart.from_annotations({restart.POLICY: "always", restart.BACKOFF_INITIAL: "500"})
    assert slow.backoff_max_s == 500


@pytest.mark.parametrize("annotations", [
    {restart.POLICY: "sometimes"}, {restart.MAX_RETRIES: "-1"}, {restart.MAX_RETRIES: "two"},
    {restart.BACKOFF_INITIAL: "nan"}, {restart.BACKOFF_INITIAL: "-1"}, {restart.RESET_AFTER: "inf"},
    {restart.BACKOFF_INITIAL: "2", restart.BACKOFF_MAX: "1"}])
def test_bad_annotations_name_the_key(annotations: dict[str, str]) -> None:
    with pytest.raises(RuntimeFailure, match=r"org\.orchestrator\.restart\."):
        restart.from_annotations(annotations)


def test_never_on_failure_always() -> None:
    never, on_failure, always = (RestartPolicy(p) for p in ("never", "on-failure", "always"))
    assert should_restart(never, FAIL, 0, 1.0) is None
    assert should_restart(on_failure, OK, 0, 1.0) is None
    assert should_restart(on_failure, FAIL, 0, 1.0) == 0.1
    assert should_restart(on_failure, OOM, 0, 1.0) == 0.1          # an OOM kill is a failure
    assert should_restart(on_failure, Exit(137), 0, 1.0) == 0.1     # so is a signal
    assert should_restart(always, OK, 0, 1.0) == 0.1


def test_backoff_doubles_up_to_the_cap_and_max_retries_stops() -> None:
    policy = RestartPolicy("on-failure", max_retries=5, backoff_initial_s=0.05, backoff_max_s=0.3)
    delays = [should_restart(policy, FAIL, n, 0.0) for n in range(6)]
    assert delays == [0.05, 0.1, 0.2, 0.3, 0.3, None]
    assert should_restart(RestartPolicy("on-failure", max_retries=0), FAIL, 0, 0.0) is None


def test_a_stable_run_starts_a_new_series() -> None:
    policy = RestartPolicy("on-failure", max_retries=2, backoff_initial_s=1, backoff_max_s=100,
                           reset_after_s=60)
    assert should_restart(policy, FAIL, 2, 59.9) is None            # retries used up, run too short
    assert should_restart(policy, FAIL, 2, 60.0) == 1               # ran long enough: back to the start
    assert restart.series_after(policy, 2, 60.0) == 1
    assert restart.series_after(policy, 1, 5.0) == 2


def test_huge_series_does_not_overflow() -> None:
    assert should_restart(RestartPolicy("always", backoff_max_s=300), OK, 10_000, 0.0) == 300


def test_supervisor_args_are_the_policy_decisions() -> None:
    policy = RestartPolicy("on-failure", max_retries=2, backoff_initial_s=0.05, backoff_max_s=1,
                           reset_after_s=10)
    assert restart.supervisor_args(policy, 0) == ["50", "-1", "50", "-1", "10000"]
    assert restart.supervisor_args(policy, 1) == ["100", "-1", "50", "-1", "10000"]
    assert restart.supervisor_args(policy, 2) == ["-1", "-1", "50", "-1", "10000"]
    assert restart.supervisor_args(RestartPolicy("always"), 3) == ["800", "800", "100", "100", "600000"]


@given(st.sampled_from(restart.POLICIES), st.integers(0, 50), st.floats(0, 1e4), st.booleans(),
       st.integers(0, 10), st.floats(0.001, 10), st.floats(0, 1e4))
def test_delay_is_bounded_and_agrees_with_the_c_table(name: str, series: int, uptime: float, failed: bool,
                                                      retries: int, initial: float, reset: float) -> None:
    policy = RestartPolicy(name, retries, initial, max(initial, 5.0), reset)
    assume(abs(uptime - reset) >= 0.001)     # the C side measures whole milliseconds
    ended = FAIL if failed else OK
    delay = should_restart(policy, ended, series, uptime)
    if delay is not None:
        assert policy.backoff_initial_s <= delay <= policy.backoff_max_s
    # what supervise.c picks: index 0/1 by failure, +2 once the run was stable
    table = restart.supervisor_args(policy, series)
    picked = int(table[(0 if failed else 1) + (2 if uptime * 1000 >= int(table[4]) else 0)])
    assert picked == (-1 if delay is None else round(delay * 1000))


def test_which_signals_stop_restarts() -> None:
    assert restart.stops_restarts(signal.SIGTERM) and restart.stops_restarts(signal.SIGKILL)
    assert not restart.stops_restarts(signal.SIGHUP) and not restart.stops_restarts(signal.SIGUSR1)
