#!/usr/bin/env bash
# One-shot set-up for a fresh machine: Debian packages (when missing and we are root),
# a virtualenv in .venv with the pinned stack, and the project in editable mode.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(espeak-ng flite sox pocketsphinx-testdata fortunes fortunes-min)
missing=()
if command -v dpkg-query >/dev/null; then
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "[setup] apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "[setup] warning: missing Debian packages (install them as root): ${missing[*]}" >&2
  fi
fi

PY=${PYTHON:-python3}
stamp=.venv/.installed-$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [[ ! -f $stamp ]]; then
  echo "[setup] creating .venv with the pinned stack (requirements.txt)"
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==0.13.8"
  # uv ignores pip's config: hand it pip's local wheel folders (from any pip config file, user
  # or site, and $PIP_FIND_LINKS) so torch stays the CPU build.
  links=()
  for d in $(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true) ${PIP_FIND_LINKS:-}; do
    [[ -d $d ]] && links+=(--find-links "$d")
  done
  .venv/bin/uv pip install --python .venv/bin/python "${links[@]}" -r requirements.txt
  .venv/bin/uv pip install --python .venv/bin/python --no-deps -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi
echo "[setup] environment ready (.venv)"
