"""GitOps source against real local bare repositories (file://), with a recording applier.

The applier here stands in for the reconciler (covered by its own tests); what is under test is the
source logic: fetch, verify, load, keep-last-good, prune scope, changed-stack scoping, rollback.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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


def test_changed_non_manifest_file_replans_every_stack(tmp_path: Path, repo: tuple[Path, Path]) -> None:
    # a file a stack reads (a config, a secret) is no manifest: any stack may use it, so all are re-planned
    bare, work = repo
    rec = Recorder()
    src = make(tmp_path, bare, rec)
    src.sync()
    (work / "stacks" / "nginx.conf").write_text("worker_processes 1;\n")
    push(work, "a config file")
    assert src.sync().result == "applied"
    assert rec.calls[-1] == (["blog", "shop"], [], None)


def test_full_resync_of_converged_revision_is_unchanged(tmp_path: Path, repo: tuple[Path, Path]) -> None:
    bare, _work = repo
    rec = Recorder()
    src = make(tmp_path, bare, rec)
    first = src.sync()

    def converged(stackset: StackSet, *, prune_stacks: Sequence[str],
                  only_stacks: set[str] | None) -> PassOutcome:
        return PassOutcome(ok=True, changed=0)          # the host already matches: nothing written
    src.apply = converged
    st = src.sync(full=True)
    assert (st.result, st.applied_commit, st.applied_at) == ("unchanged", first.applied_commit,
                                                            first.applied_at)


def test_gnupg_signed_commits_need_a_trusted_key(tmp_path: Path, repo: tuple[Path, Path]) -> None:
    bare, work = repo
    signing, keyring = tmp_path / "gpg-sign", tmp_path / "gpg-allowed"
    for home in (signing, keyring):
        home.mkdir(mode=0o700)

    def gpg(home: Path, *args: str, stdin: str = "") -> str:
        return subprocess.run(["gpg", "--homedir", str(home), "--batch", *args], input=stdin, text=True,
                              capture_output=True, check=True).stdout

    try:
        gpg(signing, "--passphrase", "", "--quick-gen-key", "CI <ci@example.invalid>", "ed25519", "sign",
            "never")
        fpr = next(line.split(":")[9] for line in gpg(signing, "--with-colons", "--list-keys").splitlines()
                   if line.startswith("fpr:"))
        gpg(keyring, "--import", stdin=gpg(signing, "--armor", "--export", fpr))
        (work / "stacks" / "shop.yaml").write_text(STACK.format(name="shop", svc="api", n=5))
        git(work, "add", "-A")
        subprocess.run(["git", "-c", f"user.signingkey={fpr}", "commit", "-q", "-S", "-m", "gpg signed"],
                       cwd=work, env={**os.environ, **GIT_ENV, "GNUPGHOME": str(signing)}, check=True)
        git(work, "push", "-q", "origin", "main")
        rec = Recorder()
        src = make(tmp_path, bare, rec, verify=Verification(gnupg_home=str(keyring)))
        st = src.sync()                               # imported, not trusted: refused, says how to fix
        assert st.result == "refused" and "untrusted key" in st.message and fpr in st.message, st.message
        gpg(keyring, "--import-ownertrust", stdin=f"{fpr}:6:\n")
        assert src.sync().result == "refused"         # the same commit: its verdict holds until a resync
        st = src.sync(full=True)
        assert st.result == "applied", st.message
        other = replace(src.spec, verify=Verification(gnupg_home=str(keyring), allowed_fingerprints=("X",)))
        src2 = GitOpsSource(other, tmp_path / "cache2", StatusStore(tmp_path / "root2"), load, rec)
        st = src2.sync()
        assert st.result == "refused" and "not in the allowed list" in st.message
    finally:
        for home in (signing, keyring):           # the agents gpg started for these homes
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def test_same_bad_commit_is_not_reprocessed_until_a_full_resync(tmp_path: Path,
                                                               repo: tuple[Path, Path]) -> None:
    bare, work = repo
    rec = Recorder()
    src = make(tmp_path, bare, rec)
    src.sync()
    (work / "stacks" / "shop.yaml").write_text("kind: [broken\n")
    push(work, "broken yaml")
    first = src.sync()
    assert first.result == "failed"
    calls = []
    src.load = lambda paths: calls.append(paths) or load(paths)  # type: ignore[func-returns-value]
    again = src.sync()
    assert (again.result, again.message, calls) == ("failed", first.message, [])   # verdict kept, no reload
    assert src.sync(full=True).result == "failed" and len(calls) == 1               # retried per resync
