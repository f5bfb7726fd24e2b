"""``--auto`` runs keys eager until compiling pays and switching changes no result; executors are restored."""

from __future__ import annotations

import statistics

import models
import pyro
import pytest
import torch
from patches import assert_nothing_patched, executor_flags
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.infer.mcmc import MCMC, NUTS
from pyro.optim import Adam

from pyro_jitmagic import AutoPolicy, JitRun
from pyro_jitmagic.policy.books import KeyBook, Tally

# -- the decisions, from given figures (no clock) --------------------------------


def _book(eager=(), compile_step=None, compiled=(), kind="svi"):
    book = KeyBook(kind, "svi", "1 positional arg")
    tally = Tally(book, compiled_before=False)
    for i, seconds in enumerate(eager, 1):
        tally.add("eager", seconds, i)
    if compile_step is not None:
        tally.add("compile", compile_step, len(eager) + 1)
    for i, seconds in enumerate(compiled, len(eager) + 2):
        tally.add("compiled", seconds, i)
    return book, tally


def test_a_key_compiles_when_the_calls_expected_to_follow_would_repay_it():
    # compiling costs 10 eager steps; compiled steps take half as long
    policy = AutoPolicy(horizon=200, prior_compile_steps={"svi": 10.0}, prior_speedup={"svi": 2.0})
    book, _ = _book()
    assert not policy.decide_svi(book, function_calls=1)  # nothing measured yet: runs eager first
    assert book.why == "ran eager: it takes 3 eager steps to measure a key's step time"
    book, _ = _book(eager=[1.0, 1.0])
    assert not policy.decide_svi(book, function_calls=2)  # a key's first steps pay one-off costs
    # a young function: three steps expect ~200 calls to follow, saving 100 s against 10 s
    book, _ = _book(eager=[1.0] * 3)
    assert policy.decide_svi(book, function_calls=3)
    assert book.why == ("compiled after 3 eager steps: the ~200 calls expected to follow would save "
                        "100 s, more than its expected compile cost (10 s)")
    # a key that took 3 of a function's 300 calls expects 3 more: 1.5 s saved, not worth 10 s
    book, _ = _book(eager=[1.0] * 3)
    assert not policy.decide_svi(book, function_calls=300)
    assert book.why.startswith("stayed eager: the ~3 calls expected to follow would save 1.5 s")
    # ...until 20 calls expect 20 more
    book, _ = _book(eager=[1.0] * 20)
    assert policy.decide_svi(book, function_calls=400)


def test_a_key_that_cannot_repay_its_compile_in_the_cells_steps_left_stays_eager_for_the_cell():
    policy = AutoPolicy(horizon=200, prior_compile_steps={"svi": 10.0}, prior_speedup={"svi": 2.0})
    book, _ = _book(eager=[1.0] * 3)
    # 20 steps left in the whole cell save at most 10 steps, under 1.3 x 10: settled for the cell
    assert not policy.decide_svi(book, function_calls=3, cell=(20.0, 23), left=20)
    assert book.stays == policy.learned
    # 30 steps left could, were this key to take them all: looked at again next step
    book, _ = _book(eager=[1.0] * 3)
    assert not policy.decide_svi(book, function_calls=3, cell=(5.0, 33), left=30)
    assert book.stays is None
    # what a key learns moves the mark: the settled decision is one of figures now out of date
    done, _ = _book(eager=[1.0] * 3, compile_step=2.0, compiled=[0.1] * 8)
    policy.learn(done)
    assert policy.learned == 1


def test_a_key_of_code_compiled_before_is_expected_to_cost_and_gain_what_it_did():
    # the session's figures say compiling costs 10 steps and halves a step; this code's trace cost
    # 40 steps and sped its steps 1.25x when a key of it compiled before
    policy = AutoPolicy(horizon=200, prior_compile_steps={"svi": 10.0}, prior_speedup={"svi": 2.0})
    slow, _ = _book(eager=[1.0] * 3, compile_step=40.8, compiled=[0.8] * 8)
    slow.code = "an enumerated HMM"
    policy.learn(slow)
    assert policy.compile_steps("svi", "an enumerated HMM") == (40.0, True)
    again, _ = _book(eager=[1.0] * 3)
    again.code = "an enumerated HMM"
    # 100 steps to follow save 20 s at 1.25x: not 1.3 x 40 s, though the session's median would bet
    assert not policy.decide_svi(again, function_calls=3, cell=(100.0, 103), left=100)
    other, _ = _book(eager=[1.0] * 3)
    other.code = "another model"
    assert policy.decide_svi(other, function_calls=3, cell=(100.0, 103), left=100)


def test_a_bet_too_close_to_call_stays_eager():
    # the cell's loops say 27 more calls: at 1 s a step and a 2x speedup they save 13.5 s
    policy = AutoPolicy(horizon=200, prior_compile_steps={"svi": 12.0}, prior_speedup={"svi": 2.0})
    book, _ = _book(eager=[1.0] * 3)
    assert not policy.decide_svi(book, function_calls=3, cell=(27.0, 30))  # against 12 s: 1.12x
    assert book.why == ("stayed eager: the ~27 calls expected to follow (the cell's loops run 30 steps) "
                        "would save 13.5 s, too close to its expected compile cost (12 s) to bet on (it "
                        "takes 1.3x)")
    book, _ = _book(eager=[1.0] * 3)
    assert policy.decide_svi(book, function_calls=3, cell=(32.0, 35))  # 16 s against 12 s: 1.33x
    book, _ = _book(eager=[1.0] * 3)
    assert not policy.decide_svi(book, function_calls=3, cell=(20.0, 23))  # 10 s: under the cost itself
    assert book.why.endswith("would save 10 s, under its expected compile cost (12 s)")


def test_a_key_whose_compiled_steps_are_slower_than_eagers_goes_back_to_eager_for_good():
    # a key whose traced steps take four times as long as its eager ones
    policy = AutoPolicy(horizon=200, prior_compile_steps={"svi": 10.0}, prior_speedup={"svi": 2.0})
    book, _ = _book(eager=[0.035] * 3, compile_step=1.0, compiled=[0.16] * 7)
    assert not policy.step_down(book)  # looked at once 8 compiled steps are measured, no sooner
    book, _ = _book(eager=[0.035] * 3, compile_step=1.0, compiled=[0.16] * 8)
    assert policy.step_down(book)
    assert book.why == "back to eager after 8 compiled steps: they took 160 ms each, eager's 35 ms"
    assert policy.step_down(book)  # for the rest of the session
    assert policy.speedup("svi") == (pytest.approx(statistics.median([2.0, 0.035 / 0.16])), True)
    # within the margin, or faster: it stays compiled
    book, _ = _book(eager=[0.035] * 3, compile_step=1.0, compiled=[0.037] * 8)
    assert not policy.step_down(book)
    book, _ = _book(eager=[0.035] * 3, compile_step=1.0, compiled=[0.02] * 32)
    assert not policy.step_down(book)
    # its settling steps (an optimising executor's) do not count against it
    book, _ = _book(eager=[0.035] * 3, compile_step=1.0, compiled=[0.5] * 5 + [0.02] * 3)
    assert not policy.step_down(book)


def test_a_rare_key_compiles_once_running_it_eager_has_cost_what_compiling_would():
    policy = AutoPolicy(horizon=1, prior_compile_steps={"svi": 10.0}, prior_speedup={"svi": 1.5})
    book, _ = _book(eager=[1.0] * 9)
    assert not policy.decide_svi(book, function_calls=10_000)  # 9 more calls save 3 s < 10 s
    book, _ = _book(eager=[1.0] * 10)
    assert policy.decide_svi(book, function_calls=10_000)
    assert book.why == "compiled after 10 eager steps, which took 10 s: its expected compile cost (10 s)"


def test_the_session_learns_what_compiling_costs_and_saves():
    policy = AutoPolicy(prior_compile_steps={"svi": 10.0})
    assert policy.compile_steps("svi") == (10.0, False)
    # 4 eager steps of 1 s; the compiling step 12.5 s; then steady 0.5 s steps
    book, _ = _book(eager=[1.0] * 4, compile_step=12.5, compiled=[0.5] * 20)
    assert book.compile_seconds() == pytest.approx(12.0)
    policy.learn(book)
    policy.learn(book)  # once per key
    # one measurement weighs as much as the prior: 12 and 10 make 11
    assert policy.compile_steps("svi") == (pytest.approx(11.0), True)
    assert policy.speedup("svi") == (pytest.approx(2.0), True)
    # the next key is judged by it: 11 eager steps of 2 s reach 22 s
    nxt, _ = _book(eager=[2.0] * 10)
    assert not policy.decide_svi(nxt, function_calls=10_000)
    nxt, _ = _book(eager=[2.0] * 11)
    assert policy.decide_svi(nxt, function_calls=10_000)


def test_slow_steps_right_after_the_compile_count_toward_its_cost():
    # an optimising executor re-optimises on its first calls
    book, _ = _book(eager=[1.0], compile_step=3.0, compiled=[2.0, 1.5, 0.5, 0.5, 0.5] + [0.5] * 10)
    assert book.compile_seconds() == pytest.approx((3.0 - 0.5) + 1.5 + 1.0)


def test_a_key_whose_compiled_steps_were_no_faster_stays_eager():
    policy = AutoPolicy(prior_compile_steps={"svi": 2.0})
    for _ in range(2):  # two keys whose compiled steps were no faster outweigh the prior
        slow, _ = _book(eager=[1.0] * 3, compile_step=3.0, compiled=[1.0] * 20)
        policy.learn(slow)
    book, _ = _book(eager=[1.0] * 50)
    assert not policy.decide_svi(book, function_calls=50)
    assert "only 1.00x as fast" in book.why


def test_mcmc_compiles_when_the_evaluations_to_come_would_repay_it():
    policy = AutoPolicy(prior_compile_steps={"potential": 10.0}, prior_speedup={"potential": 2.0})
    book, _ = _book(eager=[1e-3] * 8, kind="potential")
    assert not policy.decide_potential(book, samples_done=2, samples_total=1000, evaluations=8)
    # 10 evaluations a sample, 990 samples to come at 1 ms: saves ~5 s against 10 ms
    assert policy.decide_potential(book, samples_done=10, samples_total=1000, evaluations=100)
    assert "compiled after 10 samples" in book.why
    # one sample left: 10 evaluations save 5 ms, less than compiling's 10 ms
    assert not policy.decide_potential(book, samples_done=999, samples_total=1000, evaluations=9990)
    assert book.why.startswith("stayed eager")


def test_the_report_says_what_auto_saved_and_lost():
    policy = AutoPolicy()
    _, tally = _book(eager=[1.0] * 5, compile_step=12.5, compiled=[0.5] * 20)
    d = policy.decision(tally)
    assert (d.state, d.eager_steps, d.compiled_steps, d.compiled_at) == ("eager", 5, 21, 6)
    assert d.seconds == pytest.approx(5 + 12.5 + 10)
    assert d.always_eager_seconds == pytest.approx(26 * 1.0)
    assert d.always_compiled_seconds == pytest.approx(26 * 0.5 + 12.0)
    assert d.saved_vs_eager == pytest.approx(26 - 27.5)
    assert d.saved_vs_compiled == pytest.approx(25 - 27.5)
    assert not d.estimated
    # a key that never compiled: its compiled figures are the session's estimates, and say so
    _, eager_only = _book(eager=[1.0, 3.0, 1.0])
    d = policy.decision(eager_only)
    assert d.estimated
    assert d.always_eager_seconds == 5.0 and d.saved_vs_eager == 0.0  # it did run all eager


def test_what_auto_lost_follows_from_the_figures_shown_beside_it():
    # eager steps of 2.32 ms, compiled ones of 1.16 ms, a compile of 110 ms, 21 compiled steps:
    # the compile is not repaid yet, and the row says by how much and when it will be
    from pyro_jitmagic.display.report import auto_decision_line

    policy = AutoPolicy()
    _, tally = _book(eager=[2.32e-3] * 3, compile_step=0.110 + 1.16e-3, compiled=[1.16e-3] * 20)
    d = policy.decision(tally)
    assert (d.eager_step_seconds, d.compiled_step_seconds) == (pytest.approx(2.32e-3), pytest.approx(1.16e-3))
    assert d.compile_seconds == pytest.approx(0.110)
    assert d.saved_vs_eager == pytest.approx(21 * 1.16e-3 - 0.110)  # -85.6 ms
    assert d.saved_vs_compiled == pytest.approx(-3 * 1.16e-3)
    line = auto_decision_line(d)
    assert ("Lost 85.6 ms vs always eager (21 compiled steps at 1.16 ms less each, less compiling's "
            "110 ms: not repaid yet, that takes ~95 compiled steps)") in line
    assert "lost 3.48 ms vs always compiled (3 eager steps at 1.16 ms more each)" in line
    # noisy steps count the same on both sides: a slow eager step changes neither saving
    _, noisy = _book(eager=[2.32e-3, 9e-3, 2.32e-3], compile_step=0.110 + 1.16e-3,
                     compiled=[1.16e-3] * 20)
    n = policy.decision(noisy)
    assert n.saved_vs_eager == pytest.approx(d.saved_vs_eager)
    assert n.always_eager_seconds - n.seconds == pytest.approx(n.saved_vs_eager)


def test_a_key_that_stayed_eager_saved_what_compiling_would_have_cost():
    from pyro_jitmagic.display.report import auto_decision_line

    policy = AutoPolicy(prior_compile_steps={"svi": 12.0}, prior_speedup={"svi": 2.0})
    _, tally = _book(eager=[1e-3] * 4)
    d = policy.decision(tally)
    # always compiled: 4 steps at 0.5 ms and a compile of 12 ms, against 4 ms eager
    assert d.saved_vs_compiled == pytest.approx(0.012 - 4 * 0.5e-3)
    assert ("saved 10 ms vs always compiled (4 eager steps at 500 µs more each, no compiling's "
            "12 ms to pay)") in auto_decision_line(d)


# -- running real models ------------------------------------------------------


def _eager_losses(steps, model=models.gaussian, seed=3):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    svi = SVI(model, AutoDiagonalNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
    data = models.data()
    return [svi.step(data) for _ in range(steps)]


def test_switching_mid_run_gives_the_eager_losses_step_by_step(runner, auto_policy, patched_targets,
                                                                fake_clock):
    # compiling is expected to cost nothing: it compiles once three eager steps measured the key,
    # whatever the machine's speed; the model's Python takes a millisecond of the fake clock, which
    # compiled steps skip, so that they never measure slower than eager's and step back down
    auto_policy(prior_compile_steps={"svi": 0.0})
    expected = _eager_losses(30)
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    model = models.ticking(fake_clock)
    runner.ns.update(svi=SVI(model, AutoDiagonalNormal(model), Adam({"lr": 0.05}), Trace_ELBO()),
                     data=models.data())
    report, error = runner.run("losses = [svi.step(data) for _ in range(30)]", auto=True)

    assert error is None
    (decision,) = report.auto
    assert decision.owner == "svi" and decision.key == "1 positional arg"
    assert decision.state == "compiled"
    assert decision.eager_steps == 3 and decision.compiled_at == 4
    assert decision.compiled_steps == 30 - decision.eager_steps
    assert report.compile_count == 1
    assert runner.ns["losses"] == pytest.approx(expected, rel=1e-5)
    assert "--auto" in str(report) and decision.why in str(report)
    assert_nothing_patched(patched_targets)


def test_each_key_is_decided_on_its_own(auto_policy, fake_clock):
    # two call signatures (length=3 often, length=6 four times): only the frequent one pays.
    # Time passes only while the model's Python runs (1 ms a call): eager steps run it, compiled
    # steps do not, so every figure, and every decision, is the same on any machine.
    auto_policy(horizon=1, prior_compile_steps={"svi": 8.0})
    sequences = [torch.randn(3) for _ in range(20)] + [torch.randn(6) for _ in range(4)]

    def hmm(*args, **kwargs):
        fake_clock.advance(1e-3)
        return models.hmm(*args, **kwargs)

    def train():
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        guide = AutoDiagonalNormal(pyro.poutine.block(hmm, expose=["trans", "emit_loc", "emit_scale"]))
        svi = SVI(hmm, guide, Adam({"lr": 0.01}), TraceEnum_ELBO(max_plate_nesting=1))
        return [svi.step(s, num_sequences=24, length=len(s)) for s in sequences]

    expected = train()
    with JitRun(auto=True, backend="pyro") as run:  # eager and Pyro's JIT: the tiers above are tested apart
        losses = train()
    assert losses == pytest.approx(expected, rel=1e-5)
    decisions = {d.key: d for d in run.report.auto}
    short = next(d for key, d in decisions.items() if "length=3" in key)
    long = next(d for key, d in decisions.items() if "length=6" in key)
    assert short.state == "compiled" and short.compiled_at is not None
    assert long.state == "eager" and long.eager_steps == 4 and long.compiled_steps == 0
    assert long.why.startswith("stayed eager: the ~3 calls expected to follow would save")
    assert run.report.compile_count == 1, str(run.report)


def test_a_later_cell_uses_the_compile_costs_measured_in_earlier_ones(auto_policy):
    policy = auto_policy(prior_compile_steps={"svi": 0.0})  # compiles at step 4, whatever the speed
    _run_auto_svi(40)
    assert policy.compile_steps("svi")[1]  # measured now, not the prior
    assert policy.speedup("svi")[1]


def _run_auto_svi(steps, model=models.gaussian):
    svi = SVI(model, AutoDiagonalNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
    data = models.data()
    with JitRun(auto=True, backend="pyro") as run:  # Pyro's tier: whether the whole step pays is timed
        for _ in range(steps):
            svi.step(data)
    return run.report, svi


def test_a_key_stepped_down_runs_eager_from_its_next_step_and_in_later_cells(auto_policy, monkeypatch):
    # the decision is the policy's (tested from given figures above); here, what the run does with it
    policy = auto_policy(prior_compile_steps={"svi": 0.0})  # compiles at step 4
    asked = []

    def step_down(book):
        asked.append(book.compiled_calls)
        book.stepped_down = book.stepped_down or book.compiled_calls >= 10
        book.why = "back to eager (as the test says)" if book.stepped_down else book.why
        return book.stepped_down

    monkeypatch.setattr(policy, "step_down", step_down)

    def train(steps):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        svi = SVI(models.gaussian, AutoDiagonalNormal(models.gaussian), Adam({"lr": 0.05}), Trace_ELBO())
        data = models.data()
        return svi, data, [svi.step(data) for _ in range(steps)]

    _, _, expected = train(30)
    with JitRun(auto=True, backend="pyro") as run:
        svi, data, losses = train(30)
    assert losses == pytest.approx(expected, rel=1e-5)  # one run, whichever way each step ran
    (decision,) = run.report.auto
    assert decision.state == "eager" and decision.why == "back to eager (as the test says)"
    assert decision.compiled_at == 4 and decision.compiled_steps == 11  # its compile, then 10 steps
    assert decision.eager_steps == 3 + 16
    with JitRun(auto=True, backend="pyro") as later:  # its trace is still cached: it stays eager
        for _ in range(5):
            svi.step(data)
    (decision,) = later.report.auto
    assert decision.state == "eager" and decision.compiled_steps == 0


def branching(data):
    loc = pyro.sample("loc", pyro.distributions.Normal(0.0, 1.0))
    scale = 1.0 if loc > 0 else 2.0  # a value read: a trace would freeze the branch
    with pyro.plate("data", len(data)):
        pyro.sample("obs", pyro.distributions.Normal(loc, scale), obs=data)


def test_a_trace_found_unusable_is_not_built_again_for_the_same_code(auto_policy):
    auto_policy(prior_compile_steps={"svi": 0.0})  # compiles at step 4, whatever the speed

    def cell():
        svi = SVI(branching, AutoDiagonalNormal(branching), Adam({"lr": 0.05}), Trace_ELBO())
        data = models.data()
        with JitRun(auto=True, backend="pyro") as run:
            for _ in range(10):
                svi.step(data)
        (decision,) = run.report.auto
        return run.report, decision

    first, decision = cell()
    assert first.compile_count == 1 and decision.state == "eager"  # traced at step 4, then found unusable
    again, decision = cell()  # the cell run again: a new SVI, the same code
    assert again.compile_count == 0 and decision.eager_steps == 10
    assert decision.why.startswith("stayed eager: a trace of the same code in an earlier run was unusable "
                                   "(its trace reads a value at ")


def test_the_same_code_run_again_in_another_cell_is_known_as_the_same():
    from pyro_jitmagic.wholestep.memory import code_digest

    source = ("def guide(data):\n"
              "    def init(site):\n"  # a nested function: its code object is a constant of guide's
              "        return torch.zeros(())\n"
              "    return init\n")

    def cell(number, text=source):
        namespace = {}
        exec(compile(text, f"<ipython-input-{number}-0>", "exec"), namespace)
        return namespace["guide"]

    assert code_digest(cell(3)) == code_digest(cell(7))
    assert code_digest(cell(3)) != code_digest(cell(4, source.replace("zeros", "ones")))


def test_a_key_compiled_in_an_earlier_cell_runs_compiled_from_its_first_step(auto_policy):
    auto_policy(prior_compile_steps={"svi": 6.0})
    svi = SVI(models.gaussian, AutoDiagonalNormal(models.gaussian), Adam({"lr": 0.05}), Trace_ELBO())
    data = models.data()
    with JitRun(backend="pyro"):
        svi.step(data)  # compiled on its first step
    with JitRun(auto=True, backend="pyro") as run:
        for _ in range(5):
            svi.step(data)
    (decision,) = run.report.auto
    assert (decision.eager_steps, decision.compiled_steps, decision.compiled_at) == (0, 5, None)
    assert decision.why == "compiled in an earlier cell"
    assert decision.always_compiled_seconds is not None
    assert run.report.compile_count == 0


def test_mcmc_potential_is_the_same_eager_and_compiled():
    data = models.data()
    kernel = NUTS(models.gaussian)
    kernel.setup(0, data)
    maker = kernel.potential_fn.__self__
    params = {k: v.detach().clone().requires_grad_() for k, v in kernel.initial_params.items()}
    eager = maker._potential_fn(params)
    eager_grads = torch.autograd.grad(eager, list(params.values()))
    compiled_fn = maker.get_potential_fn(jit_compile=True)
    compiled_fn(params)  # traces
    compiled = compiled_fn(params)
    compiled_grads = torch.autograd.grad(compiled, list(params.values()))
    assert compiled.item() == pytest.approx(eager.item(), rel=1e-6)
    for c, e in zip(compiled_grads, eager_grads, strict=True):
        assert torch.allclose(c, e, rtol=1e-5)


def test_mcmc_runs_eager_then_compiles_when_the_rest_of_the_run_repays_it(runner, auto_policy,
                                                                       patched_targets):
    auto_policy(prior_compile_steps={"potential": 2.0}, prior_speedup={"potential": 2.0})
    runner.ns.update(MCMC=MCMC, NUTS=NUTS, model=models.gaussian, data=models.data())
    # no-opt: the adaptive executor could try the potential optimizing (a decision from measured
    # times) and compile it again if that was slower
    report, error = runner.run(
        "mcmc = MCMC(NUTS(model), num_samples=60, warmup_steps=60, disable_progbar=True)\n"
        "mcmc.run(data)", auto=True, executor="no-opt")
    assert error is None
    (decision,) = report.auto
    assert decision.kind == "potential" and decision.owner == "mcmc"
    assert decision.state == "compiled" and decision.eager_steps > 0
    assert decision.compiled_at == decision.eager_steps + 1
    assert "compiled after" in decision.why
    assert report.switches[0].after == "NUTS(jit_compile=True once it pays, --auto)"
    assert [c.key for c in report.compilations] == ["potential energy"]
    assert report.mcmc_runs[0].completed
    samples = runner.ns["mcmc"].get_samples()
    assert abs(samples["loc"].mean().item() - 0.5) < 1.5  # the data's mean is about 0.5
    assert not runner.ns["mcmc"].kernel._jit_compile  # as written again
    assert_nothing_patched(patched_targets)


# -- executors ----------------------------------------------------------------

EXECUTOR_PROBE = ("import torch\n"
                  "optimizing = torch._C._get_graph_executor_optimize()\n"
                  "losses = [svi.step(data) for _ in range(4)]\n")


@pytest.mark.parametrize(("executor", "optimizing"), [("adaptive", False), ("no-opt", False),
                                                      ("optimizing", True), ("legacy", True)])
def test_the_executor_is_set_for_the_cell_and_restored_after(runner, executor, optimizing,
                                                             patched_targets):
    expected = _eager_losses(4)
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    before = executor_flags()
    runner.ns.update(svi=SVI(models.gaussian, AutoDiagonalNormal(models.gaussian), Adam({"lr": 0.05}),
                             Trace_ELBO()), data=models.data())
    report, error = runner.run(EXECUTOR_PROBE, executor=executor)
    assert error is None
    assert runner.ns["optimizing"] is optimizing
    assert report.executor == executor
    if executor == "adaptive":  # no key moved in four steps: nothing to say
        assert "  executor " not in str(report)
    else:
        assert f"executor   {executor}:" in str(report)
    assert runner.ns["losses"] == pytest.approx(expected, rel=1e-5)
    assert executor_flags() == before
    assert_nothing_patched(patched_targets)


def test_an_unknown_executor_is_refused_before_anything_runs():
    with pytest.raises(ValueError, match="executor must be one of adaptive, no-opt, optimizing, legacy"):
        JitRun(executor="fast")


def test_an_error_in_an_eager_auto_step_leaves_nothing_patched(auto_policy, patched_targets):
    auto_policy()
    svi = SVI(models.gaussian, AutoDiagonalNormal(models.gaussian), Adam({"lr": 0.05}), Trace_ELBO())
    with pytest.raises(ValueError), JitRun(auto=True) as run:
        svi.step(models.data())
        svi.step(torch.ones(3, 3, 3))  # wrong shape: the model's plate refuses it
    assert run.report is not None and run.report.error is not None
    assert_nothing_patched(patched_targets)


# -- the adaptive executor ----------------------------------------------------


def _optimized(tier, steps, seconds, weight=1.0):
    """Feed a key that moved to the optimizing executor: three slow calls while torch optimises
    it, then measured ones, until it settles."""
    for slow in (0.05, 0.02, 0.01):
        assert tier.optimize
        assert not tier.after_step(slow * weight, next(steps), weight=weight)
    while not tier.after_step(seconds * weight, next(steps), weight=weight):
        pass


def test_a_key_moves_to_the_optimizing_executor_once_its_steps_took_ten_times_the_price():
    from pyro_jitmagic.compilers.pyro.executor import ExecutorTrial

    tier = ExecutorTrial("svi", "1 positional arg", compile_seconds=0.01)  # optimizing: ~0.06 s
    changed = [tier.after_step(0.001, step) for step in range(1, 600)]
    assert not any(changed) and not tier.optimize  # 0.599 s spent
    assert tier.after_step(0.001, 600)
    assert (tier.state, tier.optimize, tier.why) == ("optimizing", True, "optimizing from step 601")
    _optimized(tier, iter(range(601, 2000)), seconds=0.0008)
    assert (tier.state, tier.optimize, tier.drop) == ("optimizing", True, False)
    assert tier.why == "optimizing from step 601: 800 µs a step optimized against 1 ms no-opt before"


def test_a_key_goes_back_to_no_opt_when_its_optimized_steps_are_slower():
    from pyro_jitmagic.compilers.pyro.executor import ExecutorTrial

    tier = ExecutorTrial("svi", "1 positional arg", compile_seconds=0.0)  # free to try
    for step in range(1, 31):  # thirty no-opt steps measured first
        tier.after_step(0.001, step)
    assert tier.state == "optimizing"
    _optimized(tier, iter(range(31, 2000)), seconds=0.0012)
    # torch keeps an optimised plan for good: the trace is dropped and compiled again
    assert (tier.state, tier.optimize, tier.drop) == ("no-opt, kept", False, True)
    assert tier.why == ("back to no-opt at step 64 (compiled again) after optimizing from step 31: "
                        "1.2 ms a step optimized against 1 ms no-opt before")
    for step in range(100, 2000):  # and it is not tried again
        assert not tier.after_step(0.001, step)


def test_a_potential_is_compared_per_evaluation():
    from pyro_jitmagic.compilers.pyro.executor import ExecutorTrial

    tier = ExecutorTrial("mcmc", "potential energy", compile_seconds=0.0, unit="sample", per="per evaluation")
    for sample in range(1, 31):
        tier.after_step(0.01, sample, remaining=10.0, weight=10)
    assert tier.state == "optimizing"
    _optimized(tier, iter(range(31, 200)), seconds=0.0008, weight=50)  # bigger trees, same cost each
    assert tier.state == "optimizing"
    assert tier.why.endswith("800 µs per evaluation optimized against 1 ms no-opt before")


def test_an_mcmc_potential_is_tried_when_the_time_left_would_repay_it():
    from pyro_jitmagic.compilers.pyro.executor import ExecutorTrial

    def after_thirty(remaining):
        tier = ExecutorTrial("mcmc", "potential energy", compile_seconds=0.005, unit="sample")
        for sample in range(1, 31):
            tier.after_step(1e-4, sample, remaining=remaining)
        return tier.state

    # optimizing is expected to cost 30 ms; a tenth of the time left must repay it twice
    assert after_thirty(remaining=0.5) == "no-opt"
    assert after_thirty(remaining=0.7) == "optimizing"


def _executor_switch_run(steps):
    expected = _eager_losses(steps)
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    svi = SVI(models.gaussian, AutoDiagonalNormal(models.gaussian), Adam({"lr": 0.05}), Trace_ELBO())
    with JitRun(backend="pyro") as run:
        losses = [svi.step(models.data()) for _ in range(steps)]
    assert losses == pytest.approx(expected, rel=1e-5)
    return run.report


def test_switching_executor_mid_run_gives_the_same_losses(monkeypatch, patched_targets):
    import pyro_jitmagic.compilers.pyro.executor as executor

    monkeypatch.setattr(executor, "TRY_FACTOR", 0.0)  # move after the first thirty compiled steps
    report = _executor_switch_run(80)
    (choice,) = report.executor_choices
    assert choice.owner == "SVI(gaussian, AutoDiagonalNormal)" and choice.key == "1 positional arg"
    assert choice.executor in ("optimizing", "no-opt, kept")
    assert "optimizing from step 32" in choice.why  # the first step compiled; thirty no-opt ones
    assert choice.why in str(report)
    assert_nothing_patched(patched_targets)


def test_a_key_whose_optimized_steps_were_slower_compiles_again_and_gives_the_same_losses(
        monkeypatch, patched_targets):
    import pyro_jitmagic.compilers.pyro.executor as executor

    monkeypatch.setattr(executor, "TRY_FACTOR", 0.0)
    monkeypatch.setattr(executor, "SLOWER_ABOVE", 0.0)  # always too slow
    report = _executor_switch_run(80)
    (choice,) = report.executor_choices
    assert choice.executor == "no-opt, kept"
    assert choice.why.startswith("back to no-opt at step 65 (compiled again) after optimizing from step 32")
    assert report.compile_count == 2 and report.compilations[0].key == report.compilations[1].key
    assert_nothing_patched(patched_targets)


@pytest.mark.parametrize("keep", [True, False])
def test_an_mcmc_potential_can_switch_executor_mid_run(monkeypatch, runner, patched_targets, keep):
    import pyro_jitmagic.compilers.pyro.executor as executor

    monkeypatch.setattr(executor, "EXPECTED_GAIN", 1e6)  # always worth trying
    if not keep:
        monkeypatch.setattr(executor, "SLOWER_ABOVE", 0.0)
    runner.ns.update(MCMC=MCMC, NUTS=NUTS, model=models.gaussian, data=models.data())
    report, error = runner.run(
        "mcmc = MCMC(NUTS(model), num_samples=50, warmup_steps=50, disable_progbar=True)\n"
        "mcmc.run(data)")
    assert error is None
    (choice,) = report.executor_choices
    assert (choice.owner, choice.key) == ("mcmc", "potential energy")
    assert "optimizing from sample 31" in choice.why
    if keep:
        assert choice.executor in ("optimizing", "no-opt, kept")
    else:
        assert choice.executor == "no-opt, kept" and "compiled again" in choice.why
        assert [c.key for c in report.compilations] == ["potential energy"] * 2
    assert report.mcmc_runs[0].completed
    assert abs(runner.ns["mcmc"].get_samples()["loc"].mean().item() - 0.5) < 1.5
    assert_nothing_patched(patched_targets)


def test_auto_decides_for_a_kernel_written_with_jit_compile_too(auto_policy, patched_targets):
    # the whole potential never pays here: this test is about Pyro's tier
    auto_policy(prior_compile_steps={"potential": 2.0}, prior_speedup={"potential": 2.0},
                memory=None, prior_potential_capture_evals=1e9)
    mcmc = MCMC(NUTS(models.gaussian, jit_compile=True), num_samples=30, warmup_steps=30,
                disable_progbar=True)
    with JitRun(auto=True) as run:
        mcmc.run(models.data())
    (switch,) = run.report.switches
    assert switch.after == "NUTS(jit_compile=True, then the whole potential, once each pays: --auto)"
    (decision,) = run.report.auto
    assert decision.eager_steps > 0  # its setup did not trace at once, as jit_compile=True would
    assert mcmc.kernel._jit_compile  # as written again
    assert_nothing_patched(patched_targets)


def flip(data):
    z = pyro.sample("z", pyro.distributions.Bernoulli(0.5))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", pyro.distributions.Normal(z, 1.0), obs=data)


def flip_guide(data):
    q = pyro.param("q", torch.tensor(0.5), constraint=pyro.distributions.constraints.unit_interval)
    baseline = {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}
    pyro.sample("z", pyro.distributions.Bernoulli(q), infer={"baseline": baseline})


def test_a_limit_of_pyros_jit_is_not_met_again_by_the_same_code_with_a_new_elbo(auto_policy):
    from pyro.infer import TraceGraph_ELBO

    auto_policy(prior_compile_steps={"svi": 0.0}, memory=None)  # compiles at step 4, whatever the speed

    def cell():
        pyro.clear_param_store()
        svi = SVI(flip, flip_guide, Adam({"lr": 0.05}), TraceGraph_ELBO())  # a new ELBO each run
        with JitRun(auto=True, backend="pyro") as run:
            for _ in range(10):
                svi.step(models.data())
        (decision,) = run.report.auto
        return decision

    first = cell()
    assert first.compiled_at == 4  # its trace met the limit (the baseline's average, written inside)
    again = cell()
    assert again.eager_steps == 10 and again.compiled_at is None
    assert again.why.startswith("stayed eager: a trace of the same code in an earlier run was unusable "
                                "(TraceGraph_ELBO with a decaying-average baseline")
