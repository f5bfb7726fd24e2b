"""``%pyrojit_cache`` in a real kernel: a ``JitTrace_ELBO`` built and stepped by hand appears too."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import nbformat
import pytest
from notebook_runner import run_notebook

pytestmark = pytest.mark.kernel

TESTS = Path(__file__).resolve().parents[1]


def test_a_hand_built_jit_elbo_appears_with_unknown_costs(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in [
        "%load_ext pyro_jitmagic",
        textwrap.dedent(f"""\
            import sys
            sys.path.insert(0, {str(TESTS)!r})
            from pyro.infer import SVI, JitTrace_ELBO
            from pyro.optim import Adam
            import models
            hand_elbo = JitTrace_ELBO()
            svi = SVI(models.gaussian, models.gaussian_guide, Adam({{"lr": 0.01}}), hand_elbo)
            for _ in range(3):
                svi.step(models.data())
        """),
        "%pyrojit_cache",
    ]]
    path = tmp_path / "cache.ipynb"
    nbformat.write(nb, path)
    executed = run_notebook.execute_notebook(path, env=dict(os.environ), timeout=300)

    assert run_notebook.errors(executed) == []
    (output,) = [o for o in executed.cells[-1].outputs if o.output_type == "display_data"]
    text = output.data["text/plain"]
    assert "hand_elbo (JitTrace_ELBO) -- model=gaussian, guide=gaussian_guide" in text
    assert "1 positional arg: compiled in unknown, unknown hits, last unknown" in text
    assert "application/vnd.jupyter.widget-view+json" in output.data
