"""The values a plan is made of: ``Action`` (one thing to do, with its reason) and ``Plan`` (the ordered,
frozen list, printable as text and JSON).

``str(plan)`` is the dry run users read::

    + shop/api-2        create    scale: replicas 1 -> 2
    ~ shop/web-1        recreate  image: busybox:1 -> busybox:2
    ~ shop/db-1         update    resources.memory: 67108864 -> 134217728
    - shop/old-1        delete    removed from manifests

Neighbours: built by ``reconcile.diff`` (changes) and ``reconcile.plan`` (ordering); run by
``reconcile.execute``. Pure values.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal["generation", "volume-create", "create", "start", "recreate", "update", "delete",
               "volume-delete", "stack-forget"]
SYMBOL: dict[str, str] = {"generation": "*", "volume-create": "+", "create": "+", "start": ">",
                          "recreate": "~", "update": "~", "delete": "-", "volume-delete": "-",
                          "stack-forget": "-"}
# phases: bookkeeping first, then clean-up of leftovers, prune (reverse dependency order), the services
# level by level, and last forgetting stacks whose containers are all gone
PHASE_SETUP, PHASE_CLEANUP, PHASE_PRUNE, PHASE_SERVICES, PHASE_FORGET = range(5)


@dataclass(frozen=True, slots=True)
class Action:
    kind: Kind
    target: str                            # slot ("shop/api-1"), "shop" or "shop/volume:data"
    stack: str
    reason: str
    service: str = ""
    replica: int = 0
    container_id: str = ""                 # the existing incarnation acted on (start/update/delete/recreate)
    phase: int = PHASE_SERVICES
    level: int = 0                         # dependency level within the phase (prune: reversed)
    order: Literal["start-first", "stop-first"] = "stop-first"   # recreate only
    resources: bool = False                # update: cgroup limits changed (else bookkeeping only)
    after: tuple[tuple[str, str], ...] = field(default=())        # (service, condition) to wait for
    restarts: int = 0                      # recreate after a crash: the new incarnation's restart count

    def line(self, width: int = 0) -> str:
        text = f"{SYMBOL[self.kind]} {self.target.ljust(width)}  {self.kind.ljust(10)}  {self.reason}"
        return text.rstrip()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["after"] = [{"service": s, "condition": c} for s, c in self.after]
        return d


@dataclass(frozen=True, slots=True)
class Deferred:
    """A crashed container left alone this pass: restart backoff not over, or retries exhausted."""

    target: str
    reason: str
    wait_s: float | None = None            # None: never (maxRetries reached)

    def line(self, width: int = 0) -> str:
        return f"  {self.target.ljust(width)}  (deferred) {self.reason}"


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...] = ()
    deferred: tuple[Deferred, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.actions)

    def __len__(self) -> int:
        return len(self.actions)

    def counts(self) -> dict[str, int]:
        return dict(Counter(a.kind for a in self.actions))

    def summary(self) -> str:
        if not self.actions:
            return "no changes"
        c = self.counts()
        return ", ".join(f"{n} {k}" for k, n in sorted(c.items()))

    def __str__(self) -> str:
        later = [d.line() for d in self.deferred]
        if not self.actions:
            return "\n".join(["no changes", *later])
        width = max(len(a.target) for a in self.actions)
        return "\n".join([*(a.line(width) for a in self.actions), *later, f"plan: {self.summary()}"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    def to_dict(self) -> dict[str, Any]:
        return {"changes": len(self.actions), "summary": self.counts(),
                "actions": [a.to_dict() for a in self.actions],
                "deferred": [asdict(d) for d in self.deferred]}

    def stacks(self) -> list[str]:
        return sorted({a.stack for a in self.actions})
