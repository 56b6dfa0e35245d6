"""Configs and secrets: resolve their content, detect changes by digest, redact, materialise.

    sources      Config/Secret (manifest.model) -> bytes / SecretValue; ManifestError naming the line
    value        SecretValue: bytes in memory that print as <redacted sha256:abcd1234…>
    digest       digest maps (KIND:NAME -> sha256), per-mount Change reasons, restart_digest
    redact       Redactor.scrub; the process-wide Redactor every output path scrubs through (logs,
                 ctx.emit, CLI errors, the store's writes via Scrubbing); the JSON encoder
    ledger       config hash -> digests a container was made from (plan reasons "sha256 a1b2 -> c3d4")
    materialise  files under a dest dir with uid/gid/mode: atomic, O_NOFOLLOW, no escapes; rotate
    tmpfs        the per-container tmpfs (noswap) the secret files are written to

The reconciler calls ``resolve_stack``/``content_digests``, ``change_reasons`` and ``restart_digest``;
the runtime calls ``make_tmpfs`` + ``write_secret_files`` in the container's mount namespace and
``rotate`` for ``signal``/``none`` changes. docs/configs-and-secrets.md has the whole contract.

Nothing is re-exported here on purpose: the runtime imports ``secrets.materialise``/``secrets.tmpfs``
and must not pull in ``manifest`` through this package's ``__init__`` (its import contract); import
from the submodules.
"""
