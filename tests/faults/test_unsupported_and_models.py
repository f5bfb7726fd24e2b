"""Inference the JIT does not apply to, and models that trace badly: each runs correctly, never wrong."""

from __future__ import annotations

import models
import pyro
import pyro.distributions as dist
import pytest
import torch
from patches import assert_nothing_patched
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.optim import Adam

from pyro_jitmagic import compare, compiled


def test_evaluate_loss_and_predictive_run_eager_with_a_note(runner, patched_targets):
    guide = AutoDiagonalNormal(models.gaussian)
    runner.ns.update(svi=SVI(models.gaussian, guide, Adam({"lr": 0.01}), Trace_ELBO()),
                     data=models.data(), Predictive=Predictive, models=models, guide=guide)
    report, error = runner.run(
        "svi.step(data)\n"
        "value = svi.evaluate_loss(data)\n"
        "draws = Predictive(models.gaussian, guide=guide, num_samples=5)(data)\n")

    assert error is None
    assert isinstance(runner.ns["value"], float)
    assert runner.ns["draws"]["obs"].shape == (5, 20)
    assert "SVI.evaluate_loss ran eager: Pyro compiles only the steps' loss_and_grads" in report.notes
    assert any(n.startswith("Predictive ran eager") for n in report.notes)
    assert_nothing_patched(patched_targets)


def test_mcmc_with_two_chains_runs_correctly():
    from pyro.infer.mcmc import MCMC, NUTS

    # With fewer CPUs than chains Pyro draws them one after the other in this
    # process (and compiles each); with more it uses worker processes (eager).
    mcmc = MCMC(NUTS(models.gaussian), num_samples=10, warmup_steps=10, num_chains=2,
                disable_progbar=True)
    with compiled(backend="pyro") as run:
        mcmc.run(models.data())
    assert mcmc.get_samples(group_by_chain=True)["loc"].shape == (2, 10)
    (switch,) = run.report.switches
    assert switch.compiled == (type(mcmc.sampler).__name__ != "_MultiSampler")


def test_a_side_effect_in_a_model_that_the_trace_reads_keeps_the_model_eager():
    calls = {"n": 0}

    def counting(data):
        calls["n"] += 1  # Python: a trace would run it only while compiling
        models.gaussian(data)

    svi = SVI(counting, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())
    data = models.data()
    with compiled(backend="pyro") as run:
        for _ in range(20):
            svi.step(data)
    # the trace read calls["n"]: each step finds it changed, traces again, and once it keeps changing
    # (as torch.compile's guards do) the steps run eager: the counter counts every step, as in eager
    (storm,) = [g for g in run.report.guards if "kept tracing again" in g]
    assert "closure variable calls kept changing" in storm
    assert calls["n"] >= 20


def test_check_trace_fails_in_pyro_so_the_steps_run_eager_and_say_what_to_do(runner, patched_targets):
    # Pyro's compiled ELBOs assert that they trace the param store's own tensors; torch's check_trace
    # re-runs the trace on copies (a bare AssertionError from Pyro, hand-written JitTrace_ELBO
    # included): the step is Pyro's eager first run, and the rest run eager, saying why
    elbo = Trace_ELBO(jit_options={"check_trace": True})
    runner.ns.update(svi=SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), elbo),
                     data=models.data())
    report, error = runner.run("svi.step(data)\nsvi.step(data)")

    assert error is None
    (switch,) = report.switches
    assert not switch.compiled and "remove check_trace" in switch.reason
    assert elbo.jit_options == {"check_trace": True}  # the user's setting, kept as given
    assert_nothing_patched(patched_targets)


def test_a_keyword_tensor_changing_every_step_runs_eager_and_stays_correct():
    def model(data, shift=None):
        models.gaussian(data + shift)

    def guide(data, shift=None):
        models.gaussian_guide(data)

    data = models.data()
    shifts = [torch.tensor(0.1 * i) for i in range(10)]

    def train():
        svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
        return [svi.step(data, shift=s) for s in shifts]

    c = compare(train, seed=0, backend="pyro")
    assert c.agree  # never wrong
    assert any("the keyword argument shift is a tensor" in g for g in c.compiled.guards)


@pytest.mark.parametrize("auto", [False, True])
@pytest.mark.parametrize("scale_site", ["scale", "<img src=x onerror=alert(1)>"])
def test_hostile_site_and_keyword_names_are_escaped_everywhere(runner, scale_site, auto):
    def model(data, tag="</script><script>alert(1)</script>"):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        scale = pyro.sample(scale_site, dist.LogNormal(0.0, 3.0))
        with pyro.plate("data", data.size(0)):
            pyro.sample("obs", dist.Normal(loc, scale), obs=data)

    def guide(data, tag=""):
        pyro.sample("loc", dist.Normal(pyro.param("q_loc", torch.tensor(0.0)), 1.0))
        pyro.sample(scale_site, dist.LogNormal(pyro.param("<b>q</b>", torch.tensor(0.0)), 0.5))

    runner.ns.update(svi=SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO()), data=models.data())
    report, error = runner.run("svi.step(data, tag='</script><script>alert(1)</script>')", auto=auto)

    assert error is None
    html = report._repr_html_()
    assert "<script>" not in html and "</script><script>" not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the cache key, escaped
    from pyro_jitmagic.inspector import Inspector
    from pyro_jitmagic.run.process import PROCESS

    snapshot = Inspector(PROCESS.session).snapshot({"svi": runner.ns["svi"]})
    cache_html = snapshot._repr_html_()
    assert "<script>" not in cache_html and "<b>q</b>" not in cache_html
