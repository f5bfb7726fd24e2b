#!/usr/bin/env bash
# Create .venv with everything pyro_jitmagic, its tests and its notebook need;
# with --with-browser, also Debian's Chromium for the panel's browser tests.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }

# The CPU build of torch first: a bare "torch" requirement would pull a
# multi-GB CUDA build. The package asks for torch>=2.1 with no upper bound, so
# pip keeps whichever torch is already here.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    pip install "torch==2.13.0"
fi
pip install -e ".[test]"

# The panel's browser tests drive Debian's Chromium (a browser download would
# fail on these machines; Playwright is used with this one, never its own).
if [ "${1:-}" = --with-browser ] && ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "setup: chromium is missing and this is not root; the browser tests will fail" >&2
    fi
fi
