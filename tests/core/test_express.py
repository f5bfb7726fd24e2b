"""The short way of settled whole steps (``Express``): once a compiled step runs the way it will from
then on, a step skips the ladder, the route and the signature's lookup. Whatever the long way would
see (another signature, a changed global, a step under ``no_grad``, the sentinel's check falling
due) it must still see: each test counts the steps the short way ran, so that it is exercised."""

from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path

import models
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from agreement import rounding_atol
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.optim import Adam

import pyro_jitmagic
from pyro_jitmagic import AutoPolicy
from pyro_jitmagic.wholestep.step import CompiledStep

DATA = models.data(40)


class Ran(list):
    """The losses of the steps the short way ran, and how many calls it handed on for an in-graph
    guard that failed."""

    guard_failures = 0


@pytest.fixture
def short_way(monkeypatch):
    """What the short way ran (a :class:`Ran`, to be read after the run)."""
    ran = Ran()
    made = CompiledStep.short_way

    def counted(self, call_site=None):
        way = made(self, call_site)
        if way is None:
            return None

        def counting(args, kwargs):
            failures = self.guard_failures
            loss = way(args, kwargs)
            if loss is not None:
                ran.append(loss)
            elif self.guard_failures > failures:
                ran.guard_failures += 1
            return loss

        return counting

    monkeypatch.setattr(CompiledStep, "short_way", counted)
    return ran


def shifted(data, shift):
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc + shift, 1.0), obs=data)


PRIOR_SCALE = 1.0


def global_prior(data):
    loc = pyro.sample("loc", dist.Normal(0.0, PRIOR_SCALE))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)


def _run(model, body, guide=None, **options):
    """``body(svi)`` from a fresh param store and seed: eager when no options, else compiled."""
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    svi = SVI(model, guide or AutoDiagonalNormal(model), Adam({"lr": 0.02}), Trace_ELBO())
    if not options:
        return body(svi), None
    with pyro_jitmagic.compiled(**options) as run:
        losses = body(svi)
    return losses, run.report


def assert_losses_agree(losses, eager):
    """Step by step, to float32's rounding over the steps taken (not to this CPU's)."""
    expected = torch.tensor(eager, dtype=torch.float32)
    torch.testing.assert_close(torch.tensor(losses, dtype=torch.float32), expected, rtol=0,
                               atol=rounding_atol(expected, len(eager)))


def _params():
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


def _as_eager(model, body, steps, **options):
    """``body`` run eager, then compiled with ``options``: the compiled run's report, its losses and
    final params eager's to float32's rounding over ``steps``."""
    eager, _ = _run(model, body)
    params = _params()
    losses, report = _run(model, body, **options)
    assert_losses_agree(losses, eager)
    for name, value in _params().items():
        torch.testing.assert_close(value, params[name], rtol=0, atol=rounding_atol(params[name], steps))
    return report


def test_settled_steps_take_the_short_way_with_eagers_losses_and_every_step_in_the_report(short_way):
    def body(svi):
        return [svi.step(DATA) for _ in range(80)]

    report = _as_eager(models.gaussian, body, 80, backend="step")
    assert len(short_way) >= 70  # all but the first few (eager, capture, first compiled calls)
    (svi_run,) = report.svi_runs
    assert len(svi_run.steps) == 80  # the short way's steps are timed and recorded too


def test_the_cache_entrys_last_hit_is_its_last_step_on_the_short_way_not_the_runs_end(short_way):
    from pyro_jitmagic.run.process import PROCESS

    seen = {}

    def body(svi):
        losses = [svi.step(DATA) for _ in range(30)]
        time.sleep(0.2)  # (the last ten steps, on the short way, start well after the steps before)
        seen["before the last ten"] = time.time()
        losses += [svi.step(DATA) for _ in range(10)]
        seen["svi"], seen["after the last"] = svi, time.time()
        time.sleep(0.2)  # (the run ends well after its last step)
        return losses

    _run(models.gaussian, body, backend="step")
    assert len(short_way) >= 30
    (entry,) = PROCESS.session.whole_steps.of(seen["svi"]).values()
    # (a margin far above two clocks' drift over the run, far below the sleeps around the last ten)
    assert seen["before the last ten"] - 0.05 <= entry.last_hit <= seen["after the last"] + 0.05


def test_another_signature_leaves_the_short_way_and_compiles_its_own_step(short_way):
    def body(svi):
        return [svi.step(DATA, 0.5 if i % 10 < 5 else 1.5) for i in range(60)]

    eager, _ = _run(shifted, body)
    losses, report = _run(shifted, body, backend="step")
    assert_losses_agree(losses, eager)
    assert len(report.compilations) == 2  # one graph per shift, each holding its shift as a constant
    assert short_way  # the runs of five between the switches


def test_a_global_changed_in_the_loop_is_seen_on_the_short_way(short_way):
    def body(svi):
        global PRIOR_SCALE
        losses = []
        try:
            for i in range(60):
                PRIOR_SCALE = 1.0 if i < 30 else 10.0
                losses.append(svi.step(DATA))
        finally:
            PRIOR_SCALE = 1.0
        return losses

    eager, _ = _run(global_prior, body)
    before = len(short_way)
    losses, report = _run(global_prior, body, backend="step")
    assert_losses_agree(losses, eager)
    assert len(short_way) > before
    assert any("PRIOR_SCALE" in line for line in report.guards)  # compiled again for the new value


def test_optimizer_state_put_back_or_cleared_in_the_loop_is_seen_on_the_short_way(short_way):
    def body(svi):
        losses = [svi.step(DATA) for _ in range(30)]
        optimizers = svi.optim.optim_objs.values()
        saved = [copy.deepcopy(o.state_dict()) for o in optimizers]  # Adam's moments and step count
        losses += [svi.step(DATA) for _ in range(20)]
        for optimizer, state in zip(optimizers, saved, strict=True):
            optimizer.load_state_dict(state)  # (new state tensors, with the old values)
        losses += [svi.step(DATA) for _ in range(20)]
        for optimizer in optimizers:
            optimizer.state.clear()  # (Adam starts again from no moments)
        losses += [svi.step(DATA) for _ in range(20)]
        return losses

    eager, _ = _run(models.gaussian, body)
    losses, _ = _run(models.gaussian, body, backend="step")
    assert_losses_agree(losses, eager)
    assert len(short_way) >= 60


def _state_tensor_replaced(svi):
    optimizer = next(iter(svi.optim.optim_objs.values()))
    (state,) = optimizer.state.values()
    state["exp_avg"] = torch.full_like(state["exp_avg"], 0.5)  # (a new tensor in the same dict)


def _betas_changed(svi):
    for optimizer in svi.optim.optim_objs.values():
        optimizer.param_groups[0]["betas"] = (0.5, 0.9)  # (the same group dict, another value)


def _lr_changed(svi):
    for optimizer in svi.optim.optim_objs.values():
        optimizer.param_groups[0]["lr"] = 0.005  # (what a learning-rate schedule does)


def _param_replaced(svi):
    store = pyro.get_param_store()
    store["AutoDiagonalNormal.loc"] = store["AutoDiagonalNormal.loc"].detach() + 1.0


def narrow_gaussian(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 0.1))  # (models.gaussian's sites, a narrower prior)
    scale = pyro.sample("scale", dist.LogNormal(0.0, 3.0))
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Normal(loc, scale), obs=data)


def _model_replaced(svi):
    svi.model = narrow_gaussian  # (the SVI's own attributes)


def _elbo_setting_changed(svi):
    svi.loss_and_grads.__self__.num_particles = 3  # (the ELBO's attributes, read by the world's guards)


@pytest.mark.parametrize("change", [_state_tensor_replaced, _betas_changed, _lr_changed, _param_replaced,
                                    _model_replaced, _elbo_setting_changed])
def test_a_dict_the_short_way_skips_while_it_is_unchanged_is_seen_when_changed_in_place(short_way, change):
    # The short way reads an optimizer's state and param group, the param store, the SVI's and the
    # ELBO's attributes again only once their dict changed (its version): each changed here, between
    # short-way steps, in the dict the short way watches, must reach the steps after as it reaches eager's
    def body(svi):
        losses = [svi.step(DATA) for _ in range(30)]
        change(svi)
        return losses + [svi.step(DATA) for _ in range(30)]

    _as_eager(models.gaussian, body, 60, backend="step")
    assert len(short_way) >= 45  # (before the change, and after it once settled again)


def test_a_step_under_no_grad_or_a_handler_runs_eager_while_the_short_way_is_open(short_way):
    def body(svi):
        losses = [svi.step(DATA) for _ in range(30)]
        with torch.no_grad():
            losses.append(svi.step(DATA))  # eager Pyro trains nothing here
        losses += [svi.step(DATA) for _ in range(10)]
        with poutine.scale(scale=0.25):
            losses.append(svi.step(DATA))  # every site of this step scaled
        return losses + [svi.step(DATA) for _ in range(10)]

    eager, _ = _run(models.gaussian, body)
    losses, report = _run(models.gaussian, body, backend="step")
    assert_losses_agree(losses, eager)
    assert any("torch.no_grad() was active" in line for line in report.guards)
    assert any("a Pyro handler was active around it (ScaleMessenger)" in line for line in report.guards)
    assert len(short_way) >= 40


def test_the_sentinel_checks_fall_due_on_the_short_way_as_on_the_long_one(short_way):
    def body(svi):
        return [svi.step(DATA) for _ in range(700)]

    _, report = _run(models.gaussian, body, backend="step")
    # checked at its compiled calls 1, 129 and 641 (the gaps quadrupling: guards/sentinel.py)
    assert report.sentinel_checks == 3 and report.sentinel_findings == 0
    assert len(short_way) >= 680


def test_a_checks_cost_is_eagers_call_and_the_comparison_not_the_graphs_call(monkeypatch):
    # a fake clock that moves only where the test moves it: 1 s in each call of the graph, a quarter
    # in each eager loss of the sentinel's; the report's cost of the checks is the quarters alone
    from types import SimpleNamespace

    from pyro_jitmagic.wholestep import step as step_module

    now = [0.0]
    monkeypatch.setattr(step_module, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    run_now = CompiledStep._run_now

    def slow_graph(self):
        graph = run_now(self)

        def call(*inputs):
            now[0] += 1.0
            return graph(*inputs)

        return call

    eager_check = CompiledStep._eager_check

    def slow_eager(self, args, kwargs, rng):
        loss = self._eager_loss

        def timed(*a):
            now[0] += 0.25
            return loss(*a)

        self._eager_loss = timed
        try:
            return eager_check(self, args, kwargs, rng)
        finally:
            self._eager_loss = loss

    monkeypatch.setattr(CompiledStep, "_run_now", slow_graph)
    monkeypatch.setattr(CompiledStep, "_eager_check", slow_eager)

    def body(svi):
        return [svi.step(DATA) for _ in range(10)]

    _, report = _run(models.gaussian, body, backend="step")
    assert report.sentinel_checks == 1  # (its first compiled call)
    assert report.sentinel_seconds == 0.25


def test_a_branch_that_flips_on_the_short_way_runs_that_step_eager_from_the_same_draws(short_way):
    # models.branchy reads the sign of a draw: a step where it differs from the capture's fails the
    # graph's guard, and runs eager from the random state the short way found
    def body(svi):
        return [svi.step(DATA) for _ in range(80)]

    eager, _ = _run(models.branchy, body, guide=models.branchy_guide)
    losses, _ = _run(models.branchy, body, guide=models.branchy_guide, backend="step")
    assert_losses_agree(losses, eager)
    assert short_way.guard_failures >= 3 and len(short_way) >= 10


def sqrt_model(data):
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(torch.sqrt(x), 1.0), obs=data)  # NaN where x < 0


def sqrt_guide(data):
    pyro.sample("x", dist.Normal(pyro.param("m", torch.tensor(2.0)), 0.8))


def test_a_nan_loss_on_the_short_way_warns_as_eager_warns(short_way):
    def body(svi):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            losses = [svi.step(torch.ones(5)) for _ in range(60)]
        return losses, [(str(w.message), Path(w.filename).name) for w in caught if "NaN" in str(w.message)]

    with pyro.validation_enabled(False):  # (no in-graph checks: the loss itself comes out NaN)
        (eager, eager_warnings), _ = _run(sqrt_model, body, guide=sqrt_guide)
        (losses, warned), _ = _run(sqrt_model, body, guide=sqrt_guide, backend="step")
    assert ("Encountered NaN: loss", "trace_elbo.py") in eager_warnings
    assert warned == eager_warnings
    assert any(loss != loss for loss in short_way) and len(short_way) >= 30
    assert [x if x == x else 0.0 for x in losses] == pytest.approx([x if x == x else 0.0 for x in eager])


def test_pyros_nan_checks_on_the_short_way_warn_as_eager_warns(short_way):
    def body(svi):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            losses = [svi.step(torch.ones(5)) for _ in range(60)]
        return losses, [(str(w.message), w.category, w.filename, w.lineno) for w in caught
                        if "Encountered" in str(w.message)]

    try:
        dist.enable_validation(False)  # (Pyro's own checks of each site's log_prob_sum stay on)
        (eager, eager_warnings), _ = _run(sqrt_model, body, guide=sqrt_guide)
        (losses, warned), _ = _run(sqrt_model, body, guide=sqrt_guide, backend="step")
    finally:
        dist.enable_validation(True)
    assert "Encountered NaN: log_prob_sum at site 'obs'" in {w[0] for w in eager_warnings}
    assert warned == eager_warnings  # text, category, file and line, in eager's order
    # the steps that found a NaN ran the short way to the end: no eager step, no check failed
    assert any(loss != loss for loss in short_way) and short_way.guard_failures == 0
    assert [x if x == x else 0.0 for x in losses] == pytest.approx([x if x == x else 0.0 for x in eager])


def test_the_climb_books_the_short_ways_steps_on_their_tier(short_way):
    def body(svi):
        return [svi.step(DATA) for _ in range(60)]

    eager, _ = _run(models.gaussian, body)
    policy = AutoPolicy(memory=None, prior_capture_steps=3.0)
    losses, report = _run(models.gaussian, body, auto=policy, backend="step")
    assert_losses_agree(losses, eager)
    (row,) = [d for d in report.auto if d.path]
    assert row.state == "step"
    assert row.eager_steps + row.compiled_steps == 60  # the short way's steps counted in the books
    assert len(short_way) >= 40


def _calls():
    """Calls of many signatures: tensors of other shapes, dtypes and strides, plain values, keywords."""
    x = torch.zeros(4, 3)
    return [
        ((x,), {}), ((torch.zeros(4, 3),), {}), ((x.t(),), {}), ((x.double(),), {}),
        ((torch.zeros(5, 3),), {}),
        ((x, 3), {}), ((x, 4), {}), ((x, 3.0), {}), ((x, True), {}), ((x, "a"), {}), ((x, None), {}),
        ((x,), {"n": 3}), ((x,), {"n": 4}), ((x,), {"m": 3}), ((x,), {"n": 3, "m": 1}),
        ((x,), {"mask": torch.ones(4, dtype=torch.bool)}), ((x,), {"mask": torch.ones(5, dtype=torch.bool)}),
        ((x,), {"mask": 1}), ((), {}), ((x, x), {}),
    ]


@pytest.mark.parametrize("index", range(len(_calls())))
def test_a_signatures_check_says_what_its_key_says_for_every_call(index):
    """The short way checks a call's signature by generated code instead of reading its key: it must
    accept exactly the calls whose key is the same (or, where the key holds other values, say so)."""
    from pyro_jitmagic.wholestep.keys import signature_check, step_key

    args, kwargs = _calls()[index]
    check = signature_check(step_key(args, kwargs))
    assert check is not None
    for other_args, other_kwargs in _calls():
        same = step_key(other_args, other_kwargs) == step_key(args, kwargs)
        # (stricter only where the key's equality mixes types: 3 == 3.0 == True)
        assert check(other_args, other_kwargs) == (same and all(
            type(a) is type(b) for a, b in zip(other_args, args, strict=False)))


def test_a_key_with_values_the_check_cannot_hold_has_no_check():
    import numpy as np

    from pyro_jitmagic.wholestep.keys import signature_check, step_key

    assert signature_check(step_key((torch.zeros(2), np.zeros(3)), {})) is None  # keyed by its shape
