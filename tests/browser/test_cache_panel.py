"""The compile-cache inspector in JupyterLab, in a real (headless) Chromium."""

from __future__ import annotations

import textwrap

from lab_driver import run_notebook_in_lab, screenshot

CELLS = [
    "%load_ext pyro_jitmagic",
    textwrap.dedent("""\
        from pyro.infer import SVI, Trace_ELBO
        from pyro.optim import Adam
        import models
        data = models.data()
        svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())
    """),
    "%%pyrojit --backend pyro -q\nfor _ in range(5):\n    svi.step(data)",
    "%pyrojit_cache",
    "%%pyrojit --backend pyro -q -o again\nsvi.step(data)",
    "print('compiled:', again.compile_count)",
]


def test_cache_table_renders_and_clear_empties_it_and_the_next_cell_recompiles(page, lab):
    run_notebook_in_lab(page, lab, "cache.ipynb", CELLS)

    panel = page.locator(".pyrojit-cache-panel")
    panel.wait_for(timeout=60_000)
    functions = panel.locator(".pyrojit-cache-function")
    assert functions.count() == 1
    assert "svi (Trace_ELBO, compiled by %%pyrojit as JitTrace_ELBO)" in functions.first.inner_text()
    assert "6" in functions.first.locator("table").inner_text()  # 5 + 1 hits, refreshed after the last cell
    screenshot(page, "cache-panel.png")

    panel.locator(".pyrojit-clear-all").click()
    page.wait_for_function(
        "() => document.querySelectorAll('.pyrojit-cache-panel .pyrojit-cache-function').length === 0",
        timeout=15_000)
    assert "0 compiled functions" in panel.locator(".pyrojit-cache-totals").inner_text()

    # run the last two cells again: the step compiles anew, and the table shows it
    cells = page.locator(".jp-Notebook .jp-Cell")
    cells.nth(4).locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-Cell')].at(5).innerText.includes('compiled: 1')",
        timeout=60_000)
    page.wait_for_function(
        "() => document.querySelectorAll('.pyrojit-cache-panel .pyrojit-cache-function').length === 1",
        timeout=15_000)
    errors = [e for e in page.errors if "widget" in e.lower() or "pyrojit" in e.lower()]
    assert errors == []
