"""Failures a user must be protected from: everything restored, and advice that says what to do."""

from __future__ import annotations

import models
import pyro
import pyro.distributions as dist
import pytest
import torch
from patches import assert_nothing_patched
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.optim import Adam

from pyro_jitmagic import StrayParamError, compiled


def test_exception_mid_cell_restores_everything_and_keeps_the_report(runner, patched_targets):
    svi = SVI(models.gaussian, AutoDiagonalNormal(models.gaussian), Adam({"lr": 0.01}), Trace_ELBO())
    runner.ns.update(svi=svi, data=models.data())
    report, error = runner.run(
        "for i in range(5):\n"
        "    svi.step(data)\n"
        "    if i == 2:\n"
        "        raise ValueError('user code failed')\n")

    assert isinstance(error, ValueError)
    assert report.error == "ValueError: user code failed"
    assert len(report.svi_runs[0].steps) == 3
    assert_nothing_patched(patched_targets)
    assert svi.loss_and_grads.__self__.__class__ is Trace_ELBO
    report, error = runner.run("svi.step(data)")
    assert error is None and report.compile_count == 0  # the trace from before is reused


class InterruptingAdam(pyro.optim.PyroOptim):
    """An optimizer that is interrupted on a given call, as Ctrl-C would."""

    def __init__(self, on_call):
        super().__init__(torch.optim.Adam, {"lr": 0.01})
        self.calls, self.on_call = 0, on_call

    def __call__(self, params, *args, **kwargs):
        self.calls += 1
        if self.calls == self.on_call:
            raise KeyboardInterrupt
        return super().__call__(params, *args, **kwargs)


def interrupt_when(condition):
    def model(data):
        if condition():
            raise KeyboardInterrupt
        models.gaussian(data)

    return model


@pytest.mark.parametrize("where", ["warm-up", "tracing", "compiled steps"])
def test_keyboard_interrupt_restores_everything(runner, patched_targets, where):
    state = {"calls": 0}

    def counting():
        state["calls"] += 1
        if where == "warm-up":
            return state["calls"] == 1  # the AutoGuide prototype run
        if where == "tracing":
            return torch._C._get_tracing_state() is not None
        return False

    model = interrupt_when(counting)
    optim = InterruptingAdam(on_call=3) if where == "compiled steps" else Adam({"lr": 0.01})
    svi = SVI(model, AutoDiagonalNormal(model), optim, Trace_ELBO())
    runner.ns.update(svi=svi, data=models.data())
    params_before = set(pyro.get_param_store().keys())
    report, error = runner.run("for _ in range(5):\n    svi.step(data)")

    assert isinstance(error, KeyboardInterrupt)
    assert report.error == "KeyboardInterrupt"
    assert_nothing_patched(patched_targets)
    assert svi.loss_and_grads.__self__.__class__ is Trace_ELBO
    if where == "compiled steps":
        assert len(report.svi_runs[0].steps) == 2
    else:
        assert set(pyro.get_param_store().keys()) <= params_before | {
            "AutoDiagonalNormal.loc", "AutoDiagonalNormal.scale"}


def test_reused_jit_elbo_with_another_model_computes_that_models_loss(runner):
    # Pyro alone would silently return the first model's loss for the second SVI.
    elbo = JitTrace_ELBO()
    data = models.data()
    first = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), elbo)
    second = SVI(models.shifted, models.gaussian_guide, Adam({"lr": 0.01}), elbo)
    runner.ns.update(first=first, second=second, data=data)
    pyro.set_rng_seed(1)
    report, error = runner.run("first.step(data)\nloss = second.step(data)")

    assert error is None
    pyro.set_rng_seed(1)
    pyro.clear_param_store()
    reference = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())
    reference.step(data)
    expected = SVI(models.shifted, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO()).step(data)
    assert runner.ns["loss"] == pytest.approx(expected, rel=1e-4)
    second_switch = report.switches[1]
    assert second_switch.target == "second" and second_switch.compiled
    assert "first compiled for gaussian" in second_switch.reason
    assert any("silently return that model's loss" in note for note in report.notes)


def _model_with_n(data, n):
    models.gaussian(data[:n])


def _guide_with_n(data, n):
    models.gaussian_guide(data)


def test_a_non_tensor_positional_argument_runs_eager_and_says_what_to_do(runner):
    # Pyro's JIT passes positional arguments to its trace as tensors, and fails on an int by hand
    svi = SVI(_model_with_n, _guide_with_n, Adam({"lr": 0.01}), Trace_ELBO())
    runner.ns.update(svi=svi, data=models.data())
    report, error = runner.run("svi.step(data, 10)\nsvi.step(data, 10)")

    assert error is None
    (line,) = report.guards
    assert "ran eager" in line and "positional argument 2 of the step is a int" in line
    assert "pass it as a keyword argument" in line


def test_a_non_tensor_positional_argument_of_a_jit_elbo_built_by_hand_gets_advice(runner):
    # a JitTrace_ELBO the user built keeps Pyro's behaviour, and its failure says what to do
    svi = SVI(_model_with_n, _guide_with_n, Adam({"lr": 0.01}), JitTrace_ELBO())
    runner.ns.update(svi=svi, data=models.data())
    report, error = runner.run("svi.step(data, 10)")

    assert isinstance(error, RuntimeError)
    assert "positional argument 2 of the step is a int" in report.advice
    assert "pass it as a keyword argument" in report.advice
    assert any("pyro_jitmagic: positional argument 2" in note for note in error.__notes__)


def test_an_unhashable_keyword_argument_runs_eager_and_says_why(runner):
    class Settings:
        __hash__ = None

    def model(data, settings=None):
        models.gaussian(data)

    def guide(data, settings=None):
        models.gaussian_guide(data)

    svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
    runner.ns.update(svi=svi, data=models.data(), Settings=Settings)
    report, error = runner.run("svi.step(data, settings=Settings())")

    assert error is None
    (line,) = report.guards
    assert "calls ran eager: keyword argument settings=Settings is unhashable" in line


def test_a_global_tensor_that_requires_grad_runs_eager_and_says_what_to_do(runner):
    weight = torch.ones(1, requires_grad=True)

    def model(data):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("data", data.size(0)):
            pyro.sample("obs", dist.Normal(loc * weight, 1.0), obs=data)

    svi = SVI(model, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())
    runner.ns.update(svi=svi, data=models.data())
    report, error = runner.run("svi.step(data)\nsvi.step(data)")

    assert error is None
    (switch,) = report.switches
    assert not switch.compiled and "requires grad and is no Pyro param" in switch.reason
    assert weight.grad is not None  # eager's backward filled it, as it does without the magic


def test_param_created_while_tracing_is_removed_with_a_clear_error(runner):
    calls = {"n": 0}

    def guide(data):
        calls["n"] += 1
        models.gaussian_guide(data)
        if calls["n"] >= 2:  # Pyro's param-finding run is the first call, the trace the second
            pyro.param("late", torch.tensor(1.0))

    svi = SVI(models.gaussian, guide, Adam({"lr": 0.01}), Trace_ELBO())
    runner.ns.update(svi=svi, data=models.data())
    report, error = runner.run("svi.step(data)")

    assert isinstance(error, StrayParamError)
    assert "pyro.param 'late' was first created while tracing" in str(error)
    assert "late" not in pyro.get_param_store()
    assert report.error.startswith("StrayParamError")


def test_torch_without_jit_trace_runs_eager_and_says_so(runner, monkeypatch, patched_targets):
    monkeypatch.delattr(torch.jit, "trace")
    del patched_targets["torch.jit.trace"]
    svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())
    runner.ns.update(svi=svi, data=models.data())
    report, error = runner.run("for _ in range(2):\n    svi.step(data)")

    assert error is None
    assert not report.switches[0].compiled
    assert report.switches[0].reason == "torch.jit.trace is not available in this torch"
    assert any("torch.jit.trace is not available" in note for note in report.notes)
    assert len(report.svi_runs[0].steps) == 2
    assert not hasattr(torch.jit, "trace")
    assert_nothing_patched(patched_targets)


def test_a_leftover_patch_is_healed_on_the_next_run(patched_targets):
    from pyro_jitmagic.jitrun import JitRun

    run = JitRun(backend="pyro")
    run.__enter__()
    run._ctx.patches._undo.clear()  # as if the process were cut off before cleanup
    from pyro_jitmagic.run.process import PROCESS

    PROCESS.runs.remove(run)
    run._ctx.capture.__exit__(None, None, None)
    assert hasattr(vars(SVI)["step"], "__pyrojit_original__")
    assert Trace_ELBO.differentiable_loss.__code__ is not patched_targets["ELBO loss methods"][2][
        "Trace_ELBO.differentiable_loss"]

    with compiled(backend="pyro") as healed:
        pass
    assert_nothing_patched(patched_targets)
    assert any(note.startswith("restored SVI.step") for note in healed.report.notes)
    assert any(note.startswith("restored the ELBO loss methods") for note in healed.report.notes)


def test_nested_runs_restore_in_order(patched_targets):
    svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())
    data = models.data()
    with compiled(backend="pyro") as outer:
        svi.step(data)
        with compiled(backend="pyro") as inner:
            svi.step(data)
        svi.step(data)
    assert_nothing_patched(patched_targets)
    assert len(inner.report.svi_runs[0].steps) == 1
    assert len(outer.report.svi_runs[0].steps) == 2
    assert outer.report.compile_count == 1 and inner.report.compile_count == 0
