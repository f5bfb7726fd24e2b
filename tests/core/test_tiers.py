"""--auto's tiers above Pyro's JIT: the decisions from given figures (no clock), the memory of earlier
runs, and runs that climb to the whole step with losses, params and optimizer state as eager's."""

from __future__ import annotations

import models
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.optim import Adam

import pyro_jitmagic
from pyro_jitmagic import AutoPolicy
from pyro_jitmagic.policy.auto import STEP_DOWN_AT, steps_to_follow
from pyro_jitmagic.policy.books import CellSteps, TierBook, TierTally
from pyro_jitmagic.wholestep.memory import RunMemory

# -- decisions from given figures -------------------------------------------------------------


def _book(low=(), tier="pyro", step=(), expected=None, capture=None):
    book = TierBook("svi", "1 positional arg", memory_key="k", expected_steps=expected)
    tally = TierTally(book)
    for seconds in low:
        tally.add(tier, seconds)
    book.tier = tier
    book.capture_seconds = capture
    for seconds in step:
        tally.add("step", seconds)
    return book, tally


def test_a_signature_climbs_to_the_whole_step_once_its_low_steps_cost_what_capturing_would():
    # capturing costs 100 low steps; nothing known of how long the run lasts
    policy = AutoPolicy(horizon=10, memory=None, prior_capture_steps=100.0)
    book, _ = _book(low=[1.0] * 2)
    assert not policy.climb_to_step(book, function_calls=2, warm=False)  # too few steps to trust
    book, _ = _book(low=[1.0] * 60)
    # 60 steps expect ~60 more: they would save 60 * (1 - 1/1.7) = 25 s, under 100 s; so little rent
    assert not policy.climb_to_step(book, function_calls=60, warm=False)
    assert book.why.startswith("stayed on pyro: the ~60 steps expected (as many again as so far)")
    book, _ = _book(low=[1.0] * 100)
    assert policy.climb_to_step(book, function_calls=100, warm=False)  # rent or buy: 100 s spent
    assert book.why == "captured after 100 steps, which took 100 s: the capture's expected cost (100 s)"


def test_a_run_known_to_be_long_climbs_at_once_and_one_known_to_end_soon_never_does():
    policy = AutoPolicy(horizon=10, memory=None, prior_capture_steps=100.0)
    book, _ = _book(low=[1.0] * 3, expected=10_000)
    assert policy.climb_to_step(book, function_calls=3, warm=False)
    assert "the ~9997 steps expected (its last run took 10000 steps)" in book.why
    # its last run took 150 steps: the 50 left cannot repay the capture, and rent or buy is off
    book, _ = _book(low=[1.0] * 100, expected=150)
    assert not policy.climb_to_step(book, function_calls=100, warm=False)
    assert "the ~50 steps expected (its last run took 150 steps)" in book.why


def test_the_cells_loops_say_how_long_the_run_is_and_rent_or_buy_then_waits_for_nothing():
    policy = AutoPolicy(horizon=10, memory=None, prior_capture_steps=100.0)
    book, _ = _book(low=[1.0] * 3)
    book.cell = CellSteps(1000, done=3)
    # the 997 steps left would save 997 * (1 - 1/1.7) = 410 s, more than the capture's 100 s
    assert policy.climb_to_step(book, function_calls=3, warm=False)
    assert "the ~997 steps expected (the cell's loops run 1000 steps)" in book.why
    book, _ = _book(low=[1.0] * 150)
    book.cell = CellSteps(200, done=150)
    # 150 s spent below would be rent enough, but the cell says only 50 steps are left
    assert not policy.climb_to_step(book, function_calls=150, warm=False)
    # two signatures share the cell's steps as they have shared them so far
    book, _ = _book(low=[1.0] * 10)
    book.cell = CellSteps(1000, done=40)
    assert steps_to_follow(book, function_calls=40, horizon=policy.horizon) == (
        240.0, "the cell's loops run 1000 steps")


def test_a_cell_too_short_to_repay_a_capture_is_not_looked_at_again_until_the_session_learns():
    policy = AutoPolicy(horizon=10, memory=None, prior_capture_steps=100.0)
    book, tally = _book(low=[1.0] * 3)
    book.cell = CellSteps(200, done=3)
    # the 197 steps left would save 81 s, under the capture's 100 s, and the steps left only shrink
    assert not policy.climb_to_step(book, function_calls=3, warm=False)
    why = book.why
    tally.add("pyro", 1.0)
    book.cell.done += 1
    book.cell.total = 10_000  # (not what a cell does: shows the look was not taken again)
    assert not policy.climb_to_step(book, function_calls=4, warm=False) and book.why == why
    assert policy.climb_to_step(book, function_calls=4, warm=True)  # warm kernels: another bet
    book.stays = None
    book.cell.total = 200
    assert not policy.climb_to_step(book, function_calls=4, warm=False)
    learned, _ = _book(low=[1.0] * 5, step=[0.1] * 5, capture=1.0)
    policy.learn(learned)  # the session learns: captures are cheap, the whole step 10x faster
    book.cell.total = 10_000
    assert policy.climb_to_step(book, function_calls=5, warm=False)


def test_a_graph_in_inductors_cache_makes_climbing_pay_sooner():
    policy = AutoPolicy(horizon=10, memory=None, prior_capture_steps=100.0)
    book, _ = _book(low=[1.0] * 5, expected=200)
    # 195 steps at 1/1.7 of a step save 80 s, under 100 s; on cached kernels (6x more) 176 s
    assert not policy.climb_to_step(book, function_calls=5, warm=False)
    assert policy.climb_to_step(book, function_calls=5, warm=True)
    assert "on inductor's kernels (cached)" in book.why


def test_a_cold_codegen_starts_now_when_the_run_outlasts_it_else_when_the_cell_ends():
    # a cold codegen runs in a worker process, off the steps' interpreter, but handing the graph
    # over costs the cell about a second: a run that ends before the kernels could serve it
    # hands it over when the cell ends, for the next run
    policy = AutoPolicy(horizon=10, memory=None)
    assert policy.codegen_seconds(1.0) == 18.0  # 10 s + 8 s per second of capture, before any measurement
    book, _ = _book(low=[1.0] * 5, step=[0.01] * 2, expected=1000, capture=1.0)
    assert policy.start_codegen(book, function_calls=7, warm=False) is None  # step time not yet trusted
    book, _ = _book(low=[1.0] * 5, step=[0.01] * 3, expected=10, capture=1.0)
    assert policy.start_codegen(book, function_calls=8, warm=False) == "after the cell"
    assert ("inductor's codegen starts in a worker process when the cell ends, for the next run: the ~2 "
            "steps expected (its last run took 10 steps) take 20 ms on the whole step, less than its "
            "expected 18 s") in book.explained()
    book, _ = _book(low=[1.0] * 5, step=[0.01] * 3, expected=5000, capture=1.0)
    assert policy.start_codegen(book, function_calls=8, warm=False) == "now"  # 50 s on the step left
    assert "inductor's codegen started at step 8 in a worker process (expected 18 s" in book.explained()
    book, _ = _book(low=[1.0] * 5, step=[0.01], expected=10, capture=1.0)
    assert policy.start_codegen(book, function_calls=6, warm=True) == "now"  # cached: at once, however short


def test_a_potential_capture_that_must_first_load_the_compiler_stack_waits_until_runs_forgo_its_load():
    # 1000 evaluations left at 1 ms on eager: capturing saves 0.6 s (at the prior 2.5x) for 43 ms,
    # a net 0.557 s, under the stack's first load (1 s): rent or buy across the session's runs
    policy = AutoPolicy(memory=None)
    figures = dict(tier="eager", per_eval=1e-3, eager_per_eval=1e-3, remaining=1000, pyro_net=0.0)
    climb, _, forgone = policy.climb_potential(**figures)
    assert climb and forgone == 0.0  # the stack loaded: as before
    climb, _, forgone = policy.climb_potential(**figures, stack_loaded=False)
    assert not climb and forgone == pytest.approx(0.557)
    policy.pay_stack_rent(forgone)  # the first run stayed below
    climb, why, forgone = policy.climb_potential(**figures, stack_loaded=False)
    assert climb and forgone == 0.0  # 0.557 forgone + 0.557 expected >= 1 s
    assert "torch's compiler stack's first load (about 1 s, less 557 ms forgone by earlier runs)" in why
    # a run that Pyro's JIT serves as well forgoes nothing
    climb, _, forgone = policy.climb_potential(**{**figures, "pyro_net": 1.0}, stack_loaded=False)
    assert not climb and forgone == 0.0


def test_a_potentials_new_tier_is_measured_only_after_its_first_calls():
    # MCMC's climb looks every few evaluations; the look that sees Pyro's JIT take over, and the next
    # (the trace's first calls, which profile and optimise it), start the measure; then it is measured
    from pyro_jitmagic.compilers.auto.mcmc import Pace

    pace = Pace(sample=0, evals=0)
    assert pace.measured("eager", 3, 30)  # eager from the run's start
    pace.eager_per_eval = 1e-3
    assert not pace.measured("pyro", 4, 40) and (pace.sample, pace.evals) == (4, 40)
    assert not pace.measured("pyro", 5, 48) and (pace.sample, pace.evals) == (5, 48)
    assert pace.measured("pyro", 9, 90) and (pace.sample, pace.evals, pace.tier) == (5, 48, "pyro")
    assert pace.eager_per_eval == 1e-3  # (an eager evaluation stays the unit of the capture's cost)


def test_a_graph_whose_checks_of_values_fail_often_is_not_worth_its_capture():
    # a call whose check fails runs the graph and then eager: a branch on a random draw fails half
    policy = AutoPolicy(horizon=10, memory=None, prior_capture_steps=100.0)
    book, _ = _book(low=[1.0] * 3, expected=10_000)
    book.remembered_checks = (0.5, None)  # at the whole step's prior speed (1.7x), its graph saves nothing
    assert not policy.climb_to_step(book, function_calls=3, warm=False)
    assert "its checks of values failing on 50% of its graph's calls" in book.why
    book, _ = _book(low=[1.0] * 3, expected=10_000)
    book.remembered_checks = (0.5, 0.995)  # its calls, measured, cost all but what a step below does
    assert not policy.climb_to_step(book, function_calls=3, warm=False)
    assert "(a call took 0.99 of a step below)" in book.why
    book, _ = _book(low=[1.0] * 3, expected=10_000)
    book.remembered_checks = (0.1, None)  # rarely: still well worth it
    assert policy.climb_to_step(book, function_calls=3, warm=False)


def test_a_graph_leaves_for_the_low_tiers_once_its_failing_checks_cost_more_than_it_saves():
    policy = AutoPolicy(horizon=10, memory=None, prior_capture_steps=100.0)
    book, _ = _book(low=[1.0] * 5, tier="eager", step=[0.1] * 10)
    book.failed_times.extend([3.0] * 8)
    book.checks_failed = 7
    assert policy.graph_pays(book)  # (looked at when the failures number 8, 32, 128)
    book.checks_failed = 8  # 8 of 18 calls at 3 s, the others at 0.1 s: 1.4 s a call against 1 s
    assert not policy.graph_pays(book)
    assert book.stepped_down.startswith("back to the low tiers after 18 calls of its graph: its checks "
                                        "of values failed on 44% of them")
    assert not policy.climb_to_step(book, function_calls=20, warm=False)  # for the session
    book, _ = _book(low=[1.0] * 5, tier="eager", step=[0.1] * 10)
    book.failed_times.extend([1.1] * 8)
    book.checks_failed = 8  # failures that cost about an eager step: the graph still pays
    assert policy.graph_pays(book) and not book.stepped_down


def test_what_the_session_measures_replaces_the_priors():
    policy = AutoPolicy(horizon=10, memory=None, prior_capture_steps=400.0)
    for capture in (10.0, 12.0):  # two signatures whose captures cost 10 and 12 low steps
        book, _ = _book(low=[1.0] * 5, step=[0.25] * 5, capture=capture)
        policy.learn(book)
    assert policy.capture_steps() == 12.0  # median of 10, 12 and the prior 400
    assert policy.step_speedup() == 4.0  # median of 4, 4 and the prior 1.7


def test_the_report_row_shows_the_path_and_what_each_single_tier_would_have_taken():
    policy = AutoPolicy(horizon=10, memory=None)
    book, tally = _book(low=[2.0] * 4, step=[1.0] * 6, capture=5.0)
    book.path = ["pyro", "step at step 5 (captured in 5.00 s)"]
    book.tier = "step"
    decision = policy.decision(tally)
    assert decision.path == ("pyro", "step at step 5 (captured in 5.00 s)")
    versus = dict(decision.versus)
    assert versus["pyro"] == 10 * 2.0
    assert versus["step"] == 10 * 1.0 + 5.0  # every step on it, and its capture
    assert versus["inductor"] > 5.0 + policy.codegen_seconds(5.0)  # cold: capture and codegen first
    text = pyro_jitmagic.display.report.tier_line(decision)
    assert text.startswith("svi, 1 positional arg: pyro -> step at step 5 (captured in 5.00 s);")


# -- the memory of earlier runs ----------------------------------------------------------------


def test_the_memory_of_runs_survives_the_process_and_an_unreadable_file_is_ignored(tmp_path):
    path = tmp_path / "runs.json"
    memory = RunMemory(path)
    memory.ran({"a": (1000, "g1", None)})
    memory.compiled("g1")
    again = RunMemory(path)
    assert again.steps("a") == 1000 and again.graph("a") == "g1" and again.inductor_holds("g1")
    assert again.steps("b") is None and not again.inductor_holds(None)
    path.write_text("{not json")
    assert RunMemory(path).steps("a") is None  # a hint, never an error
    RunMemory(tmp_path / "new" / "runs.json").ran({"a": (5, None, None)})
    assert RunMemory(tmp_path / "new" / "runs.json").steps("a") == 5
    # a graph's failed checks (their share, a call's cost): kept until a run measures them again
    memory = RunMemory(tmp_path / "checks.json")
    memory.ran({"a": (300, "g", (0.5, 0.8))})
    memory.ran({"a": (10, None, None)})
    assert RunMemory(tmp_path / "checks.json").failed_checks("a") == (0.5, 0.8)
    (tmp_path / "checks.json").write_text('{"runs": {"a": {"steps": 3, "checks": ["half", null]}}}')
    assert RunMemory(tmp_path / "checks.json").failed_checks("a") is None


def test_a_graph_inductors_disk_cache_refuses_is_never_taken_as_cached(monkeypatch):
    """A graph the FX graph cache bypasses (an op with effects) compiles in full every time: the memory
    must not promise the next run cached kernels (it would load them beside the steps, not in a worker)."""
    from pyro_jitmagic.compat import capture as compat
    from pyro_jitmagic.wholestep import backends, memory

    runs = RunMemory(None)
    monkeypatch.setattr(memory, "shared", lambda: runs)
    counts = {"hit": 0, "miss": 0, "bypass": 0}
    monkeypatch.setattr(compat, "fx_cache_counts", lambda: (counts["hit"], counts["miss"], counts["bypass"]))
    monkeypatch.setattr(compat, "generated_kernels", lambda compiled: 1)
    graph = torch.fx.symbolic_trace(lambda x: x * 2.0)
    inputs = [torch.ones(3)]
    digest = memory.graph_digest(graph, inputs)

    def compiles(outcome):
        def compile_(graph, inputs):
            counts[outcome] += 1
            return graph
        monkeypatch.setattr(compat, "inductor_compile", compile_)
        return backends.inductor(graph, inputs)

    assert compiles("miss").cache == "cold" and runs.inductor_holds(digest)
    assert compiles("hit").cache == "warm" and runs.inductor_holds(digest)
    compiles("bypass")
    assert not runs.inductor_holds(digest)  # (and forgotten where an earlier compile had written it)


def test_a_run_as_long_as_the_last_leaves_the_file_alone(tmp_path):
    path = tmp_path / "runs.json"
    memory = RunMemory(path)
    memory.ran({"a": (30, None, None)})
    written = path.stat().st_ino  # (each write puts a new file in its place)
    memory.ran({"a": (30, None, None)})  # the same count: nothing new to say
    assert path.stat().st_ino == written
    memory.ran({"a": (31, None, None)})
    assert path.stat().st_ino != written and RunMemory(path).steps("a") == 31


# -- runs that climb ------------------------------------------------------------------------------


DATA = models.data()


def _svi():
    guide = AutoDiagonalNormal(models.gaussian)
    return SVI(models.gaussian, guide, Adam({"lr": 0.01}), Trace_ELBO())


def _losses(steps, policy=None, **options):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = _svi()
    if policy is None and not options:
        return [svi.step(DATA) for _ in range(steps)], None, svi
    options.setdefault("backend", "inductor")  # every tier
    options.setdefault("auto", policy or True)
    with pyro_jitmagic.compiled(**options) as run:
        losses = [svi.step(DATA) for _ in range(steps)]
    return losses, run.report, svi


def test_a_climb_to_the_whole_step_keeps_every_loss_eagers():
    eager, _, _ = _losses(60)
    eager_params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    policy = AutoPolicy(memory=None, prior_capture_steps=3.0)
    tiered, report, _ = _losses(60, policy)
    assert tiered == pytest.approx(eager, rel=1e-5)
    (row,) = [d for d in report.auto if d.path]
    # a capture this cheap pays at once: from eager straight to the whole step, before Pyro traces
    assert row.path[0] == "eager" and row.path[1].startswith("step at step 4 ") and row.state == "step"
    # the params the user holds end where eager's did (the whole step wrote them in place)
    for name, value in pyro.get_param_store().items():
        assert torch.allclose(value.detach(), eager_params[name], rtol=1e-4, atol=1e-6), name
    assert "whole step when it pays (--auto)" in report.switches[0].after


def test_a_branch_on_a_draw_sends_its_graph_back_down_and_the_next_run_never_captures(fake_clock,
                                                                                     monkeypatch):
    """A branch on a draw of the guide fails the whole step's check on about half of its calls, and
    each of those runs the graph for nothing, then eager: once that costs more than the steps below,
    the signature leaves its graph for the session, and the memory keeps the next run from capturing."""
    import pyro.distributions as dist

    from pyro_jitmagic.wholestep.step import CompiledStep

    def coin_flip(data):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        fake_clock.advance(1e-3)  # the model's Python: an eager step takes a millisecond
        scale = 1.0 if loc > 0 else 2.0
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, scale), obs=data)

    def guide(data):
        pyro.sample("loc", dist.Normal(pyro.param("flip_loc", torch.tensor(0.0)), 1.0))

    failed = CompiledStep._guard_failed

    def costly(self, rng):
        fake_clock.advance(2e-3)  # the graph's call whose check failed
        return failed(self, rng)

    monkeypatch.setattr(CompiledStep, "_guard_failed", costly)
    data, memory = torch.linspace(-1.0, 1.0, 20), RunMemory(None)

    def run(**options):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        svi = SVI(coin_flip, guide, Adam({"lr": 0.01}), Trace_ELBO())
        if not options:
            return [svi.step(data) for _ in range(150)], None, svi
        with pyro_jitmagic.compiled(**options) as compiled_run:
            losses = [svi.step(data) for _ in range(150)]
        return losses, compiled_run.report, svi

    eager, _, _ = run()
    losses, report, svi = run(auto=AutoPolicy(memory=memory, prior_capture_steps=3.0), backend="step")
    assert losses == pytest.approx(eager, rel=1e-5)
    (row,) = [d for d in report.auto if d.path]
    assert row.path[1].startswith("step at step 4 ")
    (down,) = [p for p in row.path if "checks of values kept failing" in p]
    assert down.startswith("eager at step ")  # (then Pyro's JIT, whose trace would freeze the branch)
    assert row.why.startswith("back to the low tiers after ")
    (entry,) = pyro_jitmagic.run.process.PROCESS.session.whole_steps.of(svi).values()
    # looked at as the failures number 8, 32, ...: the graph was not called again after the one that
    # showed it losing
    assert entry.compiled.guard_failures in STEP_DOWN_AT
    (key,) = memory._runs
    share, cost = memory.failed_checks(key)
    failures = entry.compiled.guard_failures
    assert share == pytest.approx(failures / (failures + entry.compiled.steps), abs=0.05)
    assert cost > 1.1  # (each failed call: 3 ms, the others next to nothing, a step below 1 ms)

    losses, report, _ = run(auto=AutoPolicy(memory=memory, prior_capture_steps=3.0), backend="step")
    assert losses == pytest.approx(eager, rel=1e-5)
    assert not any(d.path and any(p.startswith("step") for p in d.path) for d in report.auto)
    assert memory.failed_checks(key) == (share, cost)  # (a run with no graph keeps the last one's)


def test_a_whole_step_the_capture_cannot_hold_is_not_captured_again_for_the_same_code(monkeypatch):
    """A cell run again builds a new SVI of the same code: it meets the same limit of the capture
    (a tensor changed in place that the guards cannot find: it is read through ``getattr``), so the
    session does not pay for that capture again."""
    import types

    import pyro.distributions as dist

    from pyro_jitmagic import wholestep

    hidden = types.SimpleNamespace(count=torch.zeros(1))
    x = torch.linspace(-1.0, 1.0, 20)

    def model(x):
        getattr(hidden, "count").add_(1)  # noqa: B009 (through getattr: no guard sees the tensor)
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("n", len(x)):
            pyro.sample("obs", dist.Normal(loc, 0.5), obs=x)

    def guide(x):
        pyro.sample("loc", dist.Normal(pyro.param("loc_loc", torch.tensor(0.0)), 1.0))

    captures = []
    real = wholestep.compile_svi_step
    monkeypatch.setattr(wholestep, "compile_svi_step", lambda *a, **k: (captures.append(1), real(*a, **k))[1])
    policy = AutoPolicy(memory=None, prior_capture_steps=3.0)
    reports = []
    for _ in range(2):  # the cell, then the cell run again: a new SVI, the same code
        pyro.clear_param_store()
        svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
        with pyro_jitmagic.compiled(auto=policy, backend="step") as run:
            for _ in range(20):
                svi.step(x)
        reports.append(run.report)
    assert len(captures) == 1
    limit = "the whole step cannot be compiled (the step changes in place a tensor"
    assert limit in " ".join(reports[0].notes)
    assert limit in " ".join(reports[1].notes) and "met by the same code before" in " ".join(reports[1].notes)


def test_auto_capped_at_pyro_never_captures_the_whole_step():
    policy = AutoPolicy(memory=None, prior_capture_steps=3.0)
    _, report, _ = _losses(40, policy, backend="pyro")
    assert not any(d.path for d in report.auto)
    assert "whole step" not in report.switches[0].after


def test_auto_capped_at_step_climbs_there_and_starts_no_codegen():
    policy = AutoPolicy(memory=None, prior_capture_steps=3.0)
    _, report, svi = _losses(60, policy, backend="step")
    (row,) = [d for d in report.auto if d.path]
    assert row.state == "step" and not any("inductor" in p for p in row.path)
    entries = pyro_jitmagic.run.process.PROCESS.session.whole_steps.of(svi)
    assert all(not e.compiled.compiling for e in entries.values())


def test_a_float_read_keeps_the_signature_eager_on_every_tier_and_says_why():
    def reads_a_value(data):
        loc = pyro.sample("loc", pyro.distributions.Normal(0.0, 1.0))
        if float(loc) > 100.0:  # a float read of a traced value: any trace would bake it
            loc = loc * 2
        with pyro.plate("data", len(data)):
            pyro.sample("obs", pyro.distributions.Normal(loc, 1.0), obs=data)

    def run(compiled_run):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        svi = SVI(reads_a_value, AutoDiagonalNormal(reads_a_value), Adam({"lr": 0.01}), Trace_ELBO())
        with compiled_run as run:
            losses = [svi.step(DATA) for _ in range(30)]
        return losses, run

    eager, _ = run(pyro_jitmagic.compiled(backend="eager"))
    policy = AutoPolicy(memory=None, prior_capture_steps=3.0)
    losses, compiled_run = run(pyro_jitmagic.compiled(auto=policy, backend="inductor"))
    assert losses == eager  # eager's, step by step: no tier used a trace that froze the number
    (line,) = [g for g in compiled_run.report.guards if "Python number" in g]
    assert "test_tiers.py" in line and "ran eager" in line


def test_the_next_run_of_a_cell_knows_how_long_the_last_one_was():
    memory = RunMemory(None)
    policy = AutoPolicy(memory=memory, prior_capture_steps=1e6)
    _, report, _ = _losses(30, policy)
    assert not any(d.path for d in report.auto)  # a capture this dear never pays in 30 steps
    (steps,) = [memory.steps(k) for k in memory._runs]
    assert steps == 30


def test_a_run_too_short_for_a_cold_codegen_hands_the_graph_over_when_the_cell_ends(monkeypatch, fake_clock):
    from pyro_jitmagic.policy.auto import AFTER_CELL_DELAY
    from pyro_jitmagic.wholestep.backends import SwitchesToInductor

    started = []
    monkeypatch.setattr(SwitchesToInductor, "build_inductor",
                        lambda self, on_done=None, delay=0.0: started.append((self, delay)))
    # a capture this cheap pays at once; microsecond steps never outlast a cold codegen's seconds
    policy = AutoPolicy(memory=None, prior_capture_steps=3.0)
    pyro.clear_param_store()
    svi = _svi()
    with pyro_jitmagic.compiled(auto=policy, backend="inductor") as run:
        for _ in range(80):
            svi.step(DATA)
        assert started == []  # not while the cell runs
    (entry,) = pyro_jitmagic.run.process.PROCESS.session.whole_steps.of(svi).values()
    # after a pause, so that the cell's report is shown first; the next cell says when it took over
    assert started == [(entry.compiled, AFTER_CELL_DELAY)] and entry.unannounced
    (row,) = run.report.auto  # one row: the tiers' path holds its eager (and Pyro) steps
    assert row.path[-1] == "inductor's codegen after the cell"
    # said once, by the look that put it off (it is looked at again now and then, and agrees)
    assert row.why.count("inductor's codegen starts in a worker process when the cell ends, for the "
                         "next run") == 1


def test_a_long_nuts_run_climbs_to_the_whole_potential_and_draws_eagers_samples():
    from pyro.infer.mcmc import MCMC, NUTS

    def run(**options):
        pyro.set_rng_seed(1)
        mcmc = MCMC(NUTS(models.gaussian), num_samples=150, warmup_steps=150, disable_progbar=True)
        if not options:
            mcmc.run(DATA)
            return mcmc.get_samples(), None
        with pyro_jitmagic.compiled(**options) as compiled_run:
            mcmc.run(DATA)
        return mcmc.get_samples(), compiled_run.report

    eager, _ = run()
    # a capture that costs about one evaluation: it pays at once
    policy = AutoPolicy(memory=None, prior_potential_capture_evals=1.0)
    tiered, report = run(auto=policy, backend="step")
    assert any("the potential and its gradient captured after" in n for n in report.notes)
    assert "potential and gradient compiled whole (step) once it paid" in report.switches[0].after
    for name in eager:  # the same path, up to float rounding in the gradients
        assert torch.allclose(tiered[name], eager[name], rtol=1e-3, atol=1e-4), name


def test_a_nuts_run_too_short_for_a_cold_codegen_hands_the_trajectory_over_when_it_ends(monkeypatch,
                                                                                        fake_clock):
    from pyro.infer.mcmc import MCMC, NUTS

    from pyro_jitmagic.policy.auto import AFTER_CELL_DELAY
    from pyro_jitmagic.wholestep.backends import SwitchesToInductor

    started = []
    monkeypatch.setattr(SwitchesToInductor, "build_inductor",
                        lambda self, on_done=None, delay=0.0: started.append((self, delay)))
    policy = AutoPolicy(memory=None, prior_potential_capture_evals=1.0)
    pyro.set_rng_seed(1)
    mcmc = MCMC(NUTS(models.gaussian), num_samples=60, warmup_steps=60, disable_progbar=True)
    with pyro_jitmagic.compiled(auto=policy, backend="inductor") as run:
        mcmc.run(DATA)
    assert [delay for _, delay in started] == [AFTER_CELL_DELAY]  # once, as the run ended
    assert started[0][0].what == "NUTS trajectory"  # (its graph holds the potential's)
    assert any("inductor builds the NUTS trajectory's kernels in a worker process when the run ends, for "
               "the next run" in n for n in run.report.notes)
    assert any("the compiled NUTS trajectory built no iteration of this run: Pyro's kernel ran the" in n
               for n in run.report.notes)


@pytest.mark.parametrize("loaded, first_load, put_off", [
    (False, 1e9, True),    # a new process, a load longer than any run: put off until the run ends
    (False, 0.0, False),   # a new process, a load shorter than the run's rest: at once
    (True, 1e9, False),    # inductor loaded already: at once, whatever a first load costs
], ids=["new process", "load shorter than the run", "inductor loaded"])
def test_a_nuts_run_loads_inductor_when_it_ends_where_a_first_load_outlasts_it(
        monkeypatch, tmp_path, loaded, first_load, put_off):
    # the disk cache holds the trajectory's kernels, but inductor's first load in a process holds the
    # interpreter for seconds: it starts beside the run only where the evaluations left outlast it
    # (the first load's expected cost is set far from any machine's run, so that no timing decides)
    from pyro.infer.mcmc import MCMC, NUTS

    import pyro_jitmagic.policy.auto
    from pyro_jitmagic.compat import capture as compat
    from pyro_jitmagic.policy.auto import AFTER_CELL_DELAY
    from pyro_jitmagic.wholestep.backends import SwitchesToInductor
    from pyro_jitmagic.wholestep.memory import RunMemory

    started = []
    monkeypatch.setattr(SwitchesToInductor, "build_inductor",
                        lambda self, on_done=None, delay=0.0: started.append((self.what, delay)))
    monkeypatch.setattr(RunMemory, "inductor_holds", lambda self, digest: True)
    monkeypatch.setattr(compat, "inductor_loaded", lambda: loaded)
    monkeypatch.setattr(pyro_jitmagic.policy.auto, "PRIOR_FIRST_LOAD", first_load)
    policy = AutoPolicy(memory=RunMemory(tmp_path / "runs.json"), prior_potential_capture_evals=1.0)
    pyro.set_rng_seed(1)
    mcmc = MCMC(NUTS(models.gaussian), num_samples=60, warmup_steps=60, disable_progbar=True)
    with pyro_jitmagic.compiled(auto=policy, backend="inductor") as run:
        mcmc.run(DATA)
    notes = " ".join(run.report.notes)
    said = ("inductor loads the NUTS trajectory's kernels from its disk cache when the run ends, for the "
            "next run")
    if put_off:
        assert started == [("NUTS trajectory", AFTER_CELL_DELAY)], started
        assert said in notes and "less than inductor's first load in this process" in notes
    else:
        assert started == [("NUTS trajectory", 0.0)] and said not in notes
        assert ("inductor builds the NUTS trajectory's kernels in the background (from inductor's disk "
                "cache)") in notes


@pytest.mark.parametrize("stack_load, captures", [(1e9, False), (0.0, True)],
                         ids=["load outlasts any run", "no load"])
def test_a_nuts_run_captures_in_a_process_without_the_compiler_stack_only_where_it_pays_its_load(
        monkeypatch, stack_load, captures):
    # after a kernel restart Pyro's JIT needs nothing of torch's compiler stack, which every capture
    # imports first: its load is part of the capture's price, set here far from any run's saving
    from pyro.infer.mcmc import MCMC, NUTS

    import pyro_jitmagic.policy.auto
    from pyro_jitmagic.compat import capture as compat

    monkeypatch.setattr(compat, "compiler_stack_loaded", lambda: False)
    monkeypatch.setattr(pyro_jitmagic.policy.auto, "PRIOR_STACK_LOAD", stack_load)
    policy = AutoPolicy(memory=None, prior_potential_capture_evals=1.0)
    pyro.set_rng_seed(1)
    mcmc = MCMC(NUTS(models.gaussian), num_samples=60, warmup_steps=60, disable_progbar=True)
    with pyro_jitmagic.compiled(auto=policy, backend="step") as run:
        mcmc.run(DATA)
    notes = " ".join(run.report.notes)
    captured = "the potential and its gradient captured after" in notes
    assert captured == captures
    if captures:
        assert "and torch's compiler stack's first load" in notes and policy.stack_rent == 0.0
    else:  # Pyro's JIT ran it, and what staying forwent counts toward the next run's capture
        assert [c.key for c in run.report.compilations] == ["potential energy"]  # Pyro's trace alone
        assert ("--auto kept the potential below the whole step" in notes
                and "capturing first loads torch's compiler stack" in notes)
        assert policy.stack_rent > 0.0


_AFTER_A_RESTART = """
import json, sys
import models, pyro, torch
import pyro_jitmagic, pyro_jitmagic.policy.auto
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.mcmc import MCMC, NUTS
from pyro.optim import Adam

pyro_jitmagic.policy.auto.PRIOR_STACK_LOAD = 1e9  # (no run of this size could repay it)
data = models.data()
mcmc = MCMC(NUTS(models.gaussian), num_samples=30, warmup_steps=30, disable_progbar=True)
with pyro_jitmagic.compiled() as nuts:
    mcmc.run(data)
stack_after_nuts = "torch._inductor.config" in sys.modules
svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())
with pyro_jitmagic.compiled() as fit:
    svi.step(data)
print(json.dumps({"stack after nuts": stack_after_nuts, "nuts": nuts.report.notes, "svi": fit.report.notes}))
"""


def test_a_nuts_cell_after_a_kernel_restart_loads_nothing_pyros_jit_does_not_need():
    # torch's compiler stack (about a second to import) is what a capture needs and an SVI step
    # loads anyway; a short NUTS run that stays on Pyro's JIT never loads it, in a fresh process
    import json
    import pathlib
    import subprocess
    import sys

    tests = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _AFTER_A_RESTART], capture_output=True, text=True,
                         cwd=tests, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    said = json.loads(out.stdout.splitlines()[-1])
    assert said["stack after nuts"] is False
    assert any("capturing first loads torch's compiler stack" in n for n in said["nuts"]), said["nuts"]
    assert not any("one-off start-up" in n for n in said["nuts"])
    # the SVI cell after it pays torch's start-up before its first step, as before
    assert any("torch's one-off start-up in this process took" in n for n in said["svi"]), said["svi"]


def test_an_interrupted_nuts_run_starts_no_codegen_it_had_put_off(monkeypatch, fake_clock):
    from pyro.infer.mcmc import MCMC, NUTS

    from pyro_jitmagic.wholestep.backends import SwitchesToInductor

    started = []
    monkeypatch.setattr(SwitchesToInductor, "build_inductor",
                        lambda self, on_done=None, delay=0.0: started.append(self))
    policy = AutoPolicy(memory=None, prior_potential_capture_evals=1.0)
    pyro.set_rng_seed(1)
    mcmc = MCMC(NUTS(models.gaussian), num_samples=60, warmup_steps=60, disable_progbar=True,
                hook_fn=lambda kernel, samples, stage, i: _interrupt_at(stage, i))
    with pytest.raises(KeyboardInterrupt), pyro_jitmagic.compiled(auto=policy, backend="inductor") as run:
        mcmc.run(DATA)
    assert any("the potential and its gradient captured after" in n for n in run.report.notes)
    assert started == []
    assert any("the run was interrupted: inductor's codegen of the potential, put off until it ended, "
               "was not started" in n for n in run.report.notes)


def _interrupt_at(stage, i):
    if stage == "Sample" and i == 40:  # (a user's Ctrl-C, late in the run)
        raise KeyboardInterrupt


def test_a_short_nuts_run_never_pays_for_the_capture():
    from pyro.infer.mcmc import MCMC, NUTS

    policy = AutoPolicy(memory=None, prior_potential_capture_evals=1e6)
    mcmc = MCMC(NUTS(models.gaussian), num_samples=20, warmup_steps=20, disable_progbar=True)
    with pyro_jitmagic.compiled(auto=policy, backend="inductor") as run:
        mcmc.run(DATA)
    assert not any("captured after" in n for n in run.report.notes)


@pytest.mark.slow
def test_a_graph_in_inductors_cache_takes_the_signature_to_inductors_kernels(tmp_path, monkeypatch):
    from pyro_jitmagic.wholestep import cxx_compiler

    if cxx_compiler() is None:
        pytest.skip("no C++ compiler: inductor cannot run here")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    eager, _, _ = _losses(400)
    eager_params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    # an earlier --backend inductor cell of the same model filled inductor's disk cache
    _, _, warmed = _losses(5, backend="inductor", auto=False)
    (entry,) = pyro_jitmagic.run.process.PROCESS.session.whole_steps.of(warmed).values()
    assert entry.compiled.wait(timeout=900)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = _svi()
    policy = AutoPolicy(prior_capture_steps=3.0)  # the memory beside the cache
    losses, reports = [], []
    for _ in range(2):  # two cells: the kernels may arrive after the first ends
        with pyro_jitmagic.compiled(auto=policy, backend="inductor") as run:
            losses += [svi.step(DATA) for _ in range(200)]
        reports.append(run.report)
        for e in pyro_jitmagic.run.process.PROCESS.session.whole_steps.of(svi).values():
            assert e.compiled.wait(timeout=900)
    assert losses == pytest.approx(eager, rel=1e-4)
    for name, value in pyro.get_param_store().items():
        torch.testing.assert_close(value.detach(), eager_params[name], rtol=1e-4, atol=1e-5)
    paths = [p for r in reports for d in r.auto for p in d.path]
    assert any(p.startswith("inductor's codegen from step") for p in paths), paths
    assert any(p.startswith("inductor at step") and "warm disk cache" in p for p in paths), paths


def test_the_memory_lives_where_inductor_keeps_its_cache_found_without_importing_inductor(monkeypatch):
    import os

    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from pyro_jitmagic.compat.capture import inductor_cache_dir

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert inductor_cache_dir() == os.path.abspath(default_cache_dir())
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ  # (torch's own cache_dir() sets it)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")
    assert inductor_cache_dir() == "/somewhere/else"
