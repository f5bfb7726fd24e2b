"""Records are plain data: cheap to repr, shown through the views registered for them, picklable."""

from __future__ import annotations

import pickle

from pyro_jitmagic.comparison.verdict import compare_reports
from pyro_jitmagic.records.comparison import Isolation
from pyro_jitmagic.records.report import JitReport, LossRun, MCMCRun, PosteriorSite, Step, SVIRun


def _report(steps: int) -> JitReport:
    run = SVIRun(target="svi", model="model", guide="guide", elbo="JitTrace_ELBO",
                 steps=tuple(Step(1e-3, 100.0 - i * 1e-3, True) for i in range(steps)))
    calls = LossRun(target="loss_fn", method="differentiable_loss", model="model", guide="guide",
                    elbo="JitTrace_ELBO", calls=run.steps)
    site = PosteriorSite("weights", tuple(range(1000)), (1.0,) * 1000, 500.0, 1.0)
    mcmc = MCMCRun(target="mcmc", kernel="NUTS", compiled=True, warmup_steps=10, num_samples=100,
                   setup_seconds=0.1, warmup_seconds=1.0, sampling_seconds=1.0, compile_seconds=0.05,
                   completed=True, sites=(site,))
    return JitReport(svi_runs=(run,), loss_runs=(calls,), mcmc_runs=(mcmc,))


def test_a_five_thousand_step_report_reprs_in_a_few_lines():
    report = _report(5000)
    text = repr(report)
    assert len(text) < 2000
    assert "<5000 steps in 5 s, last loss 95.001>" in text
    assert "<5000 calls in 5 s, last loss 95.001>" in text
    assert "<1000 elements: 0, 1, 2, 3, 4, 5, 6, 7, ...>" in text
    assert report.svi_runs[0].steps[4999].loss == 100.0 - 4999e-3  # the data is all there


def test_a_comparison_draws_its_plots_once_however_often_it_is_shown(monkeypatch):
    from pyro_jitmagic.display import plots as _plots

    drawn = []
    timing = _plots.timing_png
    monkeypatch.setattr(_plots, "timing_png", lambda c: drawn.append(1) or timing(c))
    comparison = compare_reports(_report(50), _report(50), Isolation((), (), ()), param_difference=0.0)
    bundles = [comparison._repr_mimebundle_() for _ in range(3)]
    assert len(drawn) == 1
    assert bundles[0]["text/html"] == bundles[2]["text/html"] and "<img" in bundles[0]["text/html"]
    # what the views kept on it is not part of the record
    again = pickle.loads(pickle.dumps(comparison))
    assert repr(again) == repr(comparison) and "_shown_kept" not in vars(again)  # (nan != nan)
