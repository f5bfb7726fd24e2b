#!/usr/bin/env bash
# Set up, then lint, type-check and run every test tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-browser
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
