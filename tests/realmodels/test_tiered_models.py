"""Real Pyro models under ``--auto`` with every tier: each SVI signature climbs to the whole step
(the session's policy is told captures are nearly free, so that it climbs within the cells' few
steps), an MCMC run's potential to the whole potential and gradient, and ``--compare`` agrees with
eager on every model, the control that branches on a tensor value included (it climbs before
Pyro's JIT traces, and the whole step checks the branch on every step). What the whole step
cannot capture stays on the tier below, with the reason in a note. One
``--compare --auto --backend step`` run per model (slow tier)."""

from __future__ import annotations

import pytest
from five_ways import run_model
from test_whole_step_models import DIRECT_LOSSES, FALLS_BACK
from zoo import MODELS

import pyro_jitmagic

pytestmark = pytest.mark.slow

#: MCMC models: their potential climbs (HMC/NUTS), or they have no SVI to climb
MCMC = {"eight_schools_nuts", "sir_hmc", "nuts_full_mass", "baseball"}


@pytest.fixture
def eager_climbing_policy(shell):
    magics = shell.magics_manager.registry["PyroJitMagics"]
    before = magics.session.auto
    magics.session.auto = pyro_jitmagic.AutoPolicy(
        memory=None, prior_capture_steps=3.0, prior_potential_capture_evals=0.01)
    yield
    magics.session.auto = before


@pytest.mark.parametrize("model", [pytest.param(m, id=m.name) for m in MODELS])
def test_every_tier_agrees_with_eager_and_climbs_where_it_can(model, shell, eager_climbing_policy):
    ran = run_model(shell, model, ("tiers",), backend="step")["tiers"]
    assert ran.ok, ran.error
    assert ran.left_patched == ""
    comparison = ran.result
    # (the control that branches on a tensor value too: it climbs at step 4, before Pyro's JIT
    # would bake the branch in, and the whole step checks the branch on every step)
    assert comparison.outcome in ("agree", "agree within noise"), comparison.outcome_reason
    report = comparison.compiled
    paths = [d.path for d in report.auto if d.path]
    notes = " ".join(report.notes)
    if model.name in FALLS_BACK:
        assert "--auto stays on" in notes and FALLS_BACK[model.name] in notes, report.notes
    elif model.name in MCMC:
        assert not paths
        assert "the potential and its gradient captured after" in notes, report.notes
    elif model.name not in DIRECT_LOSSES:
        assert paths and any(p.startswith("step at step") for p in paths[0]), (paths, report.notes)
