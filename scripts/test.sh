#!/usr/bin/env bash
# Set everything up (idempotent) and run the whole test suite: lint, types, then pytest.
# Real-kernel tests need root; as non-root they are skipped loudly. pytest's "no tests collected"
# (exit 5) is a failure here: a suite that runs nothing must not look green.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh || exit 1
export PATH="$PWD/.venv/bin:$PATH"
export ORCHESTRATOR_IMAGES="$PWD/.cache/images"
rc=0
echo "== ruff" && .venv/bin/ruff check orchestrator tests scripts bench || rc=1
echo "== mypy" && .venv/bin/mypy || rc=1
echo "== import-linter" && .venv/bin/lint-imports --no-cache >/dev/null || { .venv/bin/lint-imports --no-cache; rc=1; }
echo "== pytest"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
prc=$?
if [ $prc -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  prc=1
fi
[ $prc -ne 0 ] && rc=$prc
exit $rc
