"""GitOps source against real local bare repositories (file://), with a recording applier.

The applier here stands in for the reconciler (covered by its own tests); what is under test is the
source logic: fetch, verify, load, keep-last-good, prune scope, changed-stack scoping, rollback.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.manifest import load
from orchestrator.manifest.model import StackSet
from orchestrator.sources.gitops import GitOpsSource, GitSourceSpec, StatusStore, Verification
from orchestrator.sources.watch import PassOutcome

STACK = """apiVersion: orchestrator/v1
kind: Stack
metadata: {{name: {name}}}
spec:
  services:
    {svc}:
      image: busybox:latest
      command: ["sleep", "{n}"]
"""

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@dataclass
class Recorder:
    calls: list[tuple[list[str], list[str], set[str] | None]] = field(default_factory=list)
    fail_when: str = ""

    def __call__(self, stackset: StackSet, *, prune_stacks: Sequence[str],
                 only_stacks: set[str] | None) -> PassOutcome:
        names = [s.name for s in stackset.stacks]
        self.calls.append((names, list(prune_stacks), only_stacks))
        cmds = [svc.command for s in stackset.stacks for svc in s.services]
        if self.fail_when and any(c and self.fail_when in c for c in cmds):
            return PassOutcome(ok=False, message="api-1 unhealthy: probe exit 1")
        return PassOutcome(ok=True, changed=1)


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Path]:
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "--bare", "-q", "-b", "main", str(bare)], check=True)
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    git(work, "checkout", "-q", "-b", "main")
    (work / "stacks").mkdir()
    (work / "stacks" / "shop.yaml").write_text(STACK.format(name="shop", svc="api", n=1))
    (work / "stacks" / "blog.yaml").write_text(STACK.format(name="blog", svc="web", n=1))
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "first")
    git(work, "push", "-q", "origin", "main")
    return bare, work


def make(tmp_path: Path, bare: Path, applier: Recorder, **kw: object) -> GitOpsSource:
    spec = GitSourceSpec(name="t", url=f"file://{bare}", ref="main", path="stacks", **kw)  # type: ignore[arg-type]
    return GitOpsSource(spec, tmp_path / "cache", StatusStore(tmp_path / "root"), load, applier)


def push(work: Path, msg: str) -> str:
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", msg)
    git(work, "push", "-q", "origin", "main")
    return git(work, "rev-parse", "HEAD")


def test_apply_then_unchanged_then_only_changed_stack(tmp_path: Path, repo: tuple[Path, Path]) -> None:
    bare, work = repo
    rec = Recorder()
    src = make(tmp_path, bare, rec)
    st = src.sync()
    assert st.result == "applied" and st.stacks == ["blog", "shop"]
    assert rec.calls[-1] == (["blog", "shop"], [], None)
    assert src.sync().result == "unchanged" and len(rec.calls) == 1     # no pass, no writes
    (work / "stacks" / "shop.yaml").write_text(STACK.format(name="shop", svc="api", n=2))
    head = push(work, "shop: sleep 2")
    st = src.sync()
    assert st.result == "applied" and st.applied_commit == head
    assert rec.calls[-1][2] == {"shop"}                                   # only the changed stack


def test_broken_commit_is_not_applied_and_revert_recovers(tmp_path: Path, repo: tuple[Path, Path]) -> None:
    bare, work = repo
    rec = Recorder()
    src = make(tmp_path, bare, rec)
    good = src.sync().applied_commit
    (work / "stacks" / "shop.yaml").write_text(STACK.format(name="shop", svc="api", n=1)
                                               + "      replicas: two\n")
    push(work, "broken")
    st = src.sync()
    assert st.result == "failed" and st.applied_commit == good
    assert "stacks/shop.yaml:9:" in st.message and "replicas" in st.message
    assert len(rec.calls) == 1
    git(work, "revert", "--no-edit", "HEAD")
    git(work, "push", "-q", "origin", "main")
    assert src.sync().result == "applied"


def test_removed_stack_is_pruned_only_if_ours(tmp_path: Path, repo: tuple[Path, Path]) -> None:
    bare, work = repo
    rec = Recorder()
    src = make(tmp_path, bare, rec)
    src.sync()
    (work / "stacks" / "blog.yaml").unlink()
    push(work, "drop blog")
    st = src.sync()
    assert st.result == "applied" and st.stacks == ["shop"]
    assert rec.calls[-1][1] == ["blog"]


def test_failed_rollout_rolls_back(tmp_path: Path, repo: tuple[Path, Path]) -> None:
    bare, work = repo
    rec = Recorder(fail_when="9")
    src = make(tmp_path, bare, rec, rollback=True)
    good = src.sync().applied_commit
    (work / "stacks" / "shop.yaml").write_text(STACK.format(name="shop", svc="api", n=9))
    push(work, "bad rollout")
    st = src.sync()
    assert st.result == "rolled-back" and st.applied_commit == good
    assert "unhealthy" in st.message
    assert rec.calls[-1][2] is None and rec.calls[-1][0] == ["blog", "shop"]   # the good revision again


def test_symlink_out_of_repo_is_refused(tmp_path: Path, repo: tuple[Path, Path]) -> None:
    bare, work = repo
    secret = tmp_path / "host-secret.yaml"
    secret.write_text("password: hunter2\n")
    (work / "stacks" / "evil.yaml").symlink_to(secret)
    push(work, "evil")
    st = make(tmp_path, bare, Recorder()).sync()
    assert st.result == "failed" and "outside the repository" in st.message
    assert "hunter2" not in st.message


def test_credentials_are_redacted() -> None:
    from orchestrator.sources.git import redact
    assert redact("https://user:s3cret@git.example/x.git") == "https://***@git.example/x.git"
    assert redact("git@host:x.git") == "git@host:x.git"


def test_signed_commits_only(tmp_path: Path, repo: tuple[Path, Path]) -> None:
    bare, work = repo
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "t@example.com", "-f", str(key)],
                   check=True)
    signers = tmp_path / "allowed_signers"
    signers.write_text("t@example.com " + (tmp_path / "key.pub").read_text())
    verify = Verification(allowed_signers=str(signers))
    rec = Recorder()
    src = make(tmp_path, bare, rec, verify=verify)
    st = src.sync()                                   # the first commit is unsigned
    assert st.result == "refused" and "is not signed" in st.message and not rec.calls
    git(work, "config", "gpg.format", "ssh")
    git(work, "config", "user.signingkey", str(key))
    (work / "stacks" / "shop.yaml").write_text(STACK.format(name="shop", svc="api", n=3))
    git(work, "add", "-A")
    git(work, "commit", "-q", "-S", "-m", "signed")
    git(work, "push", "-q", "origin", "main")
    st = src.sync()
    assert st.result == "applied", st.message
