"""Restart policies, as pure functions: parse the bundle's annotations, decide whether (and when) to restart.

The reconciler (``runtime.oci``) puts the policy in the OCI config's annotations; the container ``monitor``
reads it at create and again at each restart, and hands the C supervisor (``supervise.c``) the decisions
precomputed by :func:`supervisor_args`, so the policy is written once, here, and never again in C.

Annotations (all optional; no policy annotation means ``never``)::

    org.orchestrator.restart.policy         never | on-failure | always
    org.orchestrator.restart.max-retries    on-failure only: restarts allowed in a row (absent = no limit)
    org.orchestrator.restart.backoff-initial  seconds before the first restart (default 0.1)
    org.orchestrator.restart.backoff-max      cap of the doubling delay (default 300)
    org.orchestrator.restart.reset-after      seconds of running after which an exit starts a new series:
                                              the backoff and the max-retries count start again (default 600)

A failure is any exit other than code 0 (a signal, including the OOM killer's SIGKILL, is a failure), or
an OOM kill in the container's cgroup during that run.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.errors import RuntimeFailure

PREFIX = "org.orchestrator.restart."
POLICY, MAX_RETRIES, BACKOFF_INITIAL, BACKOFF_MAX, RESET_AFTER = (
    PREFIX + "policy", PREFIX + "max-retries", PREFIX + "backoff-initial", PREFIX + "backoff-max",
    PREFIX + "reset-after")
POLICIES = ("never", "on-failure", "always")

# annotations ``LinuxRuntime.state`` adds (values are strings, as OCI annotations are)
RESTARTS = "org.orchestrator.restarts"              # restarts done since create (never reset)
LAST_RESTART = "org.orchestrator.last-restart"      # unix time of the last restart ("" if none)
RESTARTING = "org.orchestrator.restarting"          # "true" while stopped with a restart pending
RESTARTABLE = "org.orchestrator.restartable"        # "false": made without a policy (none can be added)

# signals ``kill`` sends without stopping restarts: reloads and job control, not requests to stop
_NOT_A_STOP = frozenset({0, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT,
                         signal.SIGSTOP, signal.SIGTSTP})


def stops_restarts(sig: int) -> bool:
    """Whether ``kill(sig)`` by the user means "stop": then no restart follows the exit it causes."""
    return int(sig) not in _NOT_A_STOP


@dataclass(frozen=True)
class RestartPolicy:
    policy: str = "never"
    max_retries: int | None = None
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 300.0
    reset_after_s: float = 600.0

    @property
    def enabled(self) -> bool:
        return self.policy != "never"


@dataclass(frozen=True)
class Exit:
    """How one run of the container ended."""

    exit_code: int
    oom_killed: bool = False

    @property
    def failed(self) -> bool:
        return self.exit_code != 0 or self.oom_killed


def _number(annotations: Mapping[str, str], key: str, default: float) -> float:
    raw = annotations.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise RuntimeFailure(f"annotation {key} must be a non-negative number, not {raw!r}", op="create",
                             path=key)
    return value


def from_annotations(annotations: Mapping[str, str]) -> RestartPolicy:
    """The policy of a bundle; a bad value is an error naming the annotation (raised at create)."""
    policy = annotations.get(POLICY, "never")
    if policy not in POLICIES:
        raise RuntimeFailure(f"annotation {POLICY} must be one of {', '.join(POLICIES)}, not {policy!r}",
                             op="create", path=POLICY)
    retries = annotations.get(MAX_RETRIES)
    max_retries = None
    if retries is not None:
        if not retries.isdigit():
            raise RuntimeFailure(f"annotation {MAX_RETRIES} must be a whole number, not {retries!r}",
                                 op="create", path=MAX_RETRIES)
        max_retries = int(retries)
    initial = _number(annotations, BACKOFF_INITIAL, 0.1)
    cap = _number(annotations, BACKOFF_MAX, max(300.0, initial))
    if cap < initial:
        raise RuntimeFailure(f"annotation {BACKOFF_MAX} ({cap}) is below {BACKOFF_INITIAL} ({initial})",
                             op="create", path=BACKOFF_MAX)
    return RestartPolicy(policy, max_retries, initial, cap, _number(annotations, RESET_AFTER, 600.0))


def should_restart(policy: RestartPolicy, ended: Exit, restarts: int, uptime_s: float) -> float | None:
    """Seconds to wait before restarting, or None to stay stopped.

    ``restarts`` is the number of restarts in the current series (since create, or since the last run
    that lasted ``reset_after_s``); a run that long starts a new series, so its exit is treated as the
    first. The delay doubles with each restart of a series, from ``backoff_initial_s`` up to the cap."""
    if policy.policy == "never" or (policy.policy == "on-failure" and not ended.failed):
        return None
    if uptime_s >= policy.reset_after_s:
        restarts = 0
    if policy.policy == "on-failure" and policy.max_retries is not None and restarts >= policy.max_retries:
        return None
    # 2**restarts overflows a float long before a series that long; the cap is reached by then anyway
    return min(policy.backoff_initial_s * 2.0 ** min(restarts, 64), policy.backoff_max_s)


def series_after(policy: RestartPolicy, restarts: int, uptime_s: float) -> int:
    """The series count once the restart decided with these arguments has been done."""
    return 1 if uptime_s >= policy.reset_after_s else restarts + 1


def supervisor_args(policy: RestartPolicy, restarts: int) -> list[str]:
    """The four delays (ms, -1 = stay stopped) the C supervisor picks from after an exit, plus the
    stable period: ``FAIL_MS OK_MS FAIL_MS_AFTER_RESET OK_MS_AFTER_RESET RESET_AFTER_MS``. The C side only
    measures the uptime and looks at the exit status, so the policy lives in this file alone."""
    def ms(delay: float | None) -> str:
        return "-1" if delay is None else str(round(delay * 1000))
    reset = policy.reset_after_s
    return [ms(should_restart(policy, Exit(1), restarts, 0.0)),
            ms(should_restart(policy, Exit(0), restarts, 0.0)),
            ms(should_restart(policy, Exit(1), restarts, reset)),
            ms(should_restart(policy, Exit(0), restarts, reset)),
            str(min(round(reset * 1000), 2**62))]
