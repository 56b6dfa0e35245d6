"""Resolution: read the content of a stack's configs and secrets from where the manifest says.

``resolve_config`` returns the bytes of a config (a file next to the manifest, already an absolute path
in the model, or inline content). ``resolve_secret`` returns a :class:`SecretValue` from a file, an
environment variable of the orchestrator, or a SOPS-encrypted file decrypted by the ``sops`` binary
(``sops -d FILE``; keys come from the orchestrator's environment, e.g. ``SOPS_AGE_KEY_FILE``).

Every failure is a :class:`ManifestError` whose :class:`Problem` names the manifest file:line:col of the
config/secret declaration and its JSON path (``spec.secrets.NAME``) — and never any content: sops'
stderr is left out of the message on purpose, because sops may echo parts of the document it read.
These run at plan time, before anything is touched, so a bad source fails the plan and nothing running
is changed.

Neighbours: input from ``manifest.model`` (Config, Secret); output to ``secrets.digest`` (content
digests for the plan) and ``secrets.materialise`` (files in containers).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from orchestrator.errors import ManifestError, Problem
from orchestrator.manifest.loader import dotted
from orchestrator.manifest.model import Config, Secret, SourceRef
from orchestrator.secrets.value import SecretValue

SOPS_TIMEOUT_S = 30.0
# a config or secret is a file in a container's tmpfs, not a data set: refuse anything bigger so a
# mistaken path (a disk image next to the manifest) fails clearly instead of filling memory
MAX_BYTES = 16 * 1024 * 1024


def _problem(src: SourceRef, kind: str, name: str, key: str, message: str) -> ManifestError:
    path = dotted(("spec", f"{kind}s", name, key) if key else ("spec", f"{kind}s", name))
    return ManifestError([Problem(src.file, src.line, src.col, path, f"{kind} {name}: {message}")])


def _read_file(path: str, src: SourceRef, kind: str, name: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError as exc:
        raise _problem(src, kind, name, key, f"file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise _problem(src, kind, name, key, f"not a regular file: {path}") from exc
    except PermissionError as exc:
        raise _problem(src, kind, name, key, f"file not readable (permission denied): {path}") from exc
    except OSError as exc:
        raise _problem(src, kind, name, key, f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_BYTES:
        raise _problem(src, kind, name, key, f"file larger than {MAX_BYTES} bytes: {path}")
    return data


def resolve_config(cfg: Config) -> bytes:
    """The content of ``cfg``: inline content (UTF-8) or the bytes of its file."""
    if cfg.content is not None:
        return cfg.content.encode()
    if not cfg.file:
        raise _problem(cfg.source, "config", cfg.name, "", "neither file nor content is set")
    return _read_file(cfg.file, cfg.source, "config", cfg.name, "file")


def resolve_secret(sec: Secret, env: Mapping[str, str], *, sops: str | None = None) -> SecretValue:
    """The value of ``sec``. ``env`` is the orchestrator's environment (``os.environ`` in the CLI);
    ``sops`` overrides the sops binary looked up on ``env["PATH"]``."""
    if sec.file:
        return SecretValue(_read_file(sec.file, sec.source, "secret", sec.name, "file"))
    if sec.env:
        if sec.env not in env:
            raise _problem(sec.source, "secret", sec.name, "env",
                           f"environment variable {sec.env} is not set")
        return SecretValue(env[sec.env].encode())
    if sec.sops_file:
        return SecretValue(_sops_decrypt(sec, env, sops))
    raise _problem(sec.source, "secret", sec.name, "", "none of file, env, sops is set")


def find_sops(env: Mapping[str, str]) -> str | None:
    """The sops binary on the orchestrator's PATH, or None."""
    return shutil.which("sops", path=env.get("PATH", os.defpath))


def _sops_decrypt(sec: Secret, env: Mapping[str, str], sops: str | None) -> bytes:
    src, name, path = sec.source, sec.name, sec.sops_file
    binary = sops or find_sops(env)
    if binary is None:
        raise _problem(src, "secret", name, "sops",
                       "the sops tool is not installed (needed to decrypt " + path + "); install sops "
                       "or use a file/env secret")
    # fail on a missing file ourselves: sops' own message for it differs between versions
    if not Path(path).is_file():
        raise _problem(src, "secret", name, "sops", f"file not found: {path}")
    try:
        done = subprocess.run([binary, "--decrypt", path], capture_output=True, env=dict(env),
                              timeout=SOPS_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise _problem(src, "secret", name, "sops",
                       f"sops did not finish decrypting {path} within {SOPS_TIMEOUT_S:.0f}s") from exc
    except OSError as exc:
        raise _problem(src, "secret", name, "sops", f"cannot run {binary}: {exc.strerror}") from exc
    if done.returncode != 0:
        # sops' stderr is withheld: with some formats it quotes the document it failed on
        raise _problem(src, "secret", name, "sops",
                       f"sops could not decrypt {path} (exit status {done.returncode}; check the key in "
                       "SOPS_AGE_KEY_FILE / SOPS_AGE_KEY and run `sops -d` by hand for details)")
    if len(done.stdout) > MAX_BYTES:
        raise _problem(src, "secret", name, "sops", f"decrypted {path} is larger than {MAX_BYTES} bytes")
    return done.stdout
