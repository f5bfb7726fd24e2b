"""``%%pyrojit --compare`` on the tutorial's three workloads, in a real kernel."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import nbformat
import pytest
from notebook_runner import run_notebook

pytestmark = pytest.mark.kernel

TESTS = Path(__file__).resolve().parents[1]

SETUP = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(TESTS)!r})
    import pyro, torch
    from pyro import poutine
    from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
    from pyro.infer.autoguide import AutoDiagonalNormal
    from pyro.infer.mcmc import MCMC, NUTS
    from pyro.optim import Adam
    import models
    data = models.data(100)
    sequences = [torch.randn(n) for n in [8] * 3 + [12] * 2 + [16]]
""")

CELLS = {
    "svi": """\
        %%pyrojit --backend pyro --compare --seed 0 -o svi_cmp
        svi = SVI(models.gaussian, AutoDiagonalNormal(models.gaussian), Adam({"lr": 0.01}), Trace_ELBO())
        for step in range(100):
            svi.step(data)
        """,
    "nuts": """\
        %%pyrojit --backend pyro --compare --seed 1 -o nuts_cmp
        mcmc = MCMC(NUTS(models.gaussian), num_samples=100, warmup_steps=50, disable_progbar=True)
        mcmc.run(data)
        """,
    "hmm": """\
        %%pyrojit --backend pyro --compare --seed 2 -o hmm_cmp
        pyro.clear_param_store()  # the first cell's AutoDiagonalNormal params have the same names
        guide = AutoDiagonalNormal(poutine.block(models.hmm, expose=["trans", "emit_scale", "emit_loc"]))
        svi = SVI(models.hmm, guide, Adam({"lr": 0.01}), TraceEnum_ELBO(max_plate_nesting=1))
        for sequence in sequences:
            svi.step(sequence, num_sequences=len(sequences), length=len(sequence))
        """,
    "branchy": """\
        %%pyrojit --backend pyro --compare --seed 3 -o branchy_cmp
        bad = SVI(models.branchy, models.branchy_guide, Adam({"lr": 0.05}), Trace_ELBO())
        for step in range(30):
            bad.step(data)
        """,
}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("%load_ext pyro_jitmagic"), nbformat.v4.new_code_cell(SETUP)]
    for name, source in CELLS.items():
        cell = nbformat.v4.new_code_cell(textwrap.dedent(source))
        cell.id = name
        nb.cells.append(cell)
    nb.cells.append(nbformat.v4.new_code_cell(
        "print({name: c.agree for name, c in [('svi', svi_cmp), ('nuts', nuts_cmp), "
        "('hmm', hmm_cmp), ('branchy', branchy_cmp)]})"))
    path = tmp_path_factory.mktemp("compare") / "compare.ipynb"
    nbformat.write(nb, path)
    return run_notebook.execute_notebook(path, env=dict(os.environ), timeout=300)


def panel(nb, name):
    (cell,) = [c for c in nb.cells if c.get("id") == name]
    outputs = [o for o in cell.outputs if o.output_type == "display_data"]
    assert len(outputs) == 1, [o.output_type for o in cell.outputs]  # the progress became the panel
    return outputs[0].data


def test_no_cell_failed(executed):
    assert run_notebook.errors(executed) == []


@pytest.mark.parametrize("name", ["svi", "nuts", "hmm"])
def test_the_tutorial_workloads_agree(executed, name):
    data = panel(executed, name)
    assert {"text/plain", "text/html", "application/vnd.jupyter.widget-view+json"} <= set(data)
    verdict = data["text/plain"].splitlines()[0]
    # NUTS draws stay identical only while no float in a gradient differs; on another CPU they part at the
    # first rounding difference and the verdict is then the statistical one. Both are agreement.
    agreeing = ("results agree", "results agree within noise") if name == "nuts" else ("results agree",)
    assert verdict.endswith(agreeing), verdict
    assert "<img" in data["text/html"]  # the static form carries the plots too


def test_a_branch_on_a_tensor_is_flagged_as_disagreeing(executed):
    data = panel(executed, "branchy")
    assert data["text/plain"].splitlines()[0].endswith("RESULTS DISAGREE")
    assert "a risky JIT warning explains it" in data["text/plain"]
    assert "scale = 1.0 if loc &gt; 0 else 2.0" in data["text/html"]


def test_the_comparison_objects_are_in_the_namespace(executed):
    last = executed.cells[-1]
    (out,) = [o for o in last.outputs if o.output_type == "stream"]
    assert out.text.strip() == "{'svi': True, 'nuts': True, 'hmm': True, 'branchy': False}"


def test_widget_state_is_saved_with_the_notebook(executed):
    state = executed.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    models = {m["model_name"] for m in state.values()}
    assert {"TabModel", "HTMLModel", "ImageModel", "VBoxModel"} <= models
