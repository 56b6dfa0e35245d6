"""Secrets as environment variables (``env:`` on a secret mount), end to end through the real CLI.

A service mounts a file secret with ``env: DB_PASSWORD``. Checked: the container's process has it (its
/proc/1/environ, hashed inside so the test never prints it), ``exec`` sees it as the process does, a
restart by policy replays it, a changed value recreates the container with a digest-only reason, and
the value is in no output of any verb and in no file under the state root (config.json, state.db,
logs, upper dirs: raw, base64, hex). A value with a NUL byte fails the apply naming the variable only.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from test_secrets_e2e import Run, cli, files_holding  # noqa: F401  (cli is a fixture)

pytestmark = pytest.mark.root

VALUE = "pw-Jq4sEnvSecretValue-58"
NEW_VALUE = "pw-Tn2wRotatedEnvValue-31"
LOOP = "trap 'exit 7' USR1; while true; do sleep 0.1; done"
# the container process's own environment, hashed inside the container: the value is never printed
PROC_ENV = "tr '\\0' '\\n' < /proc/1/environ | sed -n 's/^DB_PASSWORD=//p' | tr -d '\\n' | sha256sum"

STACK = f"""\
apiVersion: orchestrator/v1
kind: Stack
metadata: {{name: sx}}
spec:
  secrets:
    db-pass: {{file: db.pass}}
  services:
    api:
      image: busybox:latest
      command: ["sh", "-c", "{LOOP}"]
      env: {{PLAIN: visible}}
      stopGracePeriod: 100ms
      network: none
      restart: always
      secrets:
        - {{source: db-pass, env: DB_PASSWORD, mode: "0400"}}
"""


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def api(run: Run) -> dict[str, str]:
    rows = json.loads(run("-o", "json", "ps", "sx").stdout)
    return next(r for r in rows if r["service"] == "api")


def hashed_envs(run: Run) -> tuple[str, str]:
    """sha256 of $DB_PASSWORD as the container's process has it, and as an exec sees it."""
    proc = run("exec", "api", "--", "sh", "-c", PROC_ENV).stdout.split()[0]
    exe = run("exec", "api", "--", "sh", "-c", 'printf %s "$DB_PASSWORD" | sha256sum').stdout.split()[0]
    return proc, exe


def test_env_secret_reaches_the_process_and_nothing_else(cli: Run, tmp_path: Path,  # noqa: F811
                                                         state_root: Path) -> None:
    (tmp_path / "db.pass").write_text(VALUE)
    (tmp_path / "stack.yaml").write_text(STACK)
    cli("apply", "-f", "stack.yaml", "--timeout", "30s")
    first = api(cli)
    assert first["state"] == "running"
    assert hashed_envs(cli) == (sha(VALUE), sha(VALUE))
    # exec: the spec's own variables are still there beside the secret
    assert cli("exec", "api", "--", "sh", "-c", "echo $PLAIN").stdout == "visible\n"

    # the value is nowhere on disk: config.json, the store, the logs, the state files
    assert list(state_root.rglob("config.json")), "no config.json under the state root to check"
    assert files_holding(state_root, [VALUE]) == []

    # every read verb, table and JSON
    for argv in (("diff", "-f", "stack.yaml"), ("-o", "json", "diff", "-f", "stack.yaml"),
                 ("apply", "-f", "stack.yaml"), ("-o", "json", "apply", "-f", "stack.yaml"),
                 ("ps",), ("-o", "json", "ps"), ("describe", "api"), ("-o", "json", "describe", "api"),
                 ("logs", "api")):
        cli(*argv)

    # a restart by policy (the process exits 7 on SIGUSR1) replays the environment from memory
    cli("exec", "api", "--", "kill", "-USR1", "1")
    deadline = time.monotonic() + 10
    while True:
        row = api(cli)
        if row["state"] == "running" and int(row.get("restarts", 0) or 0) >= 1:
            break
        assert time.monotonic() < deadline, f"no restart by policy: {row}"
        time.sleep(0.1)
    assert row["id"] == first["id"]
    assert hashed_envs(cli) == (sha(VALUE), sha(VALUE))

    # a new value: the plan recreates, with a digest-only reason
    (tmp_path / "db.pass").write_text(NEW_VALUE)
    res = cli("diff", "-f", "stack.yaml", check=False)
    assert res.returncode == 2, res.stdout + res.stderr
    old, new = sha(VALUE)[:4], sha(NEW_VALUE)[:4]
    assert "recreate" in res.stdout and f"secret db-pass changed (sha256 {old} -> {new})" in res.stdout, \
        res.stdout
    cli("apply", "-f", "stack.yaml", "--timeout", "30s")
    second = api(cli)
    assert second["id"] != first["id"] and second["state"] == "running"
    assert hashed_envs(cli) == (sha(NEW_VALUE), sha(NEW_VALUE))

    for out in cli.outputs:  # type: ignore[attr-defined]
        assert VALUE not in out and NEW_VALUE not in out, "a secret value reached the CLI's output"
    assert files_holding(state_root, [VALUE, NEW_VALUE]) == []
    assert any(p.name.startswith("state.db") for p in state_root.iterdir())   # the scan saw the store


def test_a_nul_in_an_env_secret_fails_naming_the_variable(cli: Run, tmp_path: Path,  # noqa: F811
                                                          state_root: Path) -> None:
    (tmp_path / "db.pass").write_bytes(b"pw-Lm3nul\0Value")
    (tmp_path / "stack.yaml").write_text(STACK)
    res = cli("apply", "-f", "stack.yaml", "--timeout", "20s", check=False)
    assert res.returncode != 0
    assert "DB_PASSWORD" in res.stderr and "NUL" in res.stderr, res.stderr
    assert "pw-Lm3nul" not in res.stdout + res.stderr
    assert files_holding(state_root, ["pw-Lm3nul"]) == []
