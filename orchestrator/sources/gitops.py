"""GitOps source: reconcile stacks from Git repositories, keeping the last good revision running.

One pass per configured source: fetch; if the wanted ref moved, check the commit's signature when
verification is configured, check it out into a private worktree, load the manifests under ``path``
(an invalid commit is reported and NOT applied), and hand the stacks to the applier with prune limited
to the stacks this source applied before (Flux's inventory rule: we only ever delete what we created).
Only stacks whose files changed between the two commits are re-planned; a periodic resync re-applies
the whole last good revision, which on a converged host writes nothing. When a rollout fails and the
source asks for it, the last good revision is applied again.

Status per source (revision, time, result, stacks) is a small JSON file under ``<root>/gitops/``,
written atomically, read by ``orchestrator gitops --status``.

Neighbours: ``sources.git`` (the git client), ``sources.watch`` (``Waker``/``run_loop``),
``cli.source_cmds`` (builds the applier from the reconciler).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from orchestrator import logs
from orchestrator.errors import ManifestError, OrchestratorError, Problem, SourceError
from orchestrator.manifest.model import StackSet
from orchestrator.sources.git import GitRepo, redact, safe_manifest_paths
from orchestrator.sources.watch import PassOutcome

log = logs.get("gitops")


@dataclass(frozen=True)
class Verification:
    gnupg_home: str = ""                       # a GNUPGHOME holding the allowed public keys
    allowed_signers: str = ""                  # an ssh allowed_signers file
    allowed_fingerprints: tuple[str, ...] = ()  # optional: restrict further to these keys


@dataclass(frozen=True)
class GitSourceSpec:
    name: str
    url: str
    ref: str = "main"
    path: str = ""
    interval_s: float = 60.0
    resync_s: float = 300.0
    verify: Verification | None = None
    rollback: bool = False


@dataclass
class SourceStatus:
    name: str
    url: str = ""
    ref: str = ""
    fetched_commit: str = ""
    applied_commit: str = ""                   # the last good revision: applied and converged
    applied_at: float = 0.0
    result: str = "never"                      # applied | unchanged | failed | refused | rolled-back
    message: str = ""
    checked_at: float = 0.0
    stacks: list[str] = field(default_factory=list)


class Applier(Protocol):
    def __call__(self, stackset: StackSet, *, prune_stacks: Sequence[str],
                 only_stacks: set[str] | None) -> PassOutcome: ...


Loader = Callable[[Sequence[Path]], StackSet]


class StatusStore:
    def __init__(self, root: Path) -> None:
        self.dir = root / "gitops"

    def load(self, name: str) -> SourceStatus:
        try:
            data = json.loads((self.dir / f"{name}.json").read_text())
            return SourceStatus(**data)
        except FileNotFoundError:
            return SourceStatus(name=name)
        except (ValueError, TypeError) as exc:
            raise SourceError(f"gitops status for {name!r} is unreadable: {exc}") from exc

    def save(self, status: SourceStatus) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{status.name}.json.tmp"
        tmp.write_text(json.dumps(asdict(status), indent=2, sort_keys=True))
        os.replace(tmp, self.dir / f"{status.name}.json")

    def all(self) -> list[SourceStatus]:
        if not self.dir.is_dir():
            return []
        return [self.load(p.stem) for p in sorted(self.dir.glob("*.json"))]


def _relative_problems(exc: ManifestError, worktree: Path) -> str:
    def rel(p: Problem) -> Problem:
        try:
            return replace(p, file=str(Path(p.file).relative_to(worktree)))
        except ValueError:
            return p
    return "\n".join(str(rel(p)) for p in exc.problems)


class GitOpsSource:
    """One repository/ref/path kept applied. ``sync(full)`` is one pass; it never raises for bad
    content (bad commits become a ``failed``/``refused`` status), only for bugs."""

    def __init__(self, spec: GitSourceSpec, cache_dir: Path, statuses: StatusStore,
                 load: Loader, apply: Applier) -> None:
        self.spec, self.statuses, self.load, self.apply = spec, statuses, load, apply
        self.repo = GitRepo(spec.url, cache_dir)

    def _stackset_at(self, commit: str) -> tuple[StackSet, Path]:
        wt = self.repo.checkout(commit)
        return self.load([safe_manifest_paths(wt, self.spec.path)]), wt

    def _verify(self, commit: str) -> str:
        v = self.spec.verify
        if v is None:
            return ""
        sig = self.repo.signature(commit, gnupg_home=v.gnupg_home, allowed_signers=v.allowed_signers)
        if sig.status != "G":
            what = {"N": "is not signed", "B": "has a bad signature", "U": "is signed by an untrusted key",
                    "E": "has a signature that cannot be checked (unknown key)",
                    "X": "has an expired signature", "Y": "is signed by an expired key",
                    "R": "is signed by a revoked key"}.get(sig.status, f"failed verification ({sig.status})")
            if sig.status == "U":
                # GnuPG: a good signature by a key in the keyring that was imported but never trusted
                what += (f" {sig.fingerprint} (trust it in {v.gnupg_home or 'the keyring'}: "
                         "gpg --import-ownertrust)")
            return f"commit {commit[:12]} {what}"
        if v.allowed_fingerprints and sig.fingerprint not in v.allowed_fingerprints:
            return f"commit {commit[:12]} is signed by {sig.fingerprint}, which is not in the allowed list"
        return ""

    def sync(self, *, full: bool = False) -> SourceStatus:
        spec = self.spec
        status = self.statuses.load(spec.name)
        status.url, status.ref, status.checked_at = redact(spec.url), spec.ref, time.time()
        try:
            commit = self.repo.fetch(spec.ref)
        except SourceError as exc:
            return self._finish(status, "failed", str(exc))
        previous, status.fetched_commit = status.fetched_commit, commit
        if commit == status.applied_commit and not full:
            status.result, status.message = "unchanged", ""
            self.statuses.save(status)
            return status
        if commit == previous and status.result in ("failed", "refused") and not full:
            # the same bad commit again: keep its verdict until the next full resync retries it
            self.statuses.save(status)
            return status
        refusal = self._verify(commit)
        if refusal:
            return self._finish(status, "refused", refusal + "; keeping " + (status.applied_commit[:12]
                                                                             or "nothing applied"))
        try:
            stackset, wt = self._stackset_at(commit)
        except ManifestError as exc:
            wt = self.repo.worktrees / commit
            return self._finish(status, "failed", f"commit {commit[:12]} is invalid, not applied:\n"
                                + _relative_problems(exc, wt))
        except SourceError as exc:
            return self._finish(status, "failed", f"commit {commit[:12]}: {exc}")
        names = [s.name for s in stackset.stacks]
        prune = sorted(set(status.stacks) - set(names))
        only: set[str] | None = None
        if status.applied_commit and not full and status.applied_commit != commit:
            changed = set(self.repo.changed_files(status.applied_commit, commit, spec.path))
            file_of = {s.name: str(Path(s.source.file).resolve().relative_to(wt.resolve()))
                       for s in stackset.stacks}
            # a changed file that is no current manifest (a config or secret file a stack reads, a
            # removed manifest) may matter to any stack: re-plan them all (level: unchanged ones are no-ops)
            if changed <= set(file_of.values()):
                only = {name for name, f in file_of.items() if f in changed}
        try:
            outcome = self.apply(stackset, prune_stacks=prune, only_stacks=only)
        except OrchestratorError as exc:
            outcome = PassOutcome(ok=False, message=str(exc))
        if outcome.ok:
            if commit == status.applied_commit and not outcome.changed and not prune:
                # a resync of the revision already applied, on a converged host: nothing was written
                return self._finish(status, "unchanged", "")
            status.applied_commit, status.applied_at, status.stacks = commit, time.time(), names
            self.repo.drop_worktrees({commit})
            return self._finish(status, "applied", outcome.message)
        if spec.rollback and status.applied_commit and status.applied_commit != commit:
            good = status.applied_commit
            try:
                good_set, _ = self._stackset_at(good)
                back = self.apply(good_set, prune_stacks=sorted(set(names) - set(status.stacks)),
                                  only_stacks=None)
                note = "" if back.ok else f"; rollback also failed: {back.message}"
            except OrchestratorError as exc:
                note = f"; rollback also failed: {exc}"
            return self._finish(status, "rolled-back",
                                f"commit {commit[:12]} failed: {outcome.message}; rolled back to "
                                f"{good[:12]}{note}")
        return self._finish(status, "failed", f"commit {commit[:12]} failed: {outcome.message}")

    def _finish(self, status: SourceStatus, result: str, message: str) -> SourceStatus:
        status.result, status.message = result, message
        self.statuses.save(status)
        level = log.info if result in ("applied", "unchanged") else log.warning
        level("gitops sync", source=status.name, result=result, commit=status.fetched_commit[:12],
              message=message)
        return status
