#!/usr/bin/env bash
# Create .venv with everything pyro_jitmagic, its tests and its notebook need.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }

# The CPU build of torch first: a bare "torch" requirement would pull a
# multi-GB CUDA build. The package asks for a range this build satisfies.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    pip install "torch==2.13.0"
fi
pip install -e ".[test]"
