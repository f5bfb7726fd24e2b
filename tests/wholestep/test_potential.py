"""HMC/NUTS potential and gradient as one graph: equal to Pyro's ``potential_grad``, and a NUTS run
that takes them from the graph draws what an eager run draws."""

from __future__ import annotations

import models
import pyro
import pyro.distributions as dist
import pyro.ops.integrator
import pytest
import torch
from pyro.infer.mcmc import MCMC, NUTS
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.integrator import potential_grad
from standins import Holds, Loading

from pyro_jitmagic.patch import PatchSet
from pyro_jitmagic.wholestep import CannotCompile, compile_potential

J = 8
Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", J):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def random_points(params, n=5):
    generator = torch.Generator().manual_seed(7)
    return [{k: v + torch.randn(v.shape, generator=generator) for k, v in params.items()} for _ in range(n)]


@pytest.mark.parametrize(("model", "args"), [(models.gaussian, (models.data(100),)),
                                             (eight_schools, (SIGMA, Y))], ids=["tutorial", "eight schools"])
def test_potential_and_gradient_equal_pyros(model, args):
    init, potential_fn, _, _ = initialize_model(model, args)
    compiled = compile_potential(potential_fn, init, backend="step")
    for z in random_points(init):
        grads, energy = compiled(z)
        expected_grads, expected_energy = potential_grad(potential_fn, {k: v.clone() for k, v in z.items()})
        torch.testing.assert_close(energy, expected_energy, rtol=1e-6, atol=1e-6)
        for k in z:
            torch.testing.assert_close(grads[k], expected_grads[k], rtol=1e-6, atol=1e-6)
    assert compiled.calls == 5 and compiled.eager_calls == 0


def nuts_samples(model, args, backend=None, jit_compile=False, num=40):
    pyro.set_rng_seed(1)
    kernel = NUTS(model, jit_compile=jit_compile, ignore_jit_warnings=True)
    patches = PatchSet()
    compiled = {}
    setup = kernel.setup

    def compiling_setup(warmup_steps, *a, **k):
        setup(warmup_steps, *a, **k)
        compiled["potential"] = compile_potential(kernel, kernel.initial_params, backend=backend)
        compiled["potential"].install(patches, kernel)

    if backend is not None:
        kernel.setup = compiling_setup
    mcmc = MCMC(kernel, num_samples=num, warmup_steps=num, disable_progbar=True)
    try:
        mcmc.run(*args)
    finally:
        patches.restore()
    return mcmc.get_samples(), compiled.get("potential")


@pytest.mark.parametrize(("model", "args"), [(models.gaussian, (models.data(100),)),
                                             (eight_schools, (SIGMA, Y))], ids=["tutorial", "eight schools"])
def test_nuts_with_the_compiled_potential_draws_what_eager_draws(model, args):
    eager, _ = nuts_samples(model, args)
    compiled, potential = nuts_samples(model, args, backend="step")
    assert potential.calls > 100 and potential.eager_calls == 0
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-5, atol=1e-5)
    assert pyro.ops.integrator.potential_grad is potential_grad  # restored


def test_a_jit_compiled_kernel_gets_its_models_eager_potential_captured():
    args = (models.data(100),)
    eager, _ = nuts_samples(models.gaussian, args, num=20)
    compiled, potential = nuts_samples(models.gaussian, args, backend="step", jit_compile=True, num=20)
    assert potential.calls > 0
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-4, atol=1e-4)


def test_a_kernel_before_setup_cannot_be_compiled():
    with pytest.raises(CannotCompile, match="compile it after its setup"):
        compile_potential(NUTS(models.gaussian), {"loc": torch.zeros(())})


def test_a_branching_potential_is_guarded():
    def potential_fn(z):
        x = z["x"]
        return (x ** 2).sum() if x.sum() > 0 else (2 * x ** 2).sum()

    compiled = compile_potential(potential_fn, {"x": torch.ones(3)})
    assert [r.what for r in compiled.value_reads] == ["bool(tensor)"]
    for sign in (1.0, -1.0, 1.0):
        z = {"x": sign * torch.tensor([0.5, 1.0, 2.0])}
        grads, energy = compiled(z)
        expected_grads, expected = potential_grad(potential_fn, {"x": z["x"].clone()})
        torch.testing.assert_close(energy, expected)
        torch.testing.assert_close(grads["x"], expected_grads["x"])
    assert (compiled.calls, compiled.eager_calls) == (2, 1)


def test_a_failing_potential_is_left_to_pyros_handlers():
    def potential_fn(z):
        a = z["a"]
        matrix = torch.stack([torch.stack([a[0], a[1]]), torch.stack([a[1], a[0]])])
        return torch.linalg.cholesky(matrix).diagonal().log().sum()

    compiled = compile_potential(potential_fn, {"a": torch.tensor([2.0, 0.5])})
    grads, energy = compiled({"a": torch.tensor([1.0, 3.0])})  # not positive definite
    assert torch.isnan(energy) and torch.equal(grads["a"], torch.zeros(2))
    assert compiled.eager_calls == 1
    # linalg's check is the graph's guard, not an op of the graph: an op with effects there would
    # keep inductor's disk cache from ever holding the graph
    targets = {str(node.target) for node in compiled.captured.graph.graph.nodes}
    assert not any("check_errors" in target for target in targets)
    assert "linalg error check" in [r.what for r in compiled.value_reads]
    grads, energy = compiled({"a": torch.tensor([3.0, 1.0])})  # positive definite: the graph's
    expected_grads, expected = potential_grad(potential_fn, {"a": torch.tensor([3.0, 1.0])})
    torch.testing.assert_close(energy, expected)
    torch.testing.assert_close(grads["a"], expected_grads["a"])
    assert compiled.eager_calls == 1


@pytest.mark.parametrize("cache", ["warm", "cold"])
def test_backend_inductor_runs_nuts_on_torchscript_while_the_kernels_come(monkeypatch, cache):
    """``--backend inductor``: the NUTS trajectory's kernels load (warm) or build (cold) in the
    background; meanwhile Pyro's kernel runs the iterations on the potential's TorchScript graph,
    then the compiled trajectory builds every one left. (Inductor is stood in for: the "kernels" are
    the trajectory's graph on TorchScript.)"""
    import re

    import pyro_jitmagic
    from pyro_jitmagic.wholestep import backends, memory
    from pyro_jitmagic.wholestep.potential import CompiledPotential

    Loading.started = []
    monkeypatch.setattr(backends, "Background", Loading)
    monkeypatch.setattr(backends, "no_cxx_reason", lambda: None)
    monkeypatch.setattr(memory, "shared", lambda: Holds(cache == "warm"))
    calls = []
    real_call = CompiledPotential.__call__

    def counted(self, z):
        calls.append(self.backend)
        if len(calls) == 50:
            Loading.started[0].arrive()  # the kernels come after fifty evaluations
        return real_call(self, z)

    monkeypatch.setattr(CompiledPotential, "__call__", counted)
    pyro.set_rng_seed(1)
    mcmc = MCMC(NUTS(models.gaussian), num_samples=40, warmup_steps=40, disable_progbar=True)
    with pyro_jitmagic.compiled(backend="inductor", names={}) as twin:
        mcmc.run(models.data(100))
    notes = " ".join(twin.report.notes)

    assert len(Loading.started) == 1 and set(calls) == {"step"}  # the potential stays on TorchScript
    where = "from inductor's disk cache" if cache == "warm" else "in a worker process"
    assert (f"inductor builds the NUTS trajectory's kernels in the background ({where}); the iterations "
            "run Pyro's kernel on the step backend's potential until they are ready") in notes
    assert "inductor's kernels took over the NUTS trajectory" in notes
    built = re.search(r"NUTS trajectories compiled: (\d+) of 80 iterations built by the compiled leapfrog "
                      r"\([\d,]+ leapfrog steps; its capture took \d+ ms, the leapfrog's own graph [^)]+\); "
                      r"(\d+) ran Pyro's kernel "
                      r"\(inductor's kernels of the trajectory were not ready yet\)", notes)
    assert built is not None, notes
    assert int(built[1]) + int(built[2]) == 80 and 0 < int(built[2]) < 80
    from pyro_jitmagic.compilers.step.mcmc import TRAJECTORY_KEY
    from pyro_jitmagic.run.process import PROCESS

    entry = PROCESS.session.whole_steps.of(mcmc.kernel)[TRAJECTORY_KEY]  # what %pyrojit_cache lists
    assert entry.hits == int(built[1]) and entry.last_hit is not None
    timed = twin.report.mcmc_runs[0]  # the run's clock times the samples the trajectory makes too
    assert (timed.warmup_steps, timed.num_samples) == (40, 40)
    assert torch.isfinite(mcmc.get_samples()["loc"]).all() and len(mcmc.get_samples()["loc"]) == 40
