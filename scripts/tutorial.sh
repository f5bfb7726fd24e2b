#!/usr/bin/env bash
# Run the tutorial notebook headless and print what each %%pyrojit cell reported.
# Sets up .venv first; the notebook runs in a kernel of .venv, and the executed copy
# is written to notebooks/pyro_jit_tutorial.executed.ipynb.
#   bash scripts/tutorial.sh           the tutorial's step counts (a few minutes)
#   CI=1 bash scripts/tutorial.sh      small step counts
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A kernelspec inside .venv, so that Jupyter started from .venv offers this
# environment as "python3" whatever else the machine has installed.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 > /dev/null
.venv/bin/python scripts/run_notebook.py "$@"
