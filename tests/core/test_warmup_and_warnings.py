"""Warm-up before compiling, and the JIT's warnings captured and triaged."""

from __future__ import annotations

import warnings

import models
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.optim import Adam

from pyro_jitmagic import RiskyTraceError, compiled


def test_autoguide_prototype_is_built_before_compiling(runner):
    guide = AutoDiagonalNormal(models.gaussian)
    runner.ns.update(svi=SVI(models.gaussian, guide, Adam({"lr": 0.01}), Trace_ELBO()),
                     data=models.data())
    report, error = runner.run("svi.step(data)")

    assert error is None
    (action,) = report.warmup
    assert action.target == "svi" and action.action == "AutoGuide prototype"
    assert action.seconds > 0
    assert guide.prototype_trace is not None
    # only what the guide itself creates is in the param store
    assert set(pyro.get_param_store().keys()) == {"AutoDiagonalNormal.loc", "AutoDiagonalNormal.scale"}
    assert "AutoDiagonalNormal ran the model once to build its prototype" in str(report)


def test_max_plate_nesting_is_found_eagerly_when_not_given(runner):
    guide = AutoDiagonalNormal(pyro.poutine.block(models.hmm, expose=["trans", "emit_loc", "emit_scale"]))
    elbo = TraceEnum_ELBO()
    runner.ns.update(svi=SVI(models.hmm, guide, Adam({"lr": 0.01}), elbo),
                     seq=torch.randn(6))
    report, error = runner.run("svi.step(seq, num_sequences=3, length=6)")

    assert error is None
    assert [w.action for w in report.warmup] == ["AutoGuide prototype", "max_plate_nesting"]
    assert report.warmup[1].detail == "found max_plate_nesting=1"
    assert elbo.max_plate_nesting == float("inf")  # the user's ELBO is untouched


def test_no_warmup_leaves_it_to_pyro(runner):
    guide = AutoDiagonalNormal(models.gaussian)
    runner.ns.update(svi=SVI(models.gaussian, guide, Adam({"lr": 0.01}), Trace_ELBO()),
                     data=models.data())
    report, error = runner.run("svi.step(data)", warmup=False)

    assert error is None
    assert report.warmup == ()
    assert report.compile_count == 1


def test_compiled_steps_draw_the_same_numbers_as_eager_ones():
    # Warm-up consumes randomness exactly as an eager first step does, and the
    # trace starts from the step's own random state, so losses agree step by step.
    def losses(jit):
        pyro.clear_param_store()
        pyro.set_rng_seed(7)
        svi = SVI(models.gaussian, AutoDiagonalNormal(models.gaussian), Adam({"lr": 0.05}), Trace_ELBO())
        data = models.data()
        if not jit:
            return [svi.step(data) for _ in range(30)]
        with compiled(backend="pyro"):
            return [svi.step(data) for _ in range(30)]

    eager, jit = losses(False), losses(True)
    for a, b in zip(eager, jit, strict=True):
        assert b == pytest.approx(a, rel=1e-5)


def test_jit_warnings_are_captured_and_user_warnings_still_shown(runner, capsys):
    def noisy_model(data):
        warnings.warn("my own warning", UserWarning, stacklevel=1)
        models.gaussian(data)

    runner.ns.update(svi=SVI(noisy_model, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO()),
                     data=models.data())
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        report, error = runner.run("for _ in range(2):\n    svi.step(data)")

    assert error is None
    printed = capsys.readouterr()
    assert "TracerWarning" not in printed.err + printed.out
    assert not [w for w in shown if "TracerWarning" in type(w.message).__name__]
    assert any("my own warning" in str(w.message) for w in shown)
    kinds = {w.kind for w in report.warnings}
    assert "benign" in kinds and "deprecation" in kinds
    assert report.risky_warnings == ()


def test_risky_warning_names_the_users_line(runner):
    runner.ns.update(svi=SVI(models.branchy, models.branchy_guide, Adam({"lr": 0.01}), Trace_ELBO()),
                     data=models.data())
    report, error = runner.run("svi.step(data)")

    assert error is None
    (risky,) = report.risky_warnings
    assert "Converting a tensor to a Python boolean" in risky.message
    assert risky.source == "scale = 1.0 if loc > 0 else 2.0"
    assert risky.where.startswith("models.py:")
    text = str(report)
    assert "RISKY" in text and "scale = 1.0 if loc > 0 else 2.0" in text


def test_warnings_show_also_prints_them(runner):
    runner.ns.update(svi=SVI(models.branchy, models.branchy_guide, Adam({"lr": 0.01}), Trace_ELBO()),
                     data=models.data())
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        report, error = runner.run("svi.step(data)", warnings="show")

    assert error is None
    assert any("Converting a tensor to a Python boolean" in str(w.message) for w in shown)
    assert len(report.risky_warnings) == 1


def test_warnings_error_stops_before_the_compiled_step_is_used(runner):
    svi = SVI(models.branchy, models.branchy_guide, Adam({"lr": 0.01}), Trace_ELBO())
    runner.ns.update(svi=svi, data=models.data())
    before = pyro.param("b_loc", torch.tensor(0.0)).item()
    report, error = runner.run("svi.step(data)", warnings="error")

    assert isinstance(error, RiskyTraceError)
    assert "risky JIT warning at models.py:" in str(error)
    assert "Converting a tensor to a Python boolean" in str(error)
    assert report.svi_runs[0].steps == ()  # no step completed
    assert pyro.param("b_loc").item() == before  # no compiled gradient step was taken
    assert report.error.startswith("RiskyTraceError")
    # the next cell works normally
    report, error = runner.run("svi.step(data)")
    assert error is None and len(report.svi_runs[0].steps) == 1


def test_the_twin_warns_once_at_the_users_line_for_each_risky_trace():
    from pyro_jitmagic import RiskyTraceWarning

    svi = SVI(models.branchy, models.branchy_guide, Adam({"lr": 0.01}), Trace_ELBO())
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with compiled(backend="pyro"):
            for _ in range(3):
                svi.step(models.data())
    (risky,) = [w for w in shown if w.category is RiskyTraceWarning]
    assert risky.filename.endswith("models.py")
    assert "Converting a tensor to a Python boolean" in str(risky.message)
