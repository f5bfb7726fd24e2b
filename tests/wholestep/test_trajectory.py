"""NUTS trajectories built by the compiled leaf: Pyro's algorithm, so Pyro's trees and posterior.

The draws come in another order than Pyro's kernel takes them, so runs are compared in
distribution: tree sizes and acceptance at a fixed step size, posterior moments against the
truth and against Pyro's kernel, each within a few Monte Carlo standard errors. The leaf runs on
TorchScript here (inductor's kernels compute the same graph: the slow tier runs them)."""

from __future__ import annotations

import math

import models
import pyro
import pyro.ops.integrator
import pytest
import torch
from leaves import assert_the_leaf_is_eagers, compiled_trajectory
from pyro.infer.mcmc import HMC, MCMC, NUTS

from pyro_jitmagic.patch import PatchSet
from pyro_jitmagic.wholestep import CannotCompile, compile_potential
from pyro_jitmagic.wholestep.leapfrog import checkpoint_masks
from pyro_jitmagic.wholestep.trajectory import compile_trajectory, eager_potential, refusal

#: a correlated Gaussian, whose moments are known
COVARIANCE = torch.tensor([[1.0, 0.9], [0.9, 1.0]])
PRECISION = torch.linalg.inv(COVARIANCE)


def correlated(params):
    x = params["x"]
    return 0.5 * x @ PRECISION @ x


def run(kernel, num_samples, warmup_steps, *args, compiled=True, seed=0, initial_params=None):
    """Samples of ``kernel`` and its compiled trajectory (None when ``compiled`` is False)."""
    pyro.set_rng_seed(seed)
    patches, made = PatchSet(), {}
    setup = kernel.setup

    def compiling_setup(warmup, *a, **k):
        setup(warmup, *a, **k)
        if compiled and "trajectory" not in made:
            potential = compile_potential(kernel, kernel.initial_params, backend="step")
            potential.install(patches, kernel)
            made["trajectory"] = compile_trajectory(kernel, potential, backend="step")
            made["trajectory"].install(patches)

    kernel.setup = compiling_setup
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=True,
                initial_params=initial_params)
    try:
        mcmc.run(*args)
    finally:
        patches.restore()
        del kernel.setup
    return mcmc, made.get("trajectory")


def test_checkpoints_hold_the_first_leaf_of_every_subtree_that_ends_at_a_leaf():
    for depth in range(1, 8):
        table = [None] * depth
        for leaf in range(1 << depth):
            write, check = checkpoint_masks(leaf, depth)
            assert sum(write) <= 1 and not (any(write) and any(check))
            table = [leaf if w else held for w, held in zip(write, table, strict=True)]
            # Pyro's recursion checks each subtree of 2, 4, ... leaves when its last leaf is built
            ending = {leaf - (1 << k) + 1 for k in range(1, depth + 1) if (leaf + 1) % (1 << k) == 0}
            assert {table[i] for i in range(depth) if check[i]} == ending


def test_the_leaf_graph_computes_what_the_eager_leaf_computes():
    assert_the_leaf_is_eagers(compiled_trajectory(models.gaussian, 50))


def test_trees_and_acceptance_are_pyros_at_a_fixed_step_size(monkeypatch):
    """Without adaptation a NUTS iteration's distribution of tree sizes and acceptance depends on
    the algorithm alone: compare them with Pyro's kernel's over many iterations."""
    def kernel():
        return NUTS(potential_fn=correlated, step_size=0.25, adapt_step_size=False, adapt_mass_matrix=False)

    start = {"x": torch.zeros(2)}
    evaluations = []
    real = pyro.ops.integrator.potential_grad

    def counted(potential_fn, z):
        evaluations.append(1)
        return real(potential_fn, z)

    monkeypatch.setattr(pyro.ops.integrator, "potential_grad", counted)
    pyros_kernel = kernel()
    pyros, _ = run(pyros_kernel, 1500, 0, compiled=False, initial_params=start)
    pyros_leaves = (len(evaluations) - 1) / 1500  # (one evaluation at set-up)
    monkeypatch.undo()
    ours_kernel = kernel()
    ours, trajectory = run(ours_kernel, 1500, 0, initial_params=start)

    assert trajectory.iterations == 1500 and trajectory.pyro_iterations == 0 and trajectory.eager_leaves == 0
    leaves = trajectory.leaves / 1500
    assert abs(leaves - pyros_leaves) <= 0.1 * pyros_leaves, (leaves, pyros_leaves)
    ours_accept, pyros_accept = ours_kernel.logging()["acc. prob"], pyros_kernel.logging()["acc. prob"]
    assert abs(float(ours_accept) - float(pyros_accept)) <= 0.03
    # how often the trajectory's biased choice moved the chain: a rate near 0.9 over 1,500
    # iterations has a standard error under 0.01
    moved, pyros_moved = (m.diagnostics()["acceptance rate"]["chain 0"] for m in (ours, pyros))
    assert abs(moved - pyros_moved) <= 0.04, (moved, pyros_moved)
    for mcmc in (ours, pyros):
        x = mcmc.get_samples()["x"]
        # NUTS on this target keeps most of its draws' information: 4 standard errors of 500 draws
        assert torch.all(x.mean(0).abs() <= 4 / math.sqrt(500))
        torch.testing.assert_close(torch.cov(x.T), COVARIANCE, atol=0.2, rtol=0)
    assert not ours.diagnostics()["divergences"]["chain 0"]


@pytest.mark.parametrize("full_mass", [False, True], ids=["diagonal mass", "dense mass"])
def test_an_adapted_run_draws_pyros_posterior(full_mass):
    data = models.data(100)
    pyros, _ = run(NUTS(models.gaussian, full_mass=full_mass), 400, 300, data, compiled=False, seed=1)
    kernel = NUTS(models.gaussian, full_mass=full_mass)
    ours, trajectory = run(kernel, 400, 300, data, seed=2)
    assert trajectory.iterations == 700 and trajectory.eager_leaves == 0
    expected, got = pyros.get_samples(), ours.get_samples()
    for name in ("loc", "scale"):
        sd = float(expected[name].std())
        # two chains of at least 100 effective draws each: their means 4 standard errors apart
        assert abs(float(got[name].mean() - expected[name].mean())) <= 4 * sd * math.sqrt(2 / 100), name
        assert abs(float(got[name].std()) / sd - 1) <= 0.3, name
    assert float(kernel.step_size) > 0.05  # adapted, not collapsed


def test_the_kernel_is_left_as_pyros_own_sample_leaves_it():
    kernel = NUTS(models.gaussian)
    mcmc, trajectory = run(kernel, 30, 20, models.data(50))
    assert trajectory.iterations == 50
    assert len(mcmc.get_samples()["loc"]) == 30
    assert set(kernel.logging()) == {"step size", "acc. prob"}
    assert "sample" not in vars(kernel)  # the patch is gone: Pyro's own method again
    mcmc.run(models.data(50))  # Pyro's own kernel, from the state the compiled one left
    assert len(mcmc.get_samples()["loc"]) == 30


def test_a_singular_potential_runs_its_leaf_eagerly_as_a_divergence():
    """A leaf whose potential raises (a Cholesky factor of a matrix that is not positive definite)
    runs eagerly, where Pyro's handler makes its energy NaN: a divergence, as in Pyro's kernel."""
    def potential_fn(params):
        a = params["a"]
        matrix = torch.stack([torch.stack([a[0], a[1]]), torch.stack([a[1], a[0]])])
        return torch.linalg.cholesky(matrix).diagonal().log().sum() + 0.5 * (a - 2).pow(2).sum()

    kernel = NUTS(potential_fn=potential_fn, step_size=2.0, adapt_step_size=False)
    mcmc, trajectory = run(kernel, 20, 0, initial_params={"a": torch.tensor([2.0, 0.5])})
    assert trajectory.eager_leaves >= 1
    assert len(mcmc.diagnostics()["divergences"]["chain 0"]) >= 1


def test_kernels_the_trajectory_does_not_cover_are_named():
    assert refusal(HMC(models.gaussian)) is None

    class Mine(NUTS):  # a subclass may build its trees otherwise
        pass

    assert "Mine's trajectories run in Pyro's kernel" in refusal(Mine(models.gaussian))
    slices = NUTS(models.gaussian, use_multinomial_sampling=False)
    assert "use_multinomial_sampling=False" in refusal(slices)
    slices.setup(5, models.data(10))
    potential = compile_potential(slices, slices.initial_params, backend="step")
    with pytest.raises(CannotCompile, match="samples slices"):
        compile_trajectory(slices, potential, backend="step")


def test_the_eager_potential_of_the_flat_vector_is_pyros():
    kernel = NUTS(models.gaussian)
    kernel.setup(5, models.data(30))
    potential = compile_potential(kernel, kernel.initial_params, backend="step")
    layout = compile_trajectory(kernel, potential, backend="step").captured.layout
    flat = layout.flatten(kernel.initial_params) + 0.1
    energy, ok, grad = eager_potential(potential.captured.potential_fn, layout)(flat)
    grads, expected = pyro.ops.integrator.potential_grad(kernel.potential_fn, layout.unflatten(flat.clone()))
    torch.testing.assert_close(energy, expected)
    torch.testing.assert_close(grad, layout.flatten(grads))
    assert bool(ok)


EIGHT_SCHOOLS = (torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]),
                 torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]))


def eight_schools(sigma, y):
    mu = pyro.sample("mu", pyro.distributions.Normal(0.0, 5.0))
    tau = pyro.sample("tau", pyro.distributions.HalfCauchy(5.0))
    with pyro.plate("J", 8):
        theta = pyro.sample("theta", pyro.distributions.Normal(mu, tau))
        pyro.sample("obs", pyro.distributions.Normal(theta, sigma), obs=y)


@pytest.mark.slow
@pytest.mark.parametrize(("model", "args", "sites"), [
    (models.gaussian, (models.data(100),), ("loc", "scale")),
    (eight_schools, EIGHT_SCHOOLS, ("mu",)),
], ids=["tutorial", "eight schools"])
def test_inductors_kernels_draw_pyros_posterior(model, args, sites):
    """The leaf compiled by inductor (a cold compile the first time: slow tier)."""
    from pyro_jitmagic.wholestep.backends import no_cxx_reason

    if no_cxx_reason():
        pytest.skip(no_cxx_reason())

    def inductor_run(seed):
        pyro.set_rng_seed(seed)
        kernel = NUTS(model)
        patches, made = PatchSet(), {}
        setup = kernel.setup

        def compiling_setup(warmup, *a, **k):
            setup(warmup, *a, **k)
            potential = compile_potential(kernel, kernel.initial_params, backend="step")
            potential.install(patches, kernel)
            made["trajectory"] = compile_trajectory(kernel, potential, backend="inductor")
            made["trajectory"].install(patches)

        kernel.setup = compiling_setup
        mcmc = MCMC(kernel, num_samples=500, warmup_steps=300, disable_progbar=True)
        try:
            mcmc.run(*args)
        finally:
            patches.restore()
        return mcmc, made["trajectory"]

    pyros, _ = run(NUTS(model), 500, 300, *args, compiled=False, seed=1)
    ours, trajectory = inductor_run(2)
    assert trajectory.backend == "inductor" and trajectory.iterations == 800 and trajectory.eager_leaves == 0
    assert trajectory.finding is None and trajectory.sentinel.checks >= 4  # (calls 1, 129, 641, 2689...)
    expected, got = pyros.get_samples(), ours.get_samples()
    for name in sites:
        sd = float(expected[name].std())
        # two chains of at least 60 effective draws each (eight schools mixes slowly in mu)
        assert abs(float(got[name].mean() - expected[name].mean())) <= 4 * sd * math.sqrt(2 / 60), name


def test_hmc_trajectories_draw_the_target_and_accept_as_pyros():
    def kernel():
        return HMC(potential_fn=correlated, step_size=0.3, num_steps=5, adapt_step_size=False,
                   adapt_mass_matrix=False)

    start = {"x": torch.zeros(2)}
    pyros, _ = run(kernel(), 1500, 0, compiled=False, initial_params=start)
    ours, trajectory = run(kernel(), 1500, 0, initial_params=start)
    assert trajectory.what == "HMC trajectory"
    assert trajectory.iterations == 1500 and trajectory.leaves == 1500 * 5
    moved, pyros_moved = (m.diagnostics()["acceptance rate"]["chain 0"] for m in (ours, pyros))
    assert abs(moved - pyros_moved) <= 0.04, (moved, pyros_moved)
    x = ours.get_samples()["x"]
    # HMC of 5 steps mixes slower than NUTS here: 4 standard errors of 200 effective draws
    assert torch.all(x.mean(0).abs() <= 4 / math.sqrt(200))
    torch.testing.assert_close(torch.cov(x.T), COVARIANCE, atol=0.25, rtol=0)


def test_a_leaf_the_sentinel_finds_wrong_sends_the_run_to_pyros_kernel():
    """A compiled leaf whose energy is not eager's (stood in for by shifting the graph's output)
    is caught at the sentinel's first check: that leaf runs eagerly, every later iteration runs
    Pyro's kernel, and the potential runs eager too."""
    from pyro_jitmagic.wholestep.leapfrog import SCALAR

    kernel = NUTS(models.gaussian)
    pyro.set_rng_seed(0)
    patches = PatchSet()
    made = {}
    setup = kernel.setup

    def compiling_setup(warmup, *a, **k):
        setup(warmup, *a, **k)
        potential = compile_potential(kernel, kernel.initial_params, backend="step")
        potential.install(patches, kernel)
        trajectory = made["trajectory"] = compile_trajectory(kernel, potential, backend="step")
        right = trajectory._run

        def wrong(*args):
            vectors, scalars, checkpoints, stop = right(*args)
            return vectors, scalars + torch.eye(len(scalars))[SCALAR["pe"]], checkpoints, stop

        trajectory._run = wrong
        trajectory.install(patches)

    kernel.setup = compiling_setup
    mcmc = MCMC(kernel, num_samples=10, warmup_steps=10, disable_progbar=True)
    try:
        mcmc.run(models.data(50))
    finally:
        patches.restore()
        del kernel.setup
    trajectory = made["trajectory"]
    assert trajectory.finding is not None and trajectory.finding.call == 1
    assert trajectory.potential.finding is trajectory.finding  # the potential runs eager from now on
    assert trajectory.iterations == 1 and trajectory.pyro_iterations == 19
    assert trajectory.leaves == 0  # the first leaf, and the rest of its iteration, ran eagerly
    assert "the sentinel found the compiled trajectory wrong" in trajectory.declined
    assert torch.isfinite(mcmc.get_samples()["loc"]).all()
