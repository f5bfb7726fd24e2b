"""``--compare`` on real inference, through the magic and its twin: state isolated by value."""

from __future__ import annotations

import models
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.optim import Adam

from pyro_jitmagic import Comparison, compiled


def test_simple_svi_runs_agree_and_the_namespace_holds_the_compiled_run(runner):
    runner.ns.update(data=models.data(50), models=models, SVI=SVI, Trace_ELBO=Trace_ELBO,
                   AutoDiagonalNormal=AutoDiagonalNormal, Adam=Adam)
    c, error = runner.compare(
        "guide = AutoDiagonalNormal(models.gaussian)\n"
        "svi = SVI(models.gaussian, guide, Adam({'lr': 0.05}), Trace_ELBO())\n"
        "losses = [svi.step(data) for _ in range(40)]\n", seed=3)

    assert error is None and isinstance(c, Comparison)
    (s,) = c.svi
    assert s.agree and s.loss_difference < 1e-5 and s.param_difference < 1e-5
    assert (s.eager.elbo, s.compiled.elbo) == ("Trace_ELBO", "JitTrace_ELBO")
    assert len(s.eager.steps) == len(s.compiled.steps) == 40
    assert s.steady_speedup is not None and s.compile_cost >= 0
    assert set(c.isolation.discarded) >= {"guide", "svi", "losses"}
    assert c.isolation.mutated == ()
    # afterwards: the compiled run's objects and results, as after one %%pyrojit cell
    assert list(runner.ns["losses"]) == list(s.compiled.losses)
    assert runner.ns["svi"].loss_and_grads.__self__.__class__ is Trace_ELBO
    final = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    with compiled(backend="pyro"):
        guide = AutoDiagonalNormal(models.gaussian)
        svi = SVI(models.gaussian, guide, Adam({"lr": 0.05}), Trace_ELBO())
        for _ in range(40):
            svi.step(runner.ns["data"])
    for name, value in pyro.get_param_store().items():
        assert torch.allclose(final[name], value.detach()), name


def test_optimizer_and_params_from_earlier_cells_are_isolated_by_value(runner):
    data = models.data(30)
    svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(5):  # an earlier cell trained it: params and Adam state exist
        svi.step(data)
    start = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    runner.ns.update(svi=svi, data=data)
    c, error = runner.compare("for _ in range(10):\n    svi.step(data)\n")

    assert error is None
    (s,) = c.svi
    # runner runs started from the same params, Adam moments and random state
    assert s.eager.losses[0] == pytest.approx(s.compiled.losses[0], rel=1e-6)
    assert s.agree
    assert "optimizer state of 1 SVI" in c.isolation.restored
    # the optimizer advanced 5 + 10 steps, not 5 + 20
    steps = [o.state_dict()["state"][0]["step"] for o in svi.optim.optim_objs.values()]
    assert steps == [15, 15]
    assert not all(torch.equal(start[k], v) for k, v in pyro.get_param_store().items())


def test_random_state_is_restored_and_in_place_mutation_is_reported(runner):
    draws = []
    runner.ns.update(draws=draws, torch=torch)
    c, error = runner.compare("draws.append(torch.rand(()).item())\nimport numpy, random\n"
                            "draws.append(numpy.random.rand())\ndraws.append(random.random())\n")

    assert error is None
    assert draws[:3] == draws[3:]  # the same numbers in runner runs
    assert c.isolation.mutated == ("draws",)
    assert "NOT isolated: draws changed in place" in str(c)


def test_a_branch_baked_into_the_trace_is_caught_by_the_sentinel_and_named(runner):
    # Pyro's trace bakes the branch on a drawn value; the sentinel's check of the first compiled step
    # finds the trace's loss is not eager's, and the rest of the run is eager: the runs agree, and both
    # the verdict and the compiled run's report say what happened, naming the line
    runner.ns.update(svi=SVI(models.branchy, models.branchy_guide, Adam({"lr": 0.05}), Trace_ELBO()),
                   data=models.data(30))
    c, error = runner.compare("for _ in range(30):\n    svi.step(data)\n", seed=0)

    assert error is None
    assert c.agree, str(c)
    (s,) = c.svi
    assert "the sentinel found a compiled step wrong" in s.reason
    assert c.compiled.sentinel_findings == 1
    assert "scale = 1.0 if loc > 0 else 2.0" in str(c)  # the risky read, named in red


def test_nuts_runs_agree(runner):
    from pyro.infer.mcmc import MCMC, NUTS

    runner.ns.update(MCMC=MCMC, NUTS=NUTS, models=models, data=models.data(50))
    c, error = runner.compare(
        "mcmc = MCMC(NUTS(models.gaussian), num_samples=60, warmup_steps=40, disable_progbar=True)\n"
        "mcmc.run(data)\n", seed=1)

    assert error is None
    (m,) = c.mcmc
    assert (m.eager.compiled, m.compiled.compiled) == (False, True)
    assert m.eager.num_samples == m.compiled.num_samples == 60
    assert {s.name for s in m.compiled.sites} == {"loc", "scale"}
    assert m.compiled.potential_evals > 60 and m.compiled.min_ess is not None
    assert m.agree, str(c)


def test_enumerated_hmm_runs_agree(runner):
    guide = AutoDiagonalNormal(pyro.poutine.block(models.hmm, expose=["trans", "emit_loc", "emit_scale"]))
    seqs = [torch.randn(n) for n in (4, 4, 6)]
    runner.ns.update(svi=SVI(models.hmm, guide, Adam({"lr": 0.01}), TraceEnum_ELBO(max_plate_nesting=1)),
                   seqs=seqs)
    c, error = runner.compare("for s in seqs:\n    svi.step(s, num_sequences=3, length=len(s))\n", seed=2)

    assert error is None
    (s,) = c.svi
    assert s.agree, str(c)
    assert c.compiled.compile_count == 2  # one trace per length


def test_an_error_in_the_eager_half_puts_everything_back(runner):
    svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.05}), Trace_ELBO())
    data = models.data(30)
    svi.step(data)
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    runner.ns.update(svi=svi, data=data, x=1)
    _c, error = runner.compare("x = 2\nsvi.step(data)\nraise KeyboardInterrupt\n")

    assert isinstance(error, KeyboardInterrupt)
    assert runner.ns["x"] == 1
    after = dict(pyro.get_param_store().items())
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k].detach())


def test_a_network_registered_with_pyro_module_starts_both_runs_from_the_same_weights(runner):
    from torch import nn

    net = nn.Sequential(nn.Linear(1, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    x = torch.randn(50, 1)
    y = 3 * x[:, 0] + 1

    def model(x, y):
        pyro.module("net", net)
        with pyro.plate("n", len(x)):
            pyro.sample("obs", pyro.distributions.Normal(net(x)[:, 0], 0.5), obs=y)

    def guide(x, y):
        pass

    weight, running_mean = net[0].weight, net[1].running_mean
    before = {k: v.clone() for k, v in net.state_dict().items()}
    runner.ns.update(svi=SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO()), x=x, y=y)
    c, error = runner.compare("for _ in range(30):\n    svi.step(x, y)\n", seed=0)

    assert error is None
    (s,) = c.svi
    assert s.eager.losses[:3] == pytest.approx(s.compiled.losses[:3], rel=1e-5)
    assert c.outcome == "agree", c.outcome_reason
    assert any("weights and buffers" in r for r in c.isolation.restored)
    # the same tensor objects, trained once (by the compiled run), buffers included
    assert net[0].weight is weight and net[1].running_mean is running_mean
    assert pyro.get_param_store()["net$$$0.weight"] is weight
    pyro.clear_param_store()
    net.load_state_dict(before)
    pyro.set_rng_seed(0)
    with compiled(backend="pyro"):
        svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
        once = [svi.step(x, y) for _ in range(30)]
    assert once == pytest.approx(list(s.compiled.losses), rel=1e-5)


def test_a_torch_optimizer_from_an_earlier_cell_is_restored_into_the_same_object(runner):
    w = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.1)
    target = torch.tensor([1.0, -2.0, 3.0])
    runner.ns.update(w=w, opt=opt, target=target, torch=torch)
    _c, error = runner.compare(
        "for _ in range(20):\n"
        "    opt.zero_grad()\n"
        "    ((w - target) ** 2).sum().backward()\n"
        "    opt.step()\n")

    assert error is None
    assert runner.ns["opt"] is opt and opt.state_dict()["state"][0]["step"] == 20  # not 40
    fresh = torch.zeros(3, requires_grad=True)
    again = torch.optim.Adam([fresh], lr=0.1)
    for _ in range(20):
        again.zero_grad()
        ((fresh - target) ** 2).sum().backward()
        again.step()
    assert torch.equal(w.detach(), fresh.detach())


def test_keyword_values_pyro_hashes_by_value_are_keyed_and_managed(runner):
    import argparse

    def model(data, args=None, settings=None):
        models.gaussian(data)

    def guide(data, args=None, settings=None):
        models.gaussian_guide(data)

    runner.ns.update(svi=SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO()), data=models.data(30),
                     args=argparse.Namespace(hidden=3), settings={"n": [1, 2]})
    c, error = runner.compare("for _ in range(20):\n    svi.step(data, args=args, settings=settings)\n",
                              seed=0)

    assert error is None
    assert c.outcome == "agree", c.outcome_reason
    (compilation,) = c.compiled.compilations
    assert compilation.key.startswith("1 positional arg, args=") and "hidden=3" in compilation.key
    assert "settings=" in compilation.key


def test_params_drawn_at_random_on_the_first_step_draw_the_same_in_both_runs(runner):
    def guide(data):
        loc = pyro.param("m", lambda: torch.randn(()))
        pyro.sample("loc", pyro.distributions.Normal(loc, 1.0))
        pyro.sample("scale", pyro.distributions.LogNormal(pyro.param("s", lambda: torch.randn(())), 0.5))

    runner.ns.update(svi=SVI(models.gaussian, guide, Adam({"lr": 0.05}), Trace_ELBO()), data=models.data(30))
    c, error = runner.compare("for _ in range(30):\n    svi.step(data)\n", seed=0)

    assert error is None
    (s,) = c.svi
    assert s.loss_difference < 1e-5
    assert c.outcome == "agree", c.outcome_reason


def test_a_random_draw_the_trace_drops_is_judged_within_noise_and_said(runner):
    def guide(data):
        loc = pyro.param("m", torch.randn(()))  # drawn on every call, used on the first only
        pyro.sample("loc", pyro.distributions.Normal(loc, 1.0))
        pyro.sample("scale", pyro.distributions.LogNormal(pyro.param("s", torch.tensor(0.0)), 0.5))

    runner.ns.update(svi=SVI(models.gaussian, guide, Adam({"lr": 0.05}), Trace_ELBO()), data=models.data(30))
    c, error = runner.compare("for _ in range(60):\n    svi.step(data)\n", seed=0)

    assert error is None
    assert c.outcome == "agree within noise", c.outcome_reason
    assert "draws fewer random numbers" in c.outcome_reason
    assert c.verdict.endswith("results agree within noise")
    assert any("draws fewer random numbers" in n for n in c.compiled.notes)


def test_a_hand_written_loop_with_a_torch_optimizer_is_compared_step_by_step(runner):
    from pyro.infer.autoguide import AutoNormal

    guide = AutoNormal(models.gaussian)
    data = models.data(30)
    guide(data)
    opt = torch.optim.Adam(guide.parameters(), lr=0.01)
    runner.ns.update(guide=guide, opt=opt, data=data, models=models,
                     loss_fn=Trace_ELBO().differentiable_loss)
    c, error = runner.compare(
        "for _ in range(40):\n"
        "    opt.zero_grad()\n"
        "    loss = loss_fn(models.gaussian, guide, data)\n"
        "    loss.backward()\n"
        "    opt.step()\n", seed=0)

    assert error is None
    (s,) = c.svi
    assert s.target == "loss_fn" and s.compiled.elbo.startswith("Jit")
    assert c.outcome == "agree", c.outcome_reason
    assert any("torch optimizer" in r for r in c.isolation.restored)
    assert opt.state_dict()["state"][0]["step"] == 40  # the compiled run's steps only
