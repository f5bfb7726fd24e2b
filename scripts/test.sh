#!/usr/bin/env bash
# Set up, then lint, type-check and run every test tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check pyro_jitmagic tests bench scripts
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
