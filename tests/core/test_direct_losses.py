"""ELBO losses the cell calls itself, not through SVI.step: compiled, and as eager computes them.

Each behaviour runs through the magic and its twin (the ``runner`` fixture),
and where values matter, against the same code run eager from the same seed.
"""

from __future__ import annotations

import time

import models
import pyro
import pyro.distributions as dist
import pytest
import torch
from patches import assert_nothing_patched
from pyro import infer
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample

from pyro_jitmagic.compat import jit as compat
from pyro_jitmagic.run.process import PROCESS

# The custom-objective pattern of Pyro's docs, as a new user writes it.
CUSTOM_OBJECTIVE = """
guide = AutoNormal(model); guide(data)
opt = torch.optim.Adam(guide.parameters(), lr=0.01)
loss_fn = Trace_ELBO().differentiable_loss
losses = []
for _ in range(250):
    opt.zero_grad(); loss = loss_fn(model, guide, data); loss.backward(); opt.step()
    losses.append(loss.item())
"""

# Three calls of ``loss_fn`` (the compiling one and two compiled), keeping
# what each returned and the gradients it left on the params.
THREE_CALLS = """
results, grads = [], []
for _ in range(3):
    for _name, p in pyro.get_param_store().named_parameters():
        p.grad = None
    result = loss_fn(model, guide, data)
    if torch.is_tensor(result):
        result.backward()
    results.append(result)
    grads.append({name: None if p.grad is None else p.grad.clone()
                  for name, p in pyro.get_param_store().named_parameters()})
"""


def from_the_start():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)


def run_eager(code, namespace):
    """``code`` run as written (no run active), from the same start as the compiled run
    (seeded after the namespace is built: building a torch module draws random numbers)."""
    from_the_start()
    exec(compile(code, "<eager>", "exec"), namespace)
    return namespace


def relative(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def test_the_custom_objective_cell_compiles_and_agrees_with_eager_step_by_step(runner, patched_targets):
    def names():
        return dict(pyro=pyro, torch=torch, Trace_ELBO=infer.Trace_ELBO, AutoNormal=AutoNormal,
                    model=models.gaussian, data=models.data())

    eager = run_eager(CUSTOM_OBJECTIVE, names())["losses"]
    runner.ns.update(names())
    from_the_start()
    report, error = runner.run(CUSTOM_OBJECTIVE)

    assert error is None
    compiled = runner.ns["losses"]
    assert len(compiled) == len(eager) == 250
    worst = max(relative(c, e) for c, e in zip(compiled, eager, strict=True))
    assert worst < 1e-3, f"losses differ by {worst:.2g} relative"
    (switch,) = report.switches
    assert (switch.target, switch.before, switch.after, switch.compiled) == (
        "loss_fn", "Trace_ELBO", "JitTrace_ELBO", True)
    assert report.compile_count == 1
    (row,) = report.loss_runs
    assert (row.target, row.method, row.model, row.guide, row.elbo) == (
        "loss_fn", "differentiable_loss", "gaussian", "AutoNormal", "JitTrace_ELBO")
    assert len(row.calls) == 250 and row.calls[0].traced and not row.calls[1].traced
    assert row.losses == pytest.approx(compiled)  # -o holds every call
    assert row.last_loss == pytest.approx(compiled[-1])
    assert row.median_call_seconds is not None
    text = str(report)
    assert "nothing was compiled" not in text
    assert "loss_fn: 250 calls in" in text and f"last loss {compiled[-1]:.6g}" in text
    assert_nothing_patched(patched_targets)


METHOD_CASES = [(elbo, method) for elbo in ("Trace_ELBO", "TraceEnum_ELBO", "TraceMeanField_ELBO")
                for method in ("differentiable_loss", "loss", "loss_and_grads")]
METHOD_CASES.append(("TraceGraph_ELBO", "loss_and_grads"))


@pytest.mark.filterwarnings("ignore:.*no sample sites configured for enumeration")
# the optimizing executor runs a trace's backward differently (one node for
# all its outputs): gradients that land must be the same under both
@pytest.mark.parametrize("executor", ["adaptive", "optimizing"])
@pytest.mark.parametrize(("elbo_name", "method"), METHOD_CASES)
def test_each_loss_method_bound_in_an_earlier_cell_compiles_and_returns_what_eager_does(
        runner, elbo_name, method, executor, patched_targets):
    def names():
        elbo = getattr(infer, elbo_name)()
        # bound before the run: the class attribute is never looked up again
        return dict(pyro=pyro, torch=torch, model=models.gaussian, guide=models.gaussian_guide,
                    data=models.data(), elbo=elbo, loss_fn=getattr(elbo, method))

    eager = run_eager(THREE_CALLS, names())
    runner.ns.update(names())
    from_the_start()
    report, error = runner.run(THREE_CALLS, executor=executor)

    assert error is None
    assert report.compile_count == 1
    (row,) = report.loss_runs
    assert (row.target, row.method, row.elbo) == ("loss_fn", method, f"Jit{elbo_name}")
    assert len(row.calls) == 3
    compiled = runner.ns
    for e, c in zip(eager["results"], compiled["results"], strict=True):
        if method == "differentiable_loss":  # a tensor with its graph, as eager returns
            assert torch.is_tensor(c) and c.requires_grad and c.grad_fn is not None
            assert relative(c.item(), e.item()) < 1e-5
        else:
            assert type(c) is type(e) is float
            assert relative(c, e) < 1e-5
    assert row.losses == pytest.approx([float(torch.as_tensor(r).detach()) for r in compiled["results"]])
    for e, c in zip(eager["grads"], compiled["grads"], strict=True):
        assert e.keys() == c.keys() == {"loc_loc", "scale_loc"}
        for name in e:
            if method == "loss":  # no gradient, as eager
                assert e[name] is None and c[name] is None
            else:
                assert torch.allclose(c[name], e[name], rtol=1e-4, atol=1e-6), name
    assert_nothing_patched(patched_targets)


class Regression(PyroModule):
    """A Bayesian linear regression written as a PyroModule."""

    def __init__(self):
        super().__init__()
        self.linear = PyroModule[torch.nn.Linear](1, 1)
        self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 1]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([1]).to_event(1))

    def forward(self, x, y):
        sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=y)


PYRO_MODULE = """
guide = AutoNormal(regression); guide(x, y)
elbo = Trace_ELBO()(regression, guide)
opt = torch.optim.Adam(elbo.parameters(), lr=0.02)
losses = []
for _ in range(30):
    opt.zero_grad(); loss = elbo(x, y); loss.backward(); opt.step()
    losses.append(loss.item())
"""


def test_a_pyro_module_trained_with_a_torch_optimizer_compiles(runner):
    def names():
        x = torch.linspace(0.0, 1.0, 30).unsqueeze(-1)
        return dict(torch=torch, Trace_ELBO=infer.Trace_ELBO, AutoNormal=AutoNormal,
                    regression=Regression(), x=x, y=2.0 * x.squeeze(-1) + 0.5)

    eager = run_eager(PYRO_MODULE, names())["losses"]
    runner.ns.update(names())
    from_the_start()
    report, error = runner.run(PYRO_MODULE)

    assert error is None
    (row,) = report.loss_runs
    assert (row.target, row.elbo, row.model, len(row.calls)) == ("elbo", "JitTrace_ELBO", "Regression", 30)
    assert max(relative(c, e) for c, e in zip(runner.ns["losses"], eager, strict=True)) < 1e-3


def test_losses_are_named_as_the_user_holds_them(runner):
    runner.ns.update(pyro=pyro, model=models.gaussian, guide=models.gaussian_guide, data=models.data(),
                     Trace_ELBO=infer.Trace_ELBO, elbo=infer.Trace_ELBO())
    report, error = runner.run("elbo.loss(model, guide, data)\n"
                               "Trace_ELBO().loss_and_grads(model, guide, data)\n")

    assert error is None
    assert [r.target for r in report.loss_runs] == ["elbo.loss", "Trace_ELBO().loss_and_grads"]
    assert all(s.after == "JitTrace_ELBO" for s in report.switches)


def test_one_loss_with_two_models_gets_a_row_for_each():
    from pyro_jitmagic import compiled

    loss_fn = infer.Trace_ELBO().differentiable_loss
    data = models.data()
    with compiled(names={"loss_fn": loss_fn}, backend="pyro") as run:
        loss_fn(models.gaussian, models.gaussian_guide, data)
        loss_fn(models.shifted, models.gaussian_guide, data)
    targets = [r.target for r in run.report.loss_runs]
    assert targets == ["loss_fn", "loss_fn(shifted, gaussian_guide)"]
    assert run.report.compile_count == 2  # a companion per model


REUSED = """
a = shared.differentiable_loss(model_a, guide, data).item()
b = shared.differentiable_loss(model_b, guide, data).item()
"""


def test_a_reused_jit_elbo_computes_the_second_models_loss(runner, patched_targets):
    def names(elbo):
        return dict(shared=elbo, model_a=models.gaussian, model_b=models.shifted,
                    guide=models.gaussian_guide, data=models.data())

    eager = run_eager(REUSED, names(infer.Trace_ELBO()))
    shared = infer.JitTrace_ELBO()
    runner.ns.update(names(shared))
    from_the_start()
    report, error = runner.run(REUSED)

    assert error is None
    a, b = runner.ns["a"], runner.ns["b"]
    assert relative(a, eager["a"]) < 1e-5
    assert relative(b, eager["b"]) < 1e-5  # model_b's loss ...
    assert relative(b, a) > 0.1  # ... not model_a's, which Pyro alone would return
    note = next(n for n in report.notes if "first compiled for" in n)
    assert "gaussian" in note and "shifted" in note
    second = report.switches[-1]
    assert second.compiled and "its own compiled copy" in second.reason
    # the user's ELBO is as written: still compiled for the first model only
    assert compat.bound_model_and_guide(shared)[0] is models.gaussian
    assert_nothing_patched(patched_targets)


def test_svi_steps_evaluate_loss_and_predictive_stay_as_they_are(runner, patched_targets):
    from pyro.infer import SVI, Predictive
    from pyro.optim import Adam

    guide = AutoNormal(models.gaussian)
    svi = SVI(models.gaussian, guide, Adam({"lr": 0.01}), infer.Trace_ELBO())
    runner.ns.update(svi=svi, guide=guide, data=models.data(), model=models.gaussian,
                     Predictive=Predictive)
    report, error = runner.run(
        "svi.step(data)\n"
        "evaluated = svi.evaluate_loss(data)\n"
        "samples = Predictive(model, guide=guide, num_samples=3)(data)\n")

    assert error is None
    assert report.loss_runs == ()  # SVI.step's and evaluate_loss's own ELBO calls are not rows
    (switch,) = report.switches
    assert switch.target == "svi" and switch.compiled
    assert report.compile_count == 1
    assert type(runner.ns["evaluated"]) is float
    assert any(n.startswith("SVI.evaluate_loss ran eager") for n in report.notes)
    assert any(n.startswith("Predictive ran eager") for n in report.notes)
    assert_nothing_patched(patched_targets)


class SubclassedELBO(infer.Trace_ELBO):
    """A user's ELBO: switching it to JitTrace_ELBO would drop its overrides."""


@pytest.mark.parametrize(
    ("make", "method", "reason"),
    [
        (SubclassedELBO, "differentiable_loss", "SubclassedELBO subclasses Trace_ELBO"),
        (infer.RenyiELBO, "loss_and_grads", "RenyiELBO has no JIT counterpart in Pyro"),
        (infer.TraceGraph_ELBO, "loss", "Pyro's JitTraceGraph_ELBO compiles only loss_and_grads"),
        (infer.JitTrace_ELBO, "loss", "Pyro's JitTrace_ELBO computes loss eagerly"),
    ],
    ids=["subclass", "renyi", "tracegraph-loss", "jit-loss"],
)
def test_losses_without_a_compiled_form_run_as_written_and_say_why(runner, make, method, reason):
    elbo = make()
    runner.ns.update(loss_fn=getattr(elbo, method), model=models.gaussian, guide=models.gaussian_guide,
                     data=models.data())
    report, error = runner.run("for _ in range(2):\n    loss_fn(model, guide, data)")

    assert error is None
    (switch,) = report.switches
    assert switch.target == "loss_fn" and not switch.compiled and switch.before == switch.after
    assert reason in switch.reason
    assert report.compile_count == 0
    (row,) = report.loss_runs
    assert row.elbo == type(elbo).__name__ and len(row.calls) == 2
    assert reason in str(report)


def failing_model(data, fail=False):
    if fail:
        raise FAILURE("inside the loss")
    models.gaussian(data)


def failing_guide(data, fail=False):
    models.gaussian_guide(data)


FAILURE: type[BaseException] = ValueError


@pytest.mark.parametrize("failure", [ValueError, KeyboardInterrupt])
def test_nothing_stays_patched_when_the_loss_raises(runner, failure, patched_targets, monkeypatch):
    monkeypatch.setitem(globals(), "FAILURE", failure)
    loss_fn = infer.Trace_ELBO().differentiable_loss
    runner.ns.update(loss_fn=loss_fn, model=failing_model, guide=failing_guide, data=models.data())
    # a new keyword value is a new key: its first call runs the model, which raises
    report, error = runner.run("for _ in range(3):\n    loss_fn(model, guide, data).backward()\n"
                               "loss_fn(model, guide, data, fail=True)")

    assert isinstance(error, failure)
    assert report.error.startswith(failure.__name__)
    assert len(report.loss_runs[0].calls) == 3  # what ran before is reported
    assert_nothing_patched(patched_targets)
    assert torch.is_tensor(loss_fn(failing_model, failing_guide, models.data()))  # as written again


def test_nothing_stays_patched_after_ctrl_c_in_a_loss_loop(runner, patched_targets, ctrl_c):
    runner.ns.update(loss_fn=infer.Trace_ELBO().differentiable_loss, model=models.gaussian,
                     guide=models.gaussian_guide, data=models.data(), time=time)
    # Python drops a SIGINT that lands in a weakref callback during garbage collection ("Exception
    # ignored"), as it would a user's Ctrl-C: the loop then ends by itself, and the user presses
    # it again.
    for _ in range(3):
        timer = ctrl_c(1.0)
        report, error = runner.run("end = time.perf_counter() + 5.0\n"
                                   "while time.perf_counter() < end:\n"
                                   "    loss_fn(model, guide, data).backward()")
        timer.cancel()
        if error is not None:
            break

    assert isinstance(error, KeyboardInterrupt)
    assert report.error == "KeyboardInterrupt"
    assert len(report.loss_runs[0].calls) > 0
    assert_nothing_patched(patched_targets)


def test_auto_decides_for_a_loss_called_directly(runner, auto_policy):
    auto_policy()
    runner.ns.update(loss_fn=infer.Trace_ELBO().differentiable_loss, model=models.gaussian,
                     guide=models.gaussian_guide, data=models.data())
    report, error = runner.run("for _ in range(5):\n    loss_fn(model, guide, data).backward()", auto=True)

    assert error is None
    (decision,) = report.auto
    assert (decision.owner, decision.key) == ("loss_fn", "1 positional arg")
    assert decision.eager_steps + decision.compiled_steps == 5


def test_a_risky_line_in_the_model_is_named_through_a_direct_call(runner):
    runner.ns.update(loss_fn=infer.Trace_ELBO().differentiable_loss, model=models.branchy,
                     guide=models.branchy_guide, data=models.data())
    report, error = runner.run("loss_fn(model, guide, data).backward()")

    assert error is None
    (risky,) = report.risky_warnings
    assert risky.source == "scale = 1.0 if loc > 0 else 2.0"
    assert risky.where.startswith("models.py:")


def test_the_cache_keeps_the_companion_with_its_hits(runner):
    from pyro_jitmagic.inspector import Inspector

    elbo = infer.Trace_ELBO()
    runner.ns.update(loss_fn=elbo.differentiable_loss, model=models.gaussian,
                     guide=models.gaussian_guide, data=models.data())
    runner.run("for _ in range(4):\n    loss_fn(model, guide, data).backward()")
    second, _ = runner.run("loss_fn(model, guide, data).backward()")

    assert second.compile_count == 0  # the next cell reuses the trace
    session = PROCESS.session
    (companion,) = [c for e, _m, _g, c in session.companions() if e is elbo]
    snap = Inspector(session).snapshot({"loss_fn": runner.ns["loss_fn"]},
                                                                 [companion])
    (function,) = snap.functions
    assert function.owner == "loss_fn (Trace_ELBO, compiled by %%pyrojit as JitTrace_ELBO)"
    assert function.serves == "model=gaussian, guide=gaussian_guide"
    assert function.entries[0].hits == 5


def test_a_loss_pyro_cannot_compile_falls_back_to_eager_from_its_first_call(runner, patched_targets):
    # a TraceGraph_ELBO with a decaying-average baseline
    loop = ("losses = []\nfor _ in range(10):\n"
            "    losses.append(loss_fn(coin_model, coin_guide, COINS))\n"
            "    for _name, p in pyro.get_param_store().named_parameters():\n"
            "        p.grad = None\n")

    def names():
        return dict(pyro=pyro, loss_fn=infer.TraceGraph_ELBO().loss_and_grads, coin_model=models.coin_model,
                    coin_guide=models.coin_guide, COINS=models.COINS)

    expected = run_eager(loop, names())["losses"]
    runner.ns.update(names())
    from_the_start()
    report, error = runner.run(loop)

    assert error is None
    (switch,) = report.switches
    assert not switch.compiled and "decaying-average baseline" in switch.reason
    assert runner.ns["losses"] == pytest.approx(expected, rel=1e-6)  # the same calls as eager
    assert report.compile_count == 0 and report.risky_warnings == ()
    assert len(report.loss_runs[0].calls) == 10
    assert_nothing_patched(patched_targets)
    report, error = runner.run("loss_fn(coin_model, coin_guide, COINS)")  # a later cell knows at once
    assert error is None and not report.switches[0].compiled and report.compile_count == 0
