"""What runs compiled, what runs eager and why: through the magic and its twin alike."""

from __future__ import annotations

import models
import pyro
import pytest
import torch
from patches import assert_nothing_patched
from pyro import infer
from pyro.infer import SVI
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.optim import Adam

SWITCHABLE = [
    ("Trace_ELBO", "JitTrace_ELBO"),
    ("TraceGraph_ELBO", "JitTraceGraph_ELBO"),
    ("TraceEnum_ELBO", "JitTraceEnum_ELBO"),
    ("TraceMeanField_ELBO", "JitTraceMeanField_ELBO"),
]


def make_svi(elbo, model=models.gaussian, guide=None):
    guide = guide or AutoDiagonalNormal(model)
    return SVI(model, guide, Adam({"lr": 0.01}), elbo)


@pytest.mark.parametrize(("eager", "jit"), SWITCHABLE)
def test_each_elbo_runs_as_its_jit_counterpart(runner, eager, jit, patched_targets):
    elbo = getattr(infer, eager)()
    runner.ns.update(svi=make_svi(elbo), data=models.data())
    report, error = runner.run("for _ in range(3):\n    svi.step(data)")

    assert error is None
    (switch,) = report.switches
    assert (switch.target, switch.before, switch.after, switch.compiled) == ("svi", eager, jit, True)
    assert report.compile_count == 1
    assert report.svi_runs[0].elbo == jit
    assert len(report.svi_runs[0].steps) == 3
    # outside the cell the object is as written again
    assert runner.ns["svi"].loss_and_grads.__self__ is elbo
    assert type(elbo).__name__ == eager
    assert_nothing_patched(patched_targets)


def test_objects_built_anywhere_under_any_alias_are_caught(runner):
    # An SVI built in an earlier cell, inside a user function, from an aliased import.
    runner.ns["data"] = models.data()
    exec(
        "import pyro.infer as pi\n"
        "from pyro.infer import SVI as Inference\n"
        "from pyro.optim import Adam\n"
        "from pyro.infer.autoguide import AutoDelta\n"
        "import models\n"
        "def train(n):\n"
        "    svi = Inference(models.gaussian, AutoDelta(models.gaussian), Adam({'lr': 0.01}),\n"
        "                    pi.Trace_ELBO())\n"
        "    return [svi.step(data) for _ in range(n)]\n",
        runner.ns,
    )
    report, error = runner.run("losses = train(3)")

    assert error is None
    assert [s.after for s in report.switches] == ["JitTrace_ELBO"]
    assert report.switches[0].target == "SVI(gaussian, AutoDelta)"  # no user name: described
    assert len(runner.ns["losses"]) == 3


@pytest.mark.parametrize(
    ("loss", "reason"),
    [
        (lambda: infer.RenyiELBO(), "RenyiELBO has no JIT counterpart in Pyro"),
        (lambda: infer.TraceTMC_ELBO(), "TraceTMC_ELBO has no JIT counterpart in Pyro"),
        (lambda: infer.TraceTailAdaptive_ELBO(num_particles=2, vectorize_particles=True),
         "TraceTailAdaptive_ELBO subclasses Trace_ELBO"),
        (lambda: infer.Trace_ELBO().differentiable_loss,
         "a custom loss function: Pyro compiles only its ELBO classes"),
    ],
    ids=["renyi", "tmc", "tail-adaptive", "custom-callable"],
)
def test_inference_without_jit_counterpart_runs_eager_and_says_why(runner, loss, reason):
    guide = AutoDiagonalNormal(models.gaussian)
    runner.ns.update(svi=SVI(models.gaussian, guide, Adam({"lr": 0.01}), loss()), data=models.data())
    report, error = runner.run("for _ in range(2):\n    svi.step(data)")

    assert error is None
    (switch,) = report.switches
    assert not switch.compiled and switch.before == switch.after
    assert reason in switch.reason
    assert report.compile_count == 0
    assert len(report.svi_runs[0].steps) == 2
    assert reason in str(report)


def test_objects_already_jit_are_left_as_they_are(runner):
    elbo = infer.JitTrace_ELBO()
    svi = make_svi(elbo)
    runner.ns.update(svi=svi, data=models.data())
    report, error = runner.run("for _ in range(2):\n    svi.step(data)")

    assert error is None
    (switch,) = report.switches
    assert switch.compiled and not switch.switched
    assert "already compiled" in switch.reason
    assert report.compile_count == 1
    assert svi.loss_and_grads.__self__ is elbo
    assert getattr(elbo, "_loss_and_surrogate_loss", None) is not None  # the user's own ELBO compiled


def test_explicit_settings_are_kept():
    from pyro_jitmagic import compiled

    jit_options = {"check_trace": False}
    elbo = infer.TraceEnum_ELBO(max_plate_nesting=2, num_particles=3, vectorize_particles=True,
                                ignore_jit_warnings=True, jit_options=jit_options)
    svi = make_svi(elbo)
    with compiled(backend="pyro"):
        svi.step(models.data())
    (companion,) = [c for e, _, _, c in compiled(backend="pyro").session.companions() if e is elbo]

    assert type(companion).__name__ == "JitTraceEnum_ELBO"
    for setting in ("max_plate_nesting", "num_particles", "vectorize_particles", "ignore_jit_warnings"):
        assert getattr(companion, setting) == getattr(elbo, setting), setting
    assert companion.max_plate_nesting == 3  # 2 as given, plus the particle plate
    assert jit_options == {"check_trace": False}  # Pyro's mutations do not reach the user's dict
    assert elbo.jit_options is jit_options


def test_compiled_traces_are_kept_for_the_next_cell(runner):
    runner.ns.update(svi=make_svi(infer.Trace_ELBO()), data=models.data())
    first, _ = runner.run("svi.step(data)")
    eager_loss = runner.ns["svi"].step(runner.ns["data"])  # outside: eager, no compile
    second, _ = runner.run("svi.step(data)")

    assert first.compile_count == 1
    assert second.compile_count == 0
    assert second.switches[0].after == "JitTrace_ELBO"
    assert isinstance(eager_loss, float)


def test_a_cell_without_inference_runs_unchanged_with_a_note(runner):
    report, error = runner.run("x = 40 + 2")

    assert error is None
    assert runner.ns["x"] == 42
    assert report.notes == ("the cell ran no SVI step, no ELBO loss and no MCMC run: nothing was compiled",)
    assert not report.ran_inference


def test_mcmc_runs_with_jit_compile_for_that_run_only(runner, patched_targets):
    from pyro.infer.mcmc import MCMC, NUTS

    kernel = NUTS(models.gaussian)
    runner.ns.update(mcmc=MCMC(kernel, num_samples=5, warmup_steps=5, disable_progbar=True),
                     data=models.data())
    report, error = runner.run("mcmc.run(data)")

    assert error is None
    (switch,) = report.switches
    assert (switch.target, switch.before, switch.after) == ("mcmc", "NUTS", "NUTS(jit_compile=True)")
    (run,) = report.mcmc_runs
    assert (run.num_samples, run.warmup_steps, run.completed) == (5, 5, True)
    assert run.compiled and run.compile_seconds > 0
    assert report.compilations[0].key == "potential energy"
    assert kernel._jit_compile is False
    assert "sample" not in vars(kernel) and "setup" not in vars(kernel)
    assert runner.ns["mcmc"].get_samples()["loc"].shape == (5,)
    assert_nothing_patched(patched_targets)


def test_mcmc_in_worker_processes_is_not_compiled_and_says_why():
    # Pyro runs chains in worker processes when it has a CPU for each, and
    # never compiles there; the decision is checked without starting workers.
    from types import SimpleNamespace

    from pyro.infer.mcmc import HMC, MCMC, RandomWalkKernel
    from pyro.infer.mcmc.api import _MultiSampler

    from pyro_jitmagic.compilers.pyro.mcmc import mcmc_decision

    workers = SimpleNamespace(kernel=HMC(models.gaussian), sampler=object.__new__(_MultiSampler))
    assert mcmc_decision(workers, can_trace=True) == (
        False, "chains run in worker processes, where Pyro does not compile the potential")
    random_walk = MCMC(RandomWalkKernel(models.gaussian), num_samples=2)
    assert mcmc_decision(random_walk, can_trace=True)[1].startswith("RandomWalkKernel has no compiled")
    assert mcmc_decision(MCMC(HMC(models.gaussian), num_samples=2), can_trace=False) == (
        False, "torch.jit.trace is not available in this torch")


def test_jit_compile_failure_in_nuts_restores_requires_grad(patched_targets):
    from pyro.infer.mcmc import MCMC, NUTS

    from pyro_jitmagic import compiled

    weight = pyro.param("weight", torch.tensor(1.0))
    outside = torch.ones(1, requires_grad=True)

    def model(data):
        loc = pyro.sample("loc", pyro.distributions.Normal(0.0, 10.0))
        with pyro.plate("data", data.size(0)):
            pyro.sample("obs", pyro.distributions.Normal(loc * outside, 1.0), obs=data)

    mcmc = MCMC(NUTS(model), num_samples=2, warmup_steps=2, disable_progbar=True)
    with pytest.raises(RuntimeError, match="requires grad as a constant"), compiled(backend="pyro"):
        mcmc.run(models.data())
    assert weight.unconstrained().requires_grad
    assert_nothing_patched(patched_targets)
