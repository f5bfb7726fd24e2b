"""The tutorial notebook, run in a real kernel: what a reader of its outputs would check."""

from __future__ import annotations

import os
import re

import pytest
from notebook_runner import run_notebook

pytestmark = pytest.mark.kernel


PYROJIT_CELLS = ["svi-pyrojit", "nuts-pyrojit", "hmm-pyrojit", "risky-pyrojit", "fixed-pyrojit",
                 "compare-svi", "compare-risky", "auto-hmm", "whole-step"]
COMPARE_CELLS = ["compare-svi", "compare-risky", "whole-step"]


@pytest.fixture(scope="module")
def executed_tutorial():
    """The tutorial executed once in a real kernel, with CI's small step counts."""
    return run_notebook.execute_notebook(run_notebook.TUTORIAL, env={**os.environ, "CI": "1"},
                                         timeout=300)


def cell(nb, cell_id):
    return next(c for c in nb.cells if c.get("id") == cell_id)


def report_text(nb, cell_id):
    texts = run_notebook.report_texts(cell(nb, cell_id))
    assert len(texts) == 1, f"{cell_id} displayed {len(texts)} reports"
    return texts[0]


def stdout(nb, cell_id):
    return "".join(o.text for o in cell(nb, cell_id).outputs
                   if o.output_type == "stream" and o.name == "stdout")


def test_no_cell_failed(executed_tutorial):
    failures = run_notebook.errors(executed_tutorial)
    assert not failures, "\n\n".join(failures)


def test_the_pyrojit_cells_are_the_ones_checked_here(executed_tutorial):
    found = [c.id for c in run_notebook.pyrojit_cells(executed_tutorial)]
    assert found == PYROJIT_CELLS


@pytest.mark.parametrize("cell_id", [c for c in PYROJIT_CELLS if c not in COMPARE_CELLS])
def test_each_report_reads_as_text_and_as_html(executed_tutorial, cell_id):
    displays = [o for o in cell(executed_tutorial, cell_id).outputs if o.output_type == "display_data"]
    assert len(displays) == 1
    text, html = displays[0].data["text/plain"], displays[0].data["text/html"]
    assert text.startswith("pyrojit")
    # The HTML says the same as the text: what ran compiled, as "before -> after".
    assert "-&gt; Jit" in html or "-&gt; NUTS(jit_compile=True)" in html


@pytest.mark.parametrize("cell_id", PYROJIT_CELLS)
def test_no_jit_warning_leaks_into_the_cell_output(executed_tutorial, cell_id):
    streams = "".join(o.text for o in cell(executed_tutorial, cell_id).outputs
                      if o.output_type == "stream")
    assert "Warning" not in streams
    assert "torch.jit" not in streams


def test_svi_cell_runs_trace_elbo_compiled_with_the_guide_warmed_up(executed_tutorial):
    text = report_text(executed_tutorial, "svi-pyrojit")
    assert "svi: Trace_ELBO -> JitTrace_ELBO" in text
    assert "AutoDiagonalNormal ran the model once to build its prototype" in text
    assert "20 steps" in text


def test_svi_report_object_is_used_in_the_next_cell(executed_tutorial):
    printed = stdout(executed_tutorial, "svi-speedup")
    assert "compilations: 1," in printed
    assert re.search(r"median step: +[\d.]+ ms eager, [\d.]+ ms compiled \([\d.]+x\)", printed)


def test_nuts_cell_runs_with_jit_compile(executed_tutorial):
    text = report_text(executed_tutorial, "nuts-pyrojit")
    assert "mcmc: NUTS -> NUTS(jit_compile=True)" in text
    assert "20 samples + 20 warm-up" in text


def test_hmm_cell_compiles_once_per_sequence_length(executed_tutorial):
    text = report_text(executed_tutorial, "hmm-pyrojit")
    assert "svi: TraceEnum_ELBO -> JitTraceEnum_ELBO" in text
    for length in (24, 48, 72):
        assert text.count(f"length={length},") == 1, text
    printed = stdout(executed_tutorial, "hmm-speedup")
    assert printed.startswith("3 compilations:")


def test_risky_cell_names_the_branch_on_a_tensor(executed_tutorial):
    text = report_text(executed_tutorial, "risky-pyrojit")
    assert "if loc < 0:" in text
    assert "Converting a tensor to a Python boolean" in text
    html = cell(executed_tutorial, "risky-pyrojit").outputs[0].data["text/html"]
    assert "if loc &lt; 0:" in html


def test_fixed_model_has_no_risky_warning(executed_tutorial):
    text = report_text(executed_tutorial, "fixed-pyrojit")
    assert "risky" not in text.lower()


@pytest.mark.parametrize(("cell_id", "verdict_end"),
                         [("compare-svi", "results agree"), ("compare-risky", "results agree"),
                          ("whole-step", "results agree")])
def test_compare_cells_show_the_panel_with_its_verdict(executed_tutorial, cell_id, verdict_end):
    displays = [o for o in cell(executed_tutorial, cell_id).outputs if o.output_type == "display_data"]
    assert len(displays) == 1
    data = displays[0].data
    assert {"text/plain", "text/html", "application/vnd.jupyter.widget-view+json"} <= set(data)
    assert data["text/plain"].splitlines()[0].endswith(verdict_end)


def test_the_comparison_object_is_used_in_the_next_cell(executed_tutorial):
    out = stdout(executed_tutorial, "compare-object")
    assert "results agree" in out
    assert re.search(r"compile cost \d+\.\d{3} s, largest loss difference \d\.\de-\d\d", out)


def test_the_cache_inspector_shows_the_hmm_entries_with_their_hits(executed_tutorial):
    displays = [o for o in cell(executed_tutorial, "cache").outputs if o.output_type == "display_data"]
    assert len(displays) == 1
    data = displays[0].data
    assert {"text/plain", "text/html", "application/vnd.jupyter.widget-view+json"} <= set(data)
    text = data["text/plain"]
    # CI's epoch: [24] * 5 + [48] * 2 + [72], one step each
    for length, hits in ((24, 5), (48, 2), (72, 1)):
        assert re.search(rf"length={length}, num_sequences=8: compiled in \S+ \S+, {hits} hits", text), text
    assert "(NUTS)" in text  # the compiled potential of the NUTS cell's kernel


def test_auto_cell_decides_per_sequence_length(executed_tutorial):
    text = report_text(executed_tutorial, "auto-hmm")
    assert "svi: TraceEnum_ELBO -> JitTraceEnum_ELBO" in text
    assert "--auto     in all:" in text
    assert "  executor " not in text  # a key moves only after thirty compiled steps; CI runs fewer
    for length in (24, 48, 72):
        assert re.search(rf"svi, 1 positional arg, length={length}, num_sequences=8: .*Why: ", text)
    # CI's epoch: 5 sequences of length 24, 2 of 48, 1 of 72, read from the cell's loop: 8 steps.
    # The two steps of length 24 left after three measured ones cannot repay a trace, so every
    # length stays eager (without the loop, length 24 would have compiled, expecting ~200 steps).
    assert "the cell's loops run 8 steps" in text
    printed = stdout(executed_tutorial, "auto-decisions")
    assert "length=24, num_sequences=8: eager (steps eager: 5, compiled: 0)" in printed
    assert "length=48, num_sequences=8: eager (steps eager: 2, compiled: 0)" in printed
    assert "length=72, num_sequences=8: eager (steps eager: 1, compiled: 0)" in printed
    assert re.search(r"against always eager: [+-][\d.]+ s, against always compiled: [+-][\d.]+ s", printed)
