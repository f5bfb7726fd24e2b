"""What real Pyro examples meet beyond the tutorial: Pyro's own limits, new shapes, floats,
potentials from initialize_model, and --compare of a cell that compiles nothing."""

from __future__ import annotations

import models
import pyro
import pyro.distributions as dist
import pytest
import torch
from models import COINS, coin_guide, coin_model  # a decaying-average baseline
from patches import assert_nothing_patched
from pyro.infer import SVI, JitTraceGraph_ELBO, Trace_ELBO, TraceGraph_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.mcmc import MCMC, NUTS
from pyro.infer.mcmc.util import initialize_model
from pyro.optim import Adam


def test_tracegraph_with_a_decaying_baseline_runs_eager_as_pyro_cannot_compile_it(runner, patched_targets):
    # Pyro's own JIT fails on it
    by_hand = SVI(coin_model, coin_guide, Adam({"lr": 0.05}), JitTraceGraph_ELBO())
    with pytest.raises(RuntimeError, match="requires grad as a constant"):
        by_hand.step(COINS)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    eager = SVI(coin_model, coin_guide, Adam({"lr": 0.05}), TraceGraph_ELBO())
    expected = [eager.step(COINS) for _ in range(10)]

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(coin_model, coin_guide, Adam({"lr": 0.05}), TraceGraph_ELBO())
    runner.ns.update(svi=svi, COINS=COINS)
    report, error = runner.run("losses = [svi.step(COINS) for _ in range(10)]")

    assert error is None
    (switch,) = report.switches
    assert not switch.compiled and "decaying-average baseline" in switch.reason
    assert "fails on it too" in switch.reason
    assert runner.ns["losses"] == pytest.approx(expected, rel=1e-6)  # the same steps as eager
    assert report.compile_count == 0 and report.risky_warnings == ()
    assert_nothing_patched(patched_targets)
    report, error = runner.run("svi.step(COINS)")  # a later cell knows at once
    assert error is None and not report.switches[0].compiled and report.compile_count == 0


def sequence_model(seq, anneal):
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.poutine.scale(scale=anneal):
        for t in range(seq.shape[0]):
            pyro.sample(f"y_{t}", dist.Normal(loc, 1.0), obs=seq[t])


@pytest.fixture
def sequence_svi():
    return SVI(sequence_model, AutoNormal(sequence_model), Adam({"lr": 0.05}), Trace_ELBO())


def _eager_losses(cell, **names):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    namespace = {"svi": SVI(sequence_model, AutoNormal(sequence_model), Adam({"lr": 0.05}), Trace_ELBO()),
                 "torch": torch, **names}
    exec(cell, namespace)
    return namespace["losses"]


NEW_SHAPE = ("one = torch.tensor(1.0)\n"
             "losses = [svi.step(torch.ones(6), one), svi.step(torch.ones(6), one),\n"
             "          svi.step(torch.ones(4), one), svi.step(torch.ones(4), one)]\n")


def test_a_new_shape_under_a_key_pyro_reuses_is_traced_again_and_says_what_changed(runner, sequence_svi):
    # Pyro keys its traces on the number of positional arguments, never on their shapes: a trace is
    # used only while its arguments are laid out as it assumed, and a new shape traces again
    expected = _eager_losses(NEW_SHAPE)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    runner.ns.update(svi=sequence_svi, torch=torch)
    report, error = runner.run(NEW_SHAPE)

    assert error is None
    assert runner.ns["losses"] == pytest.approx(expected, rel=1e-6)
    (changed,) = [g for g in report.guards if "traced again" in g]
    assert "positional argument 1 shape (6,) -> shape (4,)" in changed


def test_a_float_argument_runs_eager_with_advice_where_a_tensor_was_traced_or_not(runner, sequence_svi):
    cell = "losses = [svi.step(torch.ones(6), 0.5), svi.step(torch.ones(6), 0.5)]\n"
    expected = _eager_losses(cell)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    runner.ns.update(svi=sequence_svi, torch=torch)
    report, error = runner.run(cell)
    assert error is None and runner.ns["losses"] == pytest.approx(expected, rel=1e-6)
    assert any("pass torch.tensor(0.5) instead" in g and "ran eager" in g for g in report.guards)

    # the same float at a key traced with a tensor there: traced again, which Pyro's JIT cannot
    report, error = runner.run("losses = [svi.step(torch.ones(6), torch.tensor(1.0)), "
                               "svi.step(torch.ones(6), 0.25)]\n")
    assert error is None
    assert any("pass torch.tensor(0.25) instead" in g for g in report.guards)


def test_the_float_advice_and_the_recompilation_watch_say_the_same(runner):
    from pyro_jitmagic.compilers.pyro.caches import changing_keyword
    from pyro_jitmagic.run.advice import advise

    watch = changing_keyword((1, (("anneal", 0.5),)), (1, (("anneal", 0.6),)), {"anneal": 0.6})
    advice = advise(RuntimeError("Type 'float' cannot be traced"), (torch.ones(1), 0.6), {})
    assert "tensor positionally" in watch and "pass torch.tensor(0.6) instead" in advice


def gaussian_data():
    return models.data(30)


def test_a_potential_built_by_initialize_model_in_the_cell_is_compiled(runner, patched_targets):
    runner.ns.update(torch=torch, initialize_model=initialize_model, MCMC=MCMC, NUTS=NUTS, models=models,
                     data=gaussian_data())
    report, error = runner.run(
        "init, potential, transforms, _ = initialize_model(models.gaussian, (data,))\n"
        "mcmc = MCMC(NUTS(potential_fn=potential), num_samples=20, warmup_steps=20, initial_params=init,\n"
        "            disable_progbar=True)\n"
        "mcmc.run()\n")

    assert error is None
    (switch,) = report.switches
    assert switch.compiled and "initialize_model" in switch.after
    assert [(c.owner, c.key) for c in report.compilations] == [("initialize_model", "potential energy")]
    assert_nothing_patched(patched_targets)
    # outside the cell the potential is eager again, as written
    potential = runner.ns["potential"]
    maker = potential.maker
    compiled_fn = maker._compiled_fn
    maker._compiled_fn = None
    potential(runner.ns["init"])
    assert maker._compiled_fn is None
    maker._compiled_fn = compiled_fn


def test_a_potential_from_initialize_model_in_an_earlier_cell_says_how_to_compile_it(runner):
    init, potential, _, _ = initialize_model(models.gaussian, (gaussian_data(),))
    runner.ns.update(MCMC=MCMC, NUTS=NUTS, init=init, potential=potential, torch=torch)
    report, error = runner.run("MCMC(NUTS(potential_fn=potential), num_samples=5, warmup_steps=5,\n"
                               "     initial_params=init, disable_progbar=True).run()\n")
    assert error is None
    (switch,) = report.switches
    assert not switch.compiled
    assert "initialize_model without jit_compile=True" in switch.reason and "inside the %%pyrojit cell" \
        in switch.reason

    report, error = runner.run("MCMC(NUTS(potential_fn=lambda p: (p['x'] ** 2).sum()), num_samples=5,\n"
                               "     warmup_steps=5, initial_params={'x': torch.zeros(2)},\n"
                               "     disable_progbar=True).run()\n")
    assert error is None and "a potential_fn of your own" in report.switches[0].reason


def test_compare_of_two_eager_runs_says_nothing_was_compiled(runner):
    from pyro.infer import RenyiELBO

    runner.ns.update(svi=SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.05}), RenyiELBO()),
                     data=gaussian_data())
    c, error = runner.compare("for _ in range(10):\n    svi.step(data)\n", seed=0)

    assert error is None
    assert c.verdict.startswith("nothing was compiled (svi: RenyiELBO has no JIT counterpart")
    assert "faster" not in c.verdict and "slower" not in c.verdict
    assert c.outcome == "agree"
