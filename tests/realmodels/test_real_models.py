"""Real Pyro models, each run five ways in the test shell: what a user of ``%%pyrojit`` checks.

For every model of :mod:`zoo` (eager, by hand with Pyro's own JIT, ``%%pyrojit``,
``--compare``, ``--auto``; see :mod:`five_ways`):

* the magic compiles what Pyro's JIT compiles, and where Pyro's JIT fails the
  magic runs it eager and says why, without failing the cell;
* ``--compare`` gives the right verdict: ``"agree"`` step by step, ``"agree
  within noise"`` where the runs cannot be compared step by step, ``"disagree"``
  only for the control model that branches on a tensor value;
* no risky warning, except the control's, which names its line wherever it was traced;
* nothing is left patched, and no cell raised.

Each model runs its five ways once, on the first test that asks for it; the
other tests read what it gave. Models marked ``slow`` (NUTS and HMC runs) can be
left out with ``-m "not slow"``.
"""

from __future__ import annotations

import pytest
from five_ways import WAYS, ModelRun, run_model
from zoo import AGREE, DISAGREE, MODELS, SAMPLES_AGREE, WITHIN_NOISE, RealModel

OUTCOMES = (AGREE, WITHIN_NOISE, DISAGREE)

# Losses of a run that agrees step by step: float32 rounding differs between
# the TorchScript executor and eager kernels, and stays far below this.
SAME_LOSS_TOLERANCE = 1e-5


def _params(models):
    return [pytest.param(m, id=m.name, marks=[pytest.mark.slow] if m.slow else []) for m in models]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run the models on one torch thread: on a small shared machine two threads that wait
    for each other made some models' steps ten times slower (the DMM's: 40 ms -> 340 ms)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_runs():
    """Each model's five ways, run once per session, by model name."""
    return {}


@pytest.fixture
def ran(model: RealModel, shell, model_runs) -> ModelRun:
    """The model's five ways; --auto's on a fresh policy, which decides from its priors alone: the
    session's would bring what earlier cells measured (captures measured cheap there take even the
    control's 30 steps to the whole step, which names no risky line)."""
    from pyro_jitmagic import AutoPolicy
    from pyro_jitmagic.run.process import PROCESS

    if model.name not in model_runs:
        session = PROCESS.session
        before, session.auto = session.auto, AutoPolicy()
        try:
            model_runs[model.name] = run_model(shell, model)
        finally:
            session.auto = before
    return model_runs[model.name]


def _warnings_text(warnings) -> str:
    return "; ".join(f"{w.where}: {w.source!r} ({w.message.splitlines()[0]})" for w in warnings)


def _reports(ran: ModelRun):
    """The compiled reports the magic stored: %%pyrojit, --compare's compiled run, --auto."""
    reports = {}
    for way in ("magic", "auto"):
        if ran[way].result is not None:
            reports[way] = ran[way].result
    comparison = ran["compare"].result
    if comparison is not None:  # a Comparison, or the report of the run that failed
        reports["compare"] = getattr(comparison, "compiled", comparison)
    return reports


@pytest.mark.parametrize("model", _params(MODELS))
def test_the_cell_runs_eager_as_written(ran):
    assert ran["eager"].ok, ran["eager"].error


@pytest.mark.parametrize("model", _params(MODELS))
def test_pyro_jit_by_hand_runs_the_model_or_fails_as_recorded(ran):
    by_hand, expect = ran["by hand"], ran.model.expect
    assert by_hand.ok == expect.pyro_jit, by_hand.error or "Pyro's JIT ran it"
    if not expect.pyro_jit:
        assert expect.by_hand_error in by_hand.error


def _eager_in_pyro(report):
    """Direct calls of an ELBO's ``loss``: Pyro's Jit* ELBOs compute it eagerly, so the magic may
    compile it (on its companion) or run it as written, saying why."""
    return {run.target for run in report.loss_runs if run.method == "loss"}


@pytest.mark.parametrize("model", _params(MODELS))
def test_the_magic_compiles_what_pyro_jit_compiles(ran):
    magic = ran["magic"]
    assert magic.ok, f"the %%pyrojit cell raised {magic.error}"
    report = magic.result
    assert report.error is None
    assert report.switches, f"no SVI or MCMC ran compiled or eager; notes: {report.notes}"
    by_hand_ran = ran["by hand"].ok
    for switch in report.switches:
        if switch.target in _eager_in_pyro(report):
            assert switch.compiled or switch.reason, f"{switch.target} ran eager and does not say why"
            continue
        assert switch.compiled == by_hand_ran, (
            f"{switch.target}: {switch.before} -> {switch.after}, compiled={switch.compiled}, "
            f"while Pyro's JIT by hand {'ran' if by_hand_ran else 'failed: ' + ran['by hand'].error}")
        if not by_hand_ran:
            assert switch.reason or report.notes, f"{switch.target} ran eager and the report does not say why"


@pytest.mark.parametrize("model", _params(MODELS))
def test_auto_runs_the_cell_and_compiles_what_the_magic_compiles(ran):
    auto, magic = ran["auto"], ran["magic"]
    assert auto.ok, f"the %%pyrojit --auto cell raised {auto.error}"
    assert auto.result.error is None
    assert auto.result.switches, f"no SVI or MCMC ran compiled or eager; notes: {auto.result.notes}"
    assert all(s.compiled == ran["by hand"].ok for s in auto.result.switches
               if s.target not in _eager_in_pyro(auto.result)), auto.result.switches
    if ran["by hand"].ok:  # each compiled SVI and MCMC run had its steps decided by --auto
        decided = {d.owner for d in auto.result.auto}
        assert decided >= {s.target for s in auto.result.switches if s.compiled}, (
            f"--auto decided for {sorted(decided)}; compilations: "
            f"{[(c.owner, c.key) for c in auto.result.compilations]}")
    if magic.ok:
        assert [s.target for s in auto.result.switches] == [s.target for s in magic.result.switches]


@pytest.mark.parametrize("model", _params(MODELS))
def test_no_false_risky_warning(ran):
    risky_line = ran.model.expect.risky_line
    reports = _reports(ran)
    assert reports, "no %%pyrojit cell stored a report"
    for way, report in reports.items():
        # --auto keeps a short cell eager on its priors (the control's 30 steps): then nothing was
        # traced and there is nothing to warn of (tests/shell/test_magic.py names the line where it
        # compiles)
        traced = bool(report.compilations) or way != "auto"
        if risky_line and traced:
            assert report.risky_warnings, f"{way}: the risky line was not named"
            assert {w.source for w in report.risky_warnings} == {risky_line}, (
                f"{way}: {_warnings_text(report.risky_warnings)}")
        else:
            assert report.risky_warnings == (), f"{way}: {_warnings_text(report.risky_warnings)}"


@pytest.mark.parametrize("model", _params(MODELS))
def test_nothing_is_left_patched(ran):
    for way in WAYS:
        assert ran[way].left_patched == "", f"{way}: {ran[way].left_patched}"


@pytest.mark.parametrize("model", _params(MODELS))
def test_compare_says_whether_the_runs_agree(ran):
    compare, expect = ran["compare"], ran.model.expect
    assert compare.ok, f"the --compare cell raised {compare.error}"
    comparison = compare.result
    assert comparison.svi or comparison.mcmc, f"nothing was compared: {comparison.verdict}"
    assert comparison.agree == (expect.outcome != DISAGREE), comparison.verdict


@pytest.mark.parametrize("model", _params(MODELS))
def test_the_verdict_has_the_expected_outcome_and_says_why(ran):
    compare, expect = ran["compare"], ran.model.expect
    assert compare.ok, f"the --compare cell raised {compare.error}"
    comparison = compare.result
    expected = (AGREE, WITHIN_NOISE) if expect.outcome == SAMPLES_AGREE else (expect.outcome,)
    assert comparison.outcome in expected, f"{comparison.outcome}: {comparison.outcome_reason}"
    reason = comparison.outcome_reason
    assert reason.strip() and "\n" not in reason.strip(), repr(reason)
    runs = (*comparison.svi, *comparison.mcmc)
    assert runs, "nothing was compared"
    for run in runs:
        assert run.outcome in OUTCOMES and run.reason.strip(), (run.target, run.outcome, run.reason)
    outcomes = {run.outcome for run in runs}
    if expect.outcome == AGREE:
        assert outcomes == {AGREE}
    elif expect.outcome == SAMPLES_AGREE:
        assert DISAGREE not in outcomes
    elif expect.outcome == WITHIN_NOISE:
        assert DISAGREE not in outcomes and WITHIN_NOISE in outcomes
    else:
        assert DISAGREE in outcomes
    if expect.reason_mentions:
        said = " ".join([reason, *(run.reason for run in runs)]).lower()
        assert any(word.lower() in said for word in expect.reason_mentions), (
            f"the reasons mention none of {expect.reason_mentions}: {said}")


@pytest.mark.parametrize("model", _params(m for m in MODELS if m.expect.same_losses))
def test_compare_shows_the_same_losses_in_both_runs(ran):
    compare = ran["compare"]
    assert compare.ok, f"the --compare cell raised {compare.error}"
    (svi,) = compare.result.svi
    eager, compiled = svi.eager.losses, svi.compiled.losses
    assert len(eager) == len(compiled)
    assert compiled[0] == pytest.approx(eager[0], rel=SAME_LOSS_TOLERANCE), (
        f"first losses: eager {eager[0]:.6g}, compiled {compiled[0]:.6g}")
    assert list(compiled) == pytest.approx(list(eager), rel=SAME_LOSS_TOLERANCE)
