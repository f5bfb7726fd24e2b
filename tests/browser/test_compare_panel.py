"""The ``--compare`` panel in JupyterLab, in a real (headless) Chromium."""

from __future__ import annotations

import textwrap

from lab_driver import run_notebook_in_lab, screenshot

SETUP = textwrap.dedent("""
    import pyro, torch
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoDiagonalNormal
    from pyro.optim import Adam
    import models
    data = models.data(50)

    def hostile(data):
        loc = pyro.sample("loc", dist.Normal(0., 1.))
        scale = 1.0 if loc > 0 and "<img src=x onerror=window.__pyrojit_xss=1></script>" else 2.0
        with pyro.plate("d", data.size(0)):
            pyro.sample("obs", dist.Normal(loc, scale), obs=data)
""")

COMPARE = textwrap.dedent("""\
    %%pyrojit --compare --auto --seed 0
    svi = SVI(models.gaussian, AutoDiagonalNormal(models.gaussian), Adam({"lr": 0.05}), Trace_ELBO())
    for step in range(60):
        svi.step(data)
""")

HOSTILE = textwrap.dedent("""\
    %%pyrojit --backend pyro --compare --seed 0
    bad = SVI(hostile, models.branchy_guide, Adam({"lr": 0.05}), Trace_ELBO())
    for step in range(30):
        bad.step(data)
""")


def _own_errors(errors: list[str]) -> list[str]:
    # The page may log unrelated network noise (no internet here); ours mention widgets or the panel.
    return [e for e in errors if any(k in e.lower() for k in ("widget", "pyrojit", "model", "uncaught"))]


def test_compare_panel_renders_and_each_tab_shows_its_content(page, lab):
    run_notebook_in_lab(page, lab, "compare.ipynb", ["%load_ext pyro_jitmagic", SETUP, COMPARE, HOSTILE])

    panels = page.locator(".pyrojit-panel")
    panels.first.wait_for(timeout=60_000)
    assert panels.count() == 2
    outputs = page.locator(".jp-OutputArea").all_inner_texts()
    joined = "\n".join(outputs)
    assert "Loading widget" not in joined
    assert "Error displaying widget" not in joined

    first = panels.nth(0)
    assert "results agree" in first.locator(".pyrojit-verdict").inner_text()
    expected = {
        "Timing": ("pyrojit-tab-timing", "median step"),
        "Agreement": ("pyrojit-tab-agreement", "losses agree"),
        "Warnings": ("pyrojit-tab-warnings", "benign"),
        "Changes": ("pyrojit-tab-changes", "Trace_ELBO → JitTrace_ELBO"),
        "Cache": ("pyrojit-cache-panel", "compiled by %%pyrojit as JitTrace_ELBO"),
    }
    for title, (css, text) in expected.items():
        first.locator(".lm-TabBar-tab", has_text=title).click()
        content = first.locator(f".{css}")
        content.wait_for(state="visible", timeout=10_000)
        assert text in content.inner_text(), title
        if title == "Timing":
            assert content.locator("img").count() == 1  # the step-time plot
            # --auto's decision: the key ran eager for its first steps, then compiled
            auto = content.locator(".pyrojit-auto")
            assert "1 positional arg" in auto.inner_text()
            assert "against compiling every key on its first step" in content.inner_text()
    first.locator(".lm-TabBar-tab", has_text="Timing").click()
    shot = screenshot(page, "compare-panel.png")
    assert shot.stat().st_size > 10_000

    second = panels.nth(1)
    # Pyro's trace bakes the branch on a drawn value; the sentinel's first check found it and the
    # steps ran eager from there, so the runs agree and the Agreement tab says what happened
    assert "results agree" in second.locator(".pyrojit-verdict").inner_text()
    second.locator(".lm-TabBar-tab", has_text="Agreement").click()
    agreement = second.locator(".pyrojit-tab-agreement")
    agreement.wait_for(state="visible", timeout=10_000)
    assert "the sentinel found its trace wrong" in agreement.inner_text()
    second.locator(".lm-TabBar-tab", has_text="Warnings").click()
    warnings_tab = second.locator(".pyrojit-tab-warnings")
    warnings_tab.wait_for(state="visible", timeout=10_000)
    assert "<img src=x onerror=window.__pyrojit_xss=1></script>" in warnings_tab.inner_text()  # as text
    assert page.evaluate("window.__pyrojit_xss") is None  # and never run
    assert _own_errors(page.errors) == []
