"""Content-addressed change detection for configs and secrets, and the plan reasons it produces.

A config or secret is identified by ``KIND:NAME`` (``config:nginx.conf``, ``secret:db``: the two kinds
have separate name spaces in a stack) and compared by the sha256 of its content, never by mtime or path.
``resolve_stack`` reads every config and secret the stack's services mount, collecting ALL problems into
one ManifestError; ``content_digests`` is its digest map, the only form that may be stored (SQLite keeps
digests, never values). ``change_reasons(old, new, service)`` compares two digest maps for one service
and says, per mount, what the change does:

- ``restart``: the container is recreated; such mounts (and every secret exposed as an environment
  variable, which can only change at exec) enter ``restart_digest``, which the reconciler folds into the
  container's spec hash, so a content edit is an ordinary recreate with a precise reason;
- ``signal``: the file is rewritten in place (``materialise.rotate``) and the signal sent to the
  container's process; the spec hash does not change;
- ``none``: the file is only rewritten.

An unchanged digest never yields a Change, so an untouched file never causes anything.

Neighbours: ``secrets.sources`` (resolution), ``manifest.model``; called by ``reconcile`` (diff/plan).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from orchestrator.errors import ManifestError, Problem
from orchestrator.manifest.model import FileMount, Service, Stack
from orchestrator.secrets.sources import resolve_config, resolve_secret
from orchestrator.secrets.value import SecretValue

Kind = Literal["config", "secret"]
Action = Literal["restart", "signal", "none"]
SHORT = 4                                  # digest hex characters in plan reasons, like git's short ids
_RANK: dict[Action, int] = {"none": 0, "signal": 1, "restart": 2}


def key(kind: Kind, name: str) -> str:
    """The digest-map key of a stack-level config or secret."""
    return f"{kind}:{name}"


def mounts(service: Service) -> Iterator[tuple[Kind, FileMount]]:
    for fm in service.configs:
        yield "config", fm
    for fm in service.secrets:
        yield "secret", fm


@dataclass(frozen=True)
class Resolved:
    """The content of every config and secret a stack's services mount, in memory."""

    configs: Mapping[str, bytes] = field(default_factory=dict)
    secrets: Mapping[str, SecretValue] = field(default_factory=dict)

    def digests(self) -> dict[str, str]:
        out = {key("config", n): hashlib.sha256(v).hexdigest() for n, v in self.configs.items()}
        out.update({key("secret", n): v.digest for n, v in self.secrets.items()})
        return dict(sorted(out.items()))


def resolve_stack(stack: Stack, env: Mapping[str, str]) -> Resolved:
    """Read every mounted config and secret of ``stack``; all failures in one ManifestError."""
    used = {(kind, fm.name) for s in stack.services for kind, fm in mounts(s)}
    problems: list[Problem] = []
    configs: dict[str, bytes] = {}
    secrets: dict[str, SecretValue] = {}
    for cfg in stack.configs:
        if ("config", cfg.name) in used:
            try:
                configs[cfg.name] = resolve_config(cfg)
            except ManifestError as exc:
                problems.extend(exc.problems)
    for sec in stack.secrets:
        if ("secret", sec.name) in used:
            try:
                secrets[sec.name] = resolve_secret(sec, env)
            except ManifestError as exc:
                problems.extend(exc.problems)
    if problems:
        raise ManifestError(problems)
    return Resolved(configs, secrets)


def content_digests(stack: Stack, env: Mapping[str, str]) -> dict[str, str]:
    """``KIND:NAME`` -> sha256 hex for every config and secret the stack's services mount."""
    return resolve_stack(stack, env).digests()


def action_of(kind: Kind, fm: FileMount) -> Action:
    """What a content change of this mount does. A secret also exposed as an environment variable
    always restarts: a running process's environment cannot be changed."""
    if kind == "secret" and fm.env:
        return "restart"
    return fm.on_change


@dataclass(frozen=True)
class Change:
    """One mount of one service whose content changed."""

    kind: Kind
    name: str
    target: str
    old_digest: str
    new_digest: str
    action: Action
    signal: str = ""                        # action "signal": e.g. "SIGHUP"

    @property
    def reason(self) -> str:
        return (f"{self.kind} {self.name} changed "
                f"(sha256 {self.old_digest[:SHORT]} -> {self.new_digest[:SHORT]})")

    @property
    def effect(self) -> str:
        if self.action == "signal":
            return f"signal:{self.signal}"
        return self.action

    def __str__(self) -> str:
        return f"{self.reason}; onChange {self.effect} ({self.target})"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "target": self.target, "old": self.old_digest,
                "new": self.new_digest, "action": self.action, "signal": self.signal,
                "reason": self.reason}


def change_reasons(old: Mapping[str, str], new: Mapping[str, str], service: Service) -> list[Change]:
    """Per mount of ``service``, the content changes between two digest maps (``KIND:NAME`` keys).

    A mount with no old digest is new: the mount definition itself is in the spec hash, so it needs no
    content reason. A digest missing from ``new`` is a caller bug (resolve the stack first)."""
    out: list[Change] = []
    for kind, fm in mounts(service):
        k = key(kind, fm.name)
        before, after = old.get(k), new[k]
        if before is None or before == after:
            continue
        out.append(Change(kind, fm.name, fm.target, before, after, action_of(kind, fm), fm.signal))
    return out


def strongest(changes: list[Change]) -> Action:
    """The action for the container as a whole: restart beats signal beats a plain rewrite."""
    return max((c.action for c in changes), key=_RANK.__getitem__, default="none")


def signals(changes: list[Change]) -> tuple[str, ...]:
    """Distinct signals to send after rewriting (meaningful when ``strongest`` is "signal")."""
    return tuple(sorted({c.signal for c in changes if c.action == "signal" and c.signal}))


def restart_digest(service: Service, digests: Mapping[str, str]) -> str:
    """sha256 hex over the content digests of the mounts whose change restarts the container.

    The reconciler adds this to the desired container's spec hash; ``signal``/``none`` mounts are left
    out so that editing them never recreates."""
    items = sorted([kind, fm.name, fm.target, digests[key(kind, fm.name)]]
                   for kind, fm in mounts(service) if action_of(kind, fm) == "restart")
    text = json.dumps({"version": 1, "restart_mounts": items}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def config_items(service: Service, resolved: Resolved) -> list[tuple[FileMount, bytes]]:
    """(mount, content) for every config the service mounts: input to ``materialise.write_config_files``."""
    return [(fm, resolved.configs[fm.name]) for fm in service.configs]


def secret_items(service: Service, resolved: Resolved) -> list[tuple[FileMount, SecretValue]]:
    """(mount, value) for every secret the service mounts as a file (all of them: ``env`` is in addition)."""
    return [(fm, resolved.secrets[fm.name]) for fm in service.secrets]
