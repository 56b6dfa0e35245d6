"""Git client wrapper for the GitOps source: mirror fetch, private worktrees, diffs, signature checks.

Everything goes through the ``git`` command (so credentials come from the user's usual git
configuration: credential helpers, ssh-agent, ~/.ssh/config) with an argument list, never a shell.
URLs are logged and reported with any userinfo (``https://user:token@host``) redacted. Repository
content is untrusted input: worktrees are created by git itself (which refuses ``.git`` paths and never
writes through symlinks), and ``safe_manifest_paths`` refuses symlinks that point out of the worktree
so a commit cannot make us read host files.

Neighbours: ``sources.gitops`` drives this per configured repository; nothing else runs git.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import SourceError

_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


def redact(url: str) -> str:
    """``https://user:token@host/x`` -> ``https://***@host/x``; scp-like ``git@host:x`` is kept."""
    return _USERINFO.sub(r"\g<scheme>***@", url)


@dataclass(frozen=True)
class Signature:
    status: str            # git's %G?: G good, B bad, U good-untrusted, N none, E cannot check, ...
    fingerprint: str       # %GF (gpg) or the ssh key fingerprint
    signer: str            # %GS


class GitRepo:
    """A bare mirror of one remote under ``cache_dir``, fetched on demand."""

    def __init__(self, url: str, cache_dir: Path) -> None:
        self.url = url
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.dir = cache_dir / key / "mirror.git"
        self.worktrees = cache_dir / key / "worktrees"

    def _git(self, *args: str, env: dict[str, str] | None = None, check: bool = True,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        full_env = dict(os.environ)
        # never block on a password prompt in a background loop; fail and report instead
        full_env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "LC_ALL": "C"})
        full_env.update(env or {})
        cmd = ["git", *args]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=cwd,
                                 timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SourceError(f"git {args[0]} failed for {redact(self.url)}: {exc}") from exc
        if check and res.returncode != 0:
            detail = redact(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "")
            raise SourceError(f"git {args[0]} failed for {redact(self.url)}: {detail}")
        return res

    def fetch(self, ref: str) -> str:
        """Fetch the remote and return the commit id ``ref`` (branch, tag or commit) now points to."""
        if not (self.dir / "HEAD").exists():
            tmp = self.dir.with_name("mirror.git.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            self._git("clone", "--mirror", "--quiet", "--", self.url, str(tmp))
            tmp.rename(self.dir)             # a killed clone leaves only .tmp, removed next time
        else:
            self._git("--git-dir", str(self.dir), "fetch", "--prune", "--quiet", "origin")
        return self.resolve(ref)

    def resolve(self, ref: str) -> str:
        if ref.startswith("-"):
            raise SourceError(f"invalid git ref {ref!r}")
        res = self._git("--git-dir", str(self.dir), "rev-parse", "--verify", "--quiet",
                        f"{ref}^{{commit}}", check=False)
        if res.returncode != 0:
            raise SourceError(f"ref {ref!r} not found in {redact(self.url)}")
        return res.stdout.strip()

    def checkout(self, commit: str) -> Path:
        """A private, read-only-by-convention worktree of ``commit`` (reused when it exists)."""
        dest = self.worktrees / commit
        if (dest / ".git").exists():
            return dest
        shutil.rmtree(dest, ignore_errors=True)
        self.worktrees.mkdir(parents=True, exist_ok=True)
        self._git("--git-dir", str(self.dir), "worktree", "prune")
        self._git("--git-dir", str(self.dir), "worktree", "add", "--detach", "--force", "--quiet",
                  str(dest), commit)
        return dest

    def drop_worktrees(self, keep: set[str]) -> None:
        """Remove worktrees of commits not in ``keep`` (our own directory; names are commit ids)."""
        if not self.worktrees.is_dir():
            return
        for child in self.worktrees.iterdir():
            if child.name not in keep and re.fullmatch(r"[0-9a-f]{40,64}", child.name):
                shutil.rmtree(child, ignore_errors=True)
        self._git("--git-dir", str(self.dir), "worktree", "prune", check=False)

    def changed_files(self, old: str, new: str, path: str) -> list[str]:
        res = self._git("--git-dir", str(self.dir), "diff", "--name-only", "--no-renames", old, new,
                        "--", path or ".")
        return sorted(line for line in res.stdout.splitlines() if line)

    def signature(self, commit: str, *, gnupg_home: str = "", allowed_signers: str = "") -> Signature:
        env = {"GNUPGHOME": gnupg_home} if gnupg_home else {}
        cfg = ["-c", f"gpg.ssh.allowedSignersFile={allowed_signers}"] if allowed_signers else []
        res = self._git(*cfg, "--git-dir", str(self.dir), "log", "-1", "--format=%G?%x00%GF%x00%GS",
                        commit, env=env)
        status, fpr, signer = ([*res.stdout.rstrip("\n").split("\x00"), "", "", ""])[:3]
        return Signature(status=status, fingerprint=fpr, signer=signer)


def safe_manifest_paths(worktree: Path, subpath: str) -> Path:
    """Resolve ``subpath`` inside ``worktree`` and refuse any symlink under it that leaves the tree."""
    root = worktree.resolve()
    target = (root / subpath).resolve() if subpath else root
    if target != root and root not in target.parents:
        raise SourceError(f"path {subpath!r} leaves the repository")
    if not target.exists():
        raise SourceError(f"path {subpath!r} does not exist at this revision")
    for dirpath, dirnames, filenames in os.walk(target):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                real = p.resolve()
                if real != root and root not in real.parents:
                    raise SourceError(f"{p.relative_to(root)}: symlink points outside the repository")
    return target
