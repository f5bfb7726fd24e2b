"""Value reads while capturing are never silent: the user's are reported with their line (guarded, or an
error, or baked and risky on request); Pyro's own (NaN checks, validation, Dice's mask) stay checks."""

from __future__ import annotations

import warnings

import models
import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from cases import assert_losses_agree, assert_state_agrees, train
from pyro.infer import SVI, Trace_ELBO

from pyro_jitmagic.wholestep import CannotCompile, compile_svi_step


def branchy_svi():
    return SVI(models.branchy, models.branchy_guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO()), \
        (models.data(20),), {}


def test_a_branch_on_a_tensor_is_guarded_and_reported_with_its_line():
    eager = train(branchy_svi)
    compiled = train(branchy_svi, compile_with="step")
    step = compiled.compiled
    user = [r for r in step.value_reads if r.origin == "user"]
    assert len(user) == 1
    read = user[0]
    assert (read.handling, read.what, read.where) == ("guarded", "bool(tensor)", "models.py:38")
    assert read.source == "scale = 1.0 if loc > 0 else 2.0"
    assert not read.risky
    # loc changes sign during training: those steps ran eagerly, and every loss is eager's
    assert step.guard_failures > 0 and step.steps > 0
    assert step.steps + step.eager_steps == 199
    assert_losses_agree(eager, compiled)
    assert_state_agrees(eager, compiled)


def line_of(text):
    with open(__file__) as source:
        lines = source.read().splitlines()
    return f"test_value_reads.py:{next(i + 1 for i, line in enumerate(lines) if text in line)}"


def floaty(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    width = 1.0 + abs(float(loc))  # a Python number from a tensor
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Normal(loc, width), obs=data)


def floaty_svi():
    return SVI(floaty, models.branchy_guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO()), \
        (models.data(20),), {}


def test_a_float_read_stops_the_capture_naming_the_line():
    svi, args, _ = floaty_svi()
    svi.step(*args)
    with pytest.raises(CannotCompile) as info:
        compile_svi_step(svi, args)
    assert info.value.reason == (
        f"your code turns a traced tensor into a Python number (float(tensor)) at {line_of('width =')}: "
        "width = 1.0 + abs(float(loc))  # a Python number from a tensor; the compiled step would keep its "
        "first value. Compute with the tensor instead")


def test_a_float_read_can_be_baked_and_is_then_risky():
    svi, args, _ = floaty_svi()
    svi.step(*args)
    compiled = compile_svi_step(svi, args, value_reads="bake")
    risky = [r for r in compiled.value_reads if r.risky]
    assert [(r.origin, r.where) for r in risky] == [("user", line_of("width ="))]
    assert "baked in at its capture-time value" in str(risky[0])


def counted(data):
    """An integer read of the data: the plate's size is the number of positive points."""
    positive = int((data > 0).sum())
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("pos", positive):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data.abs()[:positive])


def test_an_integer_read_of_the_data_is_guarded():
    batches = [models.data(10, seed=s) for s in range(4)]
    counts = {int((b > 0).sum()) for b in batches}
    assert len(counts) > 1  # the read gives other values for other batches

    def run(compile_with):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        svi = SVI(counted, models.branchy_guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
        losses = [svi.step(batches[0])]
        step = compile_svi_step(svi, (batches[0],), backend=compile_with) if compile_with else svi.step
        losses += [step(batches[i % 4]) for i in range(1, 40)]
        return losses, step

    eager, _ = run(None)
    compiled, step = run("step")
    assert compiled == eager
    assert [r.what for r in step.value_reads if r.origin == "user"] == ["int(tensor)"]
    assert step.guard_failures > 0 and step.steps > 0


# -- Pyro's own reads ----------------------------------------------------------------------------

def sqrt_model(data):
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Normal(torch.sqrt(x), 1.0), obs=data)  # NaN where x < 0


def sqrt_guide(data):
    pyro.sample("x", dist.Normal(pyro.param("m", torch.tensor(0.5)), 1.0))


def sqrt_svi():
    return SVI(sqrt_model, sqrt_guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO()), \
        (torch.ones(5),), {}


def run_recording_warnings(compile_with, steps=30, make=sqrt_svi):
    """The run, with ``.warnings``: Pyro's "Encountered ..." warnings as (text, category, file, line)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = train(make, steps=steps, compile_with=compile_with)
    run.warnings = [(str(w.message), w.category, w.filename, w.lineno) for w in caught
                    if "Encountered" in str(w.message)]
    return run


def _texts_and_files(run):
    return {(text, filename.rsplit("/", 1)[-1]) for text, _, filename, _ in run.warnings}


def test_nan_loss_warns_as_eager_does():
    with pyro.validation_enabled(False):
        eager = run_recording_warnings(None)
        compiled = run_recording_warnings("step")
    assert ("Encountered NaN: loss", "trace_elbo.py") in _texts_and_files(eager)
    assert compiled.warnings == eager.warnings  # text, category, file and line, in eager's order
    assert compiled.compiled.guards == 0 and compiled.compiled.eager_steps == 0
    nan = float("nan")
    assert [x if x == x else nan for x in compiled.losses] == pytest.approx(eager.losses, nan_ok=True)


def test_pyro_nan_checks_stay_checks_in_the_graph():
    # Pyro's NaN and inf checks of each site's log_prob_sum (pyro/poutine/trace_struct.py), without
    # distribution validation: a step where one finds a NaN runs compiled, and warns as eager does
    try:
        dist.enable_validation(False)
        eager = run_recording_warnings(None)
        compiled = run_recording_warnings("step")
    finally:
        dist.enable_validation(True)
    assert ("Encountered NaN: log_prob_sum at site 'obs'", "trace_struct.py") in _texts_and_files(eager)
    assert compiled.warnings == eager.warnings  # text, category, file and line, in eager's order
    step = compiled.compiled
    assert {r.origin for r in step.value_reads} == {"pyro"}
    assert any("warn_if_nan" in r.where and r.handling == "warned" for r in step.value_reads)
    assert step.guard_failures == 0 and step.eager_steps == 0 and step.steps == 29
    assert compiled.losses == pytest.approx(eager.losses, nan_ok=True)


def signed_inf_model(data):
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    # +inf above 1, -inf below -1: each of Pyro's two checks finds its own sign on its own steps
    edge = torch.where(x > 1.0, torch.tensor(float("inf")),
                       torch.where(x < -1.0, torch.tensor(float("-inf")), torch.tensor(0.0)))
    pyro.util.warn_if_inf(edge, "edge")
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Normal(x, 1.0), obs=data)


def signed_inf_svi():
    def guide(data):
        pyro.sample("x", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.5))

    return SVI(signed_inf_model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO()), (torch.zeros(5),), {}


def test_each_sign_of_infinity_warns_as_eager_warns():
    eager = run_recording_warnings(None, steps=40, make=signed_inf_svi)
    compiled = run_recording_warnings("step", steps=40, make=signed_inf_svi)
    found = {text for text, _ in _texts_and_files(eager)}
    assert {"Encountered +inf: edge", "Encountered -inf: edge"} <= found
    assert compiled.warnings == eager.warnings
    assert compiled.compiled.eager_steps == 0
    assert_losses_agree(eager, compiled)  # (to float32's rounding, not this CPU's)


def test_validation_errors_are_raised_as_eager_raises_them():
    def run(compile_with):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        svi, args, _ = sqrt_svi()
        for _ in range(50):  # the first step that does not fail creates the optimizer's state
            try:
                svi.step(*args)
                break
            except ValueError:
                continue
        step = compile_svi_step(svi, args, backend=compile_with) if compile_with else svi.step
        for i in range(200):
            try:
                step(*args)
            except ValueError as exc:
                return i, str(exc), {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
        return None

    eager = run(None)
    compiled = run("step")
    assert eager is not None and compiled is not None
    assert compiled[:2] == eager[:2]
    assert "Expected parameter loc" in compiled[1]
    torch.testing.assert_close(compiled[2], eager[2], rtol=0, atol=0)


def test_dice_mask_is_answered_by_a_static_shape_sum():
    from cases import mixture_svi

    eager = train(mixture_svi, steps=20)
    compiled = train(mixture_svi, steps=20, compile_with="step")
    assert compiled.compiled.dice_masks > 0
    assert not [r for r in compiled.compiled.value_reads if "compute_expectation" in r.where]
    assert_losses_agree(eager, compiled)
