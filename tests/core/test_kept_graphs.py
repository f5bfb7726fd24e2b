"""A NUTS run again on the same model and data runs on the graphs an earlier run captured: its
set-up captures nothing. A change to anything those graphs froze (the data in place, a global or a
closure variable the model reads, the param store, the kernel's tree) captures anew, and draws
what a run on the changed world draws."""

from __future__ import annotations

import models
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.mcmc import MCMC, NUTS

import pyro_jitmagic
from pyro_jitmagic.run.process import PROCESS
from pyro_jitmagic.wholestep.backends import SwitchesToInductor

REUSED = "ran on the graphs an earlier run of this model on the same data captured"
SAMPLES = 15


@pytest.fixture(autouse=True)
def nothing_kept():
    PROCESS.session.whole_steps.kept.clear()
    yield
    PROCESS.session.whole_steps.kept.clear()


def _run(model, data, backend="step", **kernel):
    """(samples, the report's note on reused graphs or None, the run's compiled potential)."""
    pyro.set_rng_seed(2)
    mcmc = MCMC(NUTS(model, **kernel), num_samples=SAMPLES, warmup_steps=SAMPLES, disable_progbar=True)
    with pyro_jitmagic.compiled(backend=backend, names={}) as run:
        mcmc.run(data)
    note = next((n for n in run.report.notes if REUSED in n), None)
    entries = PROCESS.session.whole_steps.of(mcmc.kernel)
    return mcmc.get_samples(), note, entries["potential and gradient"].compiled


def _eager(model, data):
    pyro.set_rng_seed(2)
    mcmc = MCMC(NUTS(model), num_samples=SAMPLES, warmup_steps=SAMPLES, disable_progbar=True)
    mcmc.run(data)
    return mcmc.get_samples()


def assert_same_draws(samples, expected):
    # (the step backend agrees with eager to float32's rounding: the chains take the same path)
    for name, values in expected.items():
        torch.testing.assert_close(samples[name], values, rtol=1e-3, atol=1e-4)


def test_a_second_run_on_the_same_model_and_data_captures_nothing_and_draws_as_a_capture_does():
    data = models.data(30)
    first, note, potential = _run(models.gaussian, data)
    assert note is None and not potential.reused
    again, note, reused = _run(models.gaussian, data)
    assert note is not None and "nothing captured" in note
    assert reused.reused and reused.captured.graph is potential.captured.graph
    assert reused.calls > 0  # its evaluations ran on the kept graph
    assert_same_draws(again, first)


def test_data_changed_in_place_is_captured_anew():
    data = models.data(30)
    _run(models.gaussian, data)
    data += 3.0  # the same tensor, its values moved
    moved, note, _ = _run(models.gaussian, data)
    assert note is None
    assert_same_draws(moved, _eager(models.gaussian, data))


PRIOR_LOC = 0.0


def global_prior(data):
    loc = pyro.sample("loc", dist.Normal(PRIOR_LOC, 1.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)


def closure_prior():
    """A model reading a closure variable, and the function that changes it."""
    prior = torch.tensor(0.0)

    def model(data):
        loc = pyro.sample("loc", dist.Normal(prior, 1.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)

    def move(value):
        nonlocal prior
        prior = value

    return model, move


@pytest.mark.parametrize("read", ["global", "closure"])
def test_a_value_the_model_reads_changed_is_captured_anew(read):
    global PRIOR_LOC
    data = models.data(30)
    if read == "global":
        model = global_prior

        def move(value):
            global PRIOR_LOC
            PRIOR_LOC = value
    else:
        model, move = closure_prior()
    try:
        _run(model, data)
        move(20.0 if read == "global" else torch.tensor(20.0))
        moved, note, _ = _run(model, data)
        expected = _eager(model, data)
    finally:
        PRIOR_LOC = 0.0
    assert note is None
    assert_same_draws(moved, expected)


def test_the_param_store_changed_is_captured_anew():
    data = models.data(30)
    pyro.clear_param_store()
    _run(models.gaussian, data)
    pyro.param("elsewhere", torch.zeros(2))  # (a model may read the store: its graph holds what it read)
    try:
        _, note, _ = _run(models.gaussian, data)
    finally:
        pyro.clear_param_store()
    assert note is None


def test_another_tree_depth_takes_the_kept_potential_and_captures_its_trajectory(monkeypatch):
    # (inductor's kernels are not built here: the kept trajectory is the captured graph)
    monkeypatch.setattr(SwitchesToInductor, "build_inductor", lambda self, *a, **k: None)
    data = models.data(30)
    _run(models.gaussian, data, backend="inductor")
    _, note, _ = _run(models.gaussian, data, backend="inductor")
    assert note is not None and "the potential and its trajectory ran on" in note
    _, note, _ = _run(models.gaussian, data, backend="inductor", max_tree_depth=4)
    assert note is not None and "the potential ran on" in note  # its trajectory: another graph


def test_clearing_the_cache_forgets_the_kept_graphs():
    data = models.data(30)
    _run(models.gaussian, data)
    assert pyro_jitmagic.clear_cache() >= 1
    _, note, potential = _run(models.gaussian, data)
    assert note is None and not potential.reused


@pytest.mark.slow
def test_inductors_kernels_of_a_kept_trajectory_run_a_later_run_from_its_first_iteration():
    # a cold codegen in a worker process takes seconds: the first run ends before it does; the
    # second takes the kernels it built since, the third those the second ran on
    from pyro_jitmagic.compilers.step.mcmc import TRAJECTORY_KEY

    def run(samples):
        pyro.set_rng_seed(2)
        mcmc = MCMC(NUTS(models.gaussian), num_samples=samples, warmup_steps=samples, disable_progbar=True)
        with pyro_jitmagic.compiled(backend="inductor", names={}) as twin:
            mcmc.run(data)
        trajectory = PROCESS.session.whole_steps.of(mcmc.kernel)[TRAJECTORY_KEY].compiled
        return mcmc, trajectory, " ".join(twin.report.notes)

    data = models.data(30)
    _, first, _ = run(SAMPLES)
    assert first.wait(timeout=600) and first.backend == "inductor"
    for samples in (SAMPLES, 100):
        mcmc, trajectory, notes = run(samples)
        assert "inductor's kernels ran the NUTS trajectory from the start" in notes
        iterations = 2 * samples
        assert f"compiled: {iterations} of {iterations} iterations built by the compiled leapfrog" in notes
        assert trajectory.reused and trajectory.backend == "inductor"
    # Pyro's posterior: the means within Monte Carlo error of a long eager run's
    pyro.set_rng_seed(3)
    eager = MCMC(NUTS(models.gaussian), num_samples=300, warmup_steps=100, disable_progbar=True)
    eager.run(data)
    for name, expected in eager.get_samples().items():
        error = 4 * expected.std() / 100 ** 0.5
        assert abs(mcmc.get_samples()[name].mean() - expected.mean()) < error, name
