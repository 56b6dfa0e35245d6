#!/usr/bin/env bash
# Set everything up (idempotent), import the demo image and apply the demo stack in manifests/demo.
# Run again: nothing changes (a no-op apply). Tear down with: .venv/bin/orchestrator down demo
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
orc=.venv/bin/orchestrator
$orc image import .cache/images/busybox.oci.tar --name busybox:latest >/dev/null
$orc validate -f manifests/demo
$orc apply -f manifests/demo
$orc ps
