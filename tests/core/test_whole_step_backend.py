"""``--backend step``: whole SVI steps and HMC/NUTS potentials compiled as one graph, through the
magic and its twin. (Inductor compiles take seconds to minutes: they are in tests/wholestep, slow.)"""

from __future__ import annotations

import models
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, RenyiELBO, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.mcmc import MCMC, NUTS
from pyro.optim import SGD, Adam, ClippedAdam

import pyro_jitmagic
import pyro_jitmagic.run.process
from pyro_jitmagic import RunOptions, compiled

STEPS = 60


def _svi(optim=None):
    guide = AutoNormal(models.gaussian)
    return SVI(models.gaussian, guide, optim or Adam({"lr": 0.05}), Trace_ELBO())


def _eager(optim_maker, data, steps=STEPS):
    pyro.clear_param_store()
    pyro.set_rng_seed(7)
    svi = _svi(optim_maker())
    losses = [svi.step(data) for _ in range(steps)]
    store = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    return losses, store, svi.optim.get_state()


OPTIMIZERS = {"Adam": lambda: Adam({"lr": 0.05}), "SGD-momentum": lambda: SGD({"lr": 0.001, "momentum": 0.9}),
              "ClippedAdam": lambda: ClippedAdam({"lr": 0.05, "lrd": 0.999})}


@pytest.mark.parametrize("optim_maker", list(OPTIMIZERS.values()), ids=list(OPTIMIZERS))
def test_steps_params_and_optimizer_state_are_eagers(runner, optim_maker):
    data = models.data(50)
    losses, store, state = _eager(optim_maker, data)
    pyro.clear_param_store()
    pyro.set_rng_seed(7)
    runner.ns.update(svi=_svi(optim_maker()), data=data, STEPS=STEPS)
    report, error = runner.run("losses = [svi.step(data) for _ in range(STEPS)]\n", backend="step")

    assert error is None
    (switch,) = report.switches
    assert switch.compiled and switch.after == "Trace_ELBO, whole step (step)"
    assert [c.key for c in report.compilations] == ["1 positional arg"]
    compiled_losses = runner.ns["losses"]
    assert all(isinstance(x, float) for x in compiled_losses)
    assert compiled_losses == pytest.approx(losses, rel=1e-4)
    for name, value in pyro.get_param_store().items():
        torch.testing.assert_close(value.detach(), store[name], rtol=1e-4, atol=1e-5)
    after = runner.ns["svi"].optim.get_state()
    assert set(after) == set(state)
    for name in state:
        for key, value in state[name]["state"].items():
            for field, tensor in value.items():
                torch.testing.assert_close(after[name]["state"][key][field], tensor, rtol=1e-4, atol=1e-6)


def test_params_stay_the_tensors_the_user_holds(runner):
    data = models.data(50)
    runner.ns.update(svi=_svi(), data=data)
    runner.run("svi.step(data)\n", backend="step")  # the eager first step makes the params
    held = dict(pyro.get_param_store()._params)
    before = {k: v.detach().clone() for k, v in held.items()}
    report, error = runner.run("for _ in range(20):\n    svi.step(data)\n", backend="step")

    assert error is None and report.switches[0].compiled
    for name, tensor in held.items():
        assert pyro.get_param_store()._params[name] is tensor
        assert not torch.equal(tensor.detach(), before[name])  # trained in place


def test_an_elbo_pyro_cannot_compile_runs_eager_with_the_reason(runner):
    runner.ns.update(svi=SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.05}), RenyiELBO()),
                     data=models.data(20))
    report, error = runner.run("for _ in range(3):\n    svi.step(data)\n", backend="step")

    assert error is None
    (switch,) = report.switches
    assert not switch.compiled
    assert switch.reason.startswith("the whole step cannot be compiled (")
    assert "RenyiELBO" in switch.reason and "ran eager" in switch.reason


def test_a_float_read_in_the_model_runs_eager_naming_the_line(runner):
    # Pyro's JIT would bake the number into its trace as surely as the whole step: eager, never it
    def model(data):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        width = 1.0 + abs(float(loc))  # a Python number from a tensor
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, width), obs=data)

    def losses_eager():
        pyro.clear_param_store()
        pyro.set_rng_seed(3)
        svi = SVI(model, AutoNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
        return [svi.step(data) for _ in range(5)]

    data = models.data(20)
    eager = losses_eager()
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    runner.ns.update(svi=SVI(model, AutoNormal(model), Adam({"lr": 0.05}), Trace_ELBO()), data=data)
    report, error = runner.run("for _ in range(5):\n    svi.step(data)\n", backend="step")

    assert error is None
    (switch,) = report.switches
    assert not switch.compiled and "JitTrace_ELBO" not in switch.after
    assert "Python number" in switch.reason and "test_whole_step_backend.py" in switch.reason  # its line
    assert report.svi_runs[0].losses == tuple(eager)  # eager's, to the last bit


def test_a_branch_on_a_tensor_is_checked_every_step_and_the_results_agree(runner):
    runner.ns.update(svi=SVI(models.branchy, models.branchy_guide, Adam({"lr": 0.1}), Trace_ELBO()),
                     data=models.data(20) - 0.2, models=models)
    c, error = runner.compare("losses = [svi.step(data) for _ in range(40)]\n", seed=1, backend="step")

    assert error is None
    assert c.outcome == "agree", c.outcome_reason
    assert any("checks bool(tensor)" in note and "models.py" in note for note in c.compiled.notes)


def test_nuts_takes_its_potential_and_gradient_from_one_graph(runner):
    data = models.data(30)
    pyro.set_rng_seed(2)
    eager = MCMC(NUTS(models.gaussian), num_samples=20, warmup_steps=20, disable_progbar=True)
    eager.run(data)
    pyro.set_rng_seed(2)
    runner.ns.update(mcmc=MCMC(NUTS(models.gaussian), num_samples=20, warmup_steps=20, disable_progbar=True),
                     data=data)
    report, error = runner.run("mcmc.run(data)\n", backend="step")

    assert error is None
    (switch,) = report.switches
    assert switch.compiled and switch.after == "NUTS, potential and gradient compiled whole (step)"
    assert [c.key for c in report.compilations] == ["potential and gradient"]
    (run,) = report.mcmc_runs
    assert run.potential_evals > 40
    for name, samples in eager.get_samples().items():
        torch.testing.assert_close(runner.ns["mcmc"].get_samples()[name], samples, rtol=1e-3, atol=1e-4)


def test_the_cache_inspector_shows_the_backend_and_clears_it():
    data = models.data(20)
    svi = _svi()
    with compiled(backend="step", names={"svi": svi}):
        for _ in range(3):
            svi.step(data)
    snapshot = pyro_jitmagic.cache_snapshot(namespace={"svi": svi})
    (function,) = [f for f in snapshot.functions if f.ident == id(svi)]
    (entry,) = function.entries
    assert function.owner.startswith("svi (its whole step")
    assert entry.backend == "step" and entry.hits == 2 and entry.graph_nodes > 50
    assert entry.capture_seconds is not None and entry.codegen_seconds is not None
    assert "step, capture" in str(snapshot) and "graph" in snapshot._repr_html_()
    assert pyro_jitmagic.clear_cache("svi", namespace={"svi": svi}) == 1
    assert not [f for f in pyro_jitmagic.cache_snapshot().functions if f.ident == id(svi)]
    with compiled(backend="step", names={"svi": svi}) as run:
        svi.step(data)
    assert [c.key for c in run.report.compilations] == ["1 positional arg"]  # compiled again


def test_inductor_without_a_cxx_compiler_runs_the_step_backend_and_says_so(monkeypatch):
    from pyro_jitmagic.wholestep import backends

    monkeypatch.setattr(backends, "no_cxx_reason", lambda: "no C++ compiler found (install g++)")
    data = models.data(20)
    svi = _svi()
    with compiled(backend="inductor", names={"svi": svi}) as run:
        for _ in range(3):
            svi.step(data)

    assert run.report.switches[0].compiled
    assert any("no C++ compiler found (install g++); running the step backend" in n for n in run.report.notes)


def test_a_plain_cell_climbs_every_tier_a_named_backend_runs_alone_and_caps_auto(shell):
    def said(options):
        return options.auto, options.backend

    assert said(RunOptions()) == (True, "inductor")  # plain %%pyrojit: climb every tier
    assert said(RunOptions(auto=True)) == (True, "inductor")
    assert said(RunOptions(backend="pyro")) == (False, "pyro")  # Pyro's JIT from the first step
    assert said(RunOptions(backend="inductor")) == (False, "inductor")
    assert said(RunOptions(auto=False)) == (False, "pyro")
    assert said(RunOptions(auto=True, backend="pyro")) == (True, "pyro")  # eager and Pyro's JIT only
    assert said(RunOptions(auto=True, backend="step")) == (True, "step")  # up to the whole step
    # a field left to its default is settled again from what replace() changes
    assert said(RunOptions().replace(seed=1)) == (True, "inductor")
    assert said(RunOptions().replace(backend="pyro")) == (False, "pyro")
    assert said(RunOptions().replace(auto=False)) == (False, "pyro")
    assert said(RunOptions(auto=True).replace(backend="step")) == (True, "step")
    result = shell.run_cell("%%pyrojit --auto --backend step -q\npass\n")
    assert result.error_in_exec is None


@pytest.mark.slow
def test_inductor_compiles_the_whole_step_into_kernels_and_agrees_with_eager(tmp_path, monkeypatch):
    from pyro_jitmagic.wholestep import cxx_compiler

    if cxx_compiler() is None:
        pytest.skip("no C++ compiler: inductor cannot run here (the fallback is tested above)")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # cold: an empty disk cache
    data = models.data(50)
    losses, store, _ = _eager(OPTIMIZERS["Adam"], data, steps=40)
    pyro.clear_param_store()
    pyro.set_rng_seed(7)
    svi = _svi()
    with compiled(backend="inductor", names={"svi": svi}) as first:
        compiled_losses = [svi.step(data) for _ in range(30)]
    (entry,) = pyro_jitmagic.run.process.PROCESS.session.whole_steps.of(svi).values()
    assert entry.compiled.wait(timeout=900)  # its codegen ran in the background meanwhile
    with compiled(backend="inductor", names={"svi": svi}) as second:
        compiled_losses += [svi.step(data) for _ in range(10)]

    assert first.report.switches[0].after == "Trace_ELBO, whole step (inductor)"
    assert any("inductor compiles in the background" in n for n in first.report.notes)
    assert any("inductor's kernels took over" in n for n in first.report.notes + second.report.notes)
    assert compiled_losses == pytest.approx(losses, rel=1e-4)
    for name, value in pyro.get_param_store().items():
        torch.testing.assert_close(value.detach(), store[name], rtol=1e-4, atol=1e-5)
    (function,) = [f for f in pyro_jitmagic.cache_snapshot().functions if f.ident == id(svi)]
    (cached,) = function.entries
    assert cached.backend == "inductor" and cached.kernels and cached.disk_cache == "cold"
    assert "cold disk cache" in str(pyro_jitmagic.cache_snapshot())


def test_switching_backend_between_cells_continues_exactly():
    data = models.data(50)
    losses, store, _ = _eager(OPTIMIZERS["Adam"], data, steps=45)
    pyro.clear_param_store()
    pyro.set_rng_seed(7)
    svi = _svi()
    ran = []
    for backend in ("step", "pyro", "step"):  # the last cell reuses the first cell's graph
        with compiled(backend=backend, names={"svi": svi}) as run:
            ran += [svi.step(data) for _ in range(15)]
        assert run.report.switches[0].compiled

    assert ran == pytest.approx(losses, rel=1e-4)
    for name, value in pyro.get_param_store().items():
        torch.testing.assert_close(value.detach(), store[name], rtol=1e-4, atol=1e-5)
    (function,) = [f for f in pyro_jitmagic.cache_snapshot().functions if f.ident == id(svi)]
    assert function.entries[0].hits == 14 + 15  # compiled once, in the first cell
