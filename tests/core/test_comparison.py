"""The comparison's figures, from made-up records (fake clocks, no inference run)."""

from __future__ import annotations

import math

import pytest

from pyro_jitmagic.comparison.verdict import (
    break_even,
    compare_mcmc,
    compare_reports,
    compare_svi,
    relative_difference,
)
from pyro_jitmagic.records.comparison import Isolation
from pyro_jitmagic.records.report import JitReport, MCMCRun, PosteriorSite, Step, SVIRun, compile_cost

MS = 1e-3


def svi_run(times_ms, losses=None, traced=(), target="svi"):
    losses = losses or [100.0 - i for i in range(len(times_ms))]
    steps = tuple(Step(t * MS, loss, True, t * MS if i in traced else 0.0)
                  for i, (t, loss) in enumerate(zip(times_ms, losses, strict=True)))
    return SVIRun(target=target, model="model", guide="guide", elbo="Trace_ELBO", steps=steps)


def mcmc_run(mean, sd, ess, setup=0.01, sampling=1.0):
    return MCMCRun(target="mcmc", kernel="NUTS", compiled=True, warmup_steps=10, num_samples=100,
                   setup_seconds=setup, warmup_seconds=0.5, sampling_seconds=sampling,
                   compile_seconds=0.0, completed=True, potential_evals=500,
                   sites=(PosteriorSite("loc", (mean,), (sd,), ess, 1.0),))


def test_compile_cost_counts_the_traced_step_and_the_re_optimising_ones_after_it():
    # steady 1 ms; trace step 50 ms, then the executor re-optimises for two calls
    times = [50, 9, 4] + [1] * 97
    cost = compile_cost([t * MS for t in times], [True] + [False] * 99)
    assert cost == pytest.approx((49 + 8 + 3) * MS)


def test_compile_cost_window_ends_after_ten_steps():
    times = [20] + [1] * 20 + [30] + [1] * 10  # a noise spike far from the trace is not compile cost
    cost = compile_cost([t * MS for t in times], [True] + [False] * 31)
    assert cost == pytest.approx(19 * MS)


def test_break_even_is_the_step_from_which_compiled_stays_ahead():
    eager = [2.0] * 10
    compiled = [7.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    # totals: eager 2,4,6,8,10,12; compiled 7,8,9,10,11,12 -> equal at step 6
    assert break_even(eager, compiled) == 6
    assert break_even([1.0] * 3, [5.0, 1.0, 1.0]) is None
    assert break_even([], []) is None


def test_svi_comparison_figures():
    eager = svi_run([2.0] * 100)
    compiled = svi_run([41.0] + [1.0] * 99, traced={0})
    c = compare_svi(eager, compiled, param_difference=0.0)

    assert c.steady_speedup == pytest.approx(2.0)
    assert c.speedup == pytest.approx(200 / 140)
    assert c.compile_cost == pytest.approx(40 * MS)
    assert c.break_even_step == 40  # 41 + 39 = 80 = 2 * 40
    assert c.projected_break_even_step is None
    assert c.loss_difference == 0.0 and c.agree


def test_not_yet_ahead_projects_where_it_would_be():
    c = compare_svi(svi_run([2.0] * 10), svi_run([41.0] + [1.0] * 9, traced={0}))
    assert c.break_even_step is None
    # behind by 50 - 20 = 30 ms after 10 steps, gaining 1 ms a step
    assert c.projected_break_even_step == 40


def test_losses_that_differ_beyond_tolerance_disagree():
    eager = svi_run([1.0] * 3, losses=[100.0, 90.0, 80.0])
    compiled = svi_run([1.0] * 3, losses=[100.0, 95.0, 80.0])
    c = compare_svi(eager, compiled, param_difference=0.0)
    assert c.loss_difference == pytest.approx(5 / 95)
    assert not c.agree


def test_relative_difference():
    assert relative_difference([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert relative_difference([1.0, 0.0], [1.1, 0.0]) == pytest.approx(0.1 / 1.1)
    assert relative_difference([0.0], [1e-9]) == 1.0
    assert math.isnan(relative_difference([], []))
    assert relative_difference([float("nan")], [1.0]) == math.inf


def test_mcmc_agreement_in_monte_carlo_standard_errors():
    same = compare_mcmc(mcmc_run(0.50, 1.0, 100), mcmc_run(0.55, 1.0, 100, sampling=0.5))
    assert same.mean_difference_sd == pytest.approx(0.05)
    assert same.mean_difference_z == pytest.approx(0.05 / math.sqrt(2 / 100))
    assert same.agree
    assert same.sampling_speedup == pytest.approx(2.0)

    shifted = compare_mcmc(mcmc_run(0.5, 1.0, 100), mcmc_run(2.5, 1.0, 100))
    assert shifted.mean_difference_sd == pytest.approx(2.0)
    assert not shifted.agree


def test_runs_are_paired_by_name_and_order_and_the_verdict_says_it_in_one_line():
    eager = JitReport(svi_runs=(svi_run([2.0] * 100),))
    compiled = JitReport(svi_runs=(svi_run([41.0] + [1.0] * 99, traced={0}),))
    c = compare_reports(eager, compiled, Isolation(("Pyro param store",), (), ()), param_difference=0.0)

    assert c.verdict == "compiled 2x faster per step, ahead after 40 steps, results agree"
    text = str(c)
    assert text.splitlines()[0] == f"pyrojit --compare: {c.verdict}"
    assert "compile cost" in text and "40 ms" in text


def test_disagreement_names_the_risky_warning():
    from pyro_jitmagic.records.report import CapturedWarning

    risky = CapturedWarning("risky", "TracerWarning", "Converting a tensor to a Python boolean",
                            "cell In[4], line 3", "if loc > 0:", 1)
    eager = JitReport(svi_runs=(svi_run([1.0] * 3, losses=[10.0, 9.0, 8.0]),))
    compiled = JitReport(svi_runs=(svi_run([1.0] * 3, losses=[10.0, 7.0, 8.0]),), warnings=(risky,))
    c = compare_reports(eager, compiled, Isolation((), (), ("losses",)), param_difference=0.0)

    assert c.verdict.endswith("RESULTS DISAGREE")
    text = str(c)
    assert "a risky JIT warning explains it" in text and "cell In[4], line 3: if loc > 0:" in text
    assert "NOT isolated: losses changed in place" in text


def test_a_ten_thousand_step_panel_stays_light():
    from pyro_jitmagic.display import panel as _panel
    from pyro_jitmagic.display import plots as _plots

    xs, ys = _plots.downsample(list(range(10_000)))
    assert len(xs) == len(ys) == _plots.MAX_POINTS
    eager = JitReport(svi_runs=(svi_run([2.0] * 10_000),))
    compiled = JitReport(svi_runs=(svi_run([41.0] + [1.0] * 9_999, traced={0}),))
    c = compare_reports(eager, compiled, Isolation((), (), ()), param_difference=0.0)
    bundle = _panel.comparison_bundle(c, widget=False)
    assert len(bundle["text/html"]) < 400_000
    assert {"text/plain", "text/html"} <= set(bundle)


def test_without_ipywidgets_the_panel_is_html_and_text_with_one_warning(monkeypatch):
    import sys
    import warnings

    from pyro_jitmagic.display import panel as _panel

    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # "import ipywidgets" now fails
    c = compare_reports(JitReport(svi_runs=(svi_run([2.0] * 20),)),
                        JitReport(svi_runs=(svi_run([41.0] + [1.0] * 19, traced={0}),)),
                        Isolation((), (), ()), param_difference=0.0)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        bundles = [_panel.comparison_bundle(c) for _ in range(3)]
    assert all(set(b) == {"text/plain", "text/html"} for b in bundles)
    assert bundles[0]["text/plain"].startswith("pyrojit --compare: compiled 2x faster per step")
    assert "<h4>Timing</h4>" in bundles[0]["text/html"] and "<img" in bundles[0]["text/html"]
    missing = [w for w in shown if "ipywidgets is not installed" in str(w.message)]
    assert len(missing) == 1


# -- the verdict's three outcomes, from made-up runs ------------------------------------
def noisy_losses(n, level=100.0, noise=5.0, seed=0, shift=0.0):
    import random

    rng = random.Random(seed)
    return [level + shift + rng.gauss(0.0, noise) for _ in range(n)]


def test_the_same_losses_step_by_step_agree_and_say_so():
    c = compare_svi(svi_run([1.0] * 50, noisy_losses(50)), svi_run([1.0] * 50, noisy_losses(50)),
                    param_difference=0.0)
    assert c.outcome == "agree" and c.agree
    assert c.reason.startswith("the same losses step by step over 50 steps")


def test_a_step_that_computes_another_loss_from_the_same_state_disagrees_at_once():
    eager = noisy_losses(50)
    compiled = [*eager[:7], eager[7] * 1.2, *eager[8:]]
    c = compare_svi(svi_run([1.0] * 50, eager), svi_run([1.0] * 50, compiled), param_difference=0.0)
    assert c.outcome == "disagree" and not c.agree
    assert c.reason.startswith("step 8 computed another loss from the same params and random draws")


def test_float_rounding_that_grows_until_the_runs_part_is_judged_within_noise():
    eager = noisy_losses(200)
    # relative differences grow from 1e-7 by half a step as rounding is amplified, then the runs part
    compiled = [x * (1 + 1e-7 * 1.5 ** i) for i, x in enumerate(eager[:40])] + noisy_losses(160, seed=1)
    c = compare_svi(svi_run([1.0] * 200, eager), svi_run([1.0] * 200, compiled), param_difference=0.2,
                    param_spread=1.5)
    assert c.outcome == "agree within noise" and c.agree
    assert "then parted as float rounding grew" in c.reason
    assert "within noise" in c.reason and "1.5 times their spread" in c.reason


def test_runs_whose_draws_part_are_judged_on_the_loss_level_against_its_noise():
    import dataclasses

    eager = svi_run([1.0] * 200, noisy_losses(200, seed=0))
    same_level = dataclasses.replace(svi_run([1.0] * 200, noisy_losses(200, seed=1)),
                                     diverges="an unused draw")
    c = compare_svi(eager, same_level)
    assert c.outcome == "agree within noise", c.reason
    assert c.reason.startswith("an unused draw; over the last 50 steps the mean loss is")

    shifted = dataclasses.replace(svi_run([1.0] * 200, noisy_losses(200, seed=1, shift=20.0)),
                                  diverges="an unused draw")
    c = compare_svi(eager, shifted)
    assert c.outcome == "disagree", c.reason
    assert "more than noise explains" in c.reason


def test_a_level_that_still_moves_at_the_end_allows_for_the_movement():
    import dataclasses

    eager = [1000.0 - 4 * i for i in range(100)]  # still descending
    compiled = [1000.0 - 4 * (i + 5) for i in range(100)]  # five steps ahead on the same path
    c = compare_svi(svi_run([1.0] * 100, eager),
                    dataclasses.replace(svi_run([1.0] * 100, compiled), diverges="a NUTS path"))
    assert c.outcome == "agree within noise", c.reason


def test_too_few_steps_to_judge_beyond_noise_are_said_as_such():
    import dataclasses

    c = compare_svi(svi_run([1.0] * 5, [5.0, 4.0, 3.0, 2.0, 1.0]),
                    dataclasses.replace(svi_run([1.0] * 5, [9.0, 7.0, 3.0, 2.0, 1.0]), diverges="x"))
    assert c.outcome == "agree within noise"
    assert "too few steps (5)" in c.reason


def test_mcmc_outcomes():
    assert compare_mcmc(mcmc_run(0.5, 1.0, 100), mcmc_run(0.5, 1.0, 100)).outcome == "agree"
    close = compare_mcmc(mcmc_run(0.50, 1.0, 100), mcmc_run(0.55, 1.0, 100))
    assert close.outcome == "agree within noise" and "paths part" in close.reason
    far = compare_mcmc(mcmc_run(0.5, 1.0, 100), mcmc_run(2.5, 1.0, 100))
    assert far.outcome == "disagree" and "more than the 5" in far.reason


def test_the_worst_outcome_is_the_comparisons_and_named_with_its_target():
    import dataclasses

    from pyro_jitmagic.records.report import Switch

    eager = JitReport(svi_runs=(svi_run([1.0] * 50, noisy_losses(50), target="a"),
                                svi_run([1.0] * 50, noisy_losses(50), target="b")))
    compiled = JitReport(
        svi_runs=(svi_run([1.0] * 50, noisy_losses(50), target="a"),
                  dataclasses.replace(svi_run([1.0] * 50, noisy_losses(50, seed=3), target="b"),
                                      diverges="an unused draw")),
        switches=tuple(Switch(t, "Trace_ELBO", "JitTrace_ELBO", True) for t in "ab"))
    c = compare_reports(eager, compiled, Isolation((), (), ()), param_difference=0.0)
    assert c.outcome == "agree within noise" and c.agree
    assert c.outcome_reason.startswith("b: an unused draw;")
    assert c.verdict.endswith("results agree within noise")


def test_two_eager_runs_say_nothing_was_compiled():
    from pyro_jitmagic.records.report import Switch

    eager = JitReport(svi_runs=(svi_run([1.0] * 20),))
    compiled = JitReport(svi_runs=(svi_run([1.2] * 20),),
                         switches=(Switch("svi", "RenyiELBO", "RenyiELBO", False,
                                          "RenyiELBO has no JIT counterpart in Pyro"),))
    c = compare_reports(eager, compiled, Isolation((), (), ()), param_difference=0.0)
    assert not c.compiled_anything
    assert c.verdict == ("nothing was compiled (svi: RenyiELBO has no JIT counterpart in Pyro): "
                         "both runs ran eager")
    assert "slower" not in str(c).splitlines()[0]
