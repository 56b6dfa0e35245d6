#!/usr/bin/env bash
# Idempotent set-up of a Debian/Ubuntu host (as root) for orchestrator: system packages, a virtualenv
# in .venv with the project installed editable (with dev tools), and the demo/test images built under
# .cache/images. Safe to run again and again; each step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (namespaces, cgroups and overlayfs need it)" >&2
  exit 1
fi

PKGS=(python3 python3-venv python3-dev gcc libc6-dev git gnupg openssh-client iproute2 nftables busybox-static libseccomp2
      runc crun podman skopeo umoci hyperfine ca-certificates)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  rm -f .venv/.installed-* && touch "$stamp"
fi

# bytecode once, as a wheel install would: these machines set PYTHONDONTWRITEBYTECODE, and without
# .pyc files every command compiles what it imports (~70 ms of each `orchestrator` run)
.venv/bin/python -m compileall -q orchestrator >/dev/null

mkdir -p .cache/images
.venv/bin/python scripts/build_images.py .cache/images >/dev/null
echo "setup: ok (venv .venv, images in .cache/images)" >&2
