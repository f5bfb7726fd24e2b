"""The short way of the climb's low steps: once the climb cannot capture before the cell ends, a step
skips its look and the signature's lookup and runs on Pyro's route; once its Pyro key cannot compile
either, an eager step skips Pyro's route too. What the long way would see (a step under
``no_grad``, another signature, figures the session learns mid-cell) it must still see. Each test
records which way every step took, so that both run.

The priors make capturing hopeless whatever a step takes on this machine (a million steps), and
compiling a key hopeless or free: the decisions never read the clock."""

from __future__ import annotations

import pytest
import torch
from agreement import rounding_atol
from cells import run

from pyro_jitmagic.policy.auto import LEARN_AFTER

SETUP = """
import pyro, torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.optim import Adam
import models
pyro.clear_param_store()
pyro.set_rng_seed(0)
data = models.data()
svi = SVI(models.gaussian, AutoDiagonalNormal(models.gaussian), Adam({"lr": 0.01}), Trace_ELBO())
"""

HOPELESS = {"prior_compile_steps": {"svi": 1e6}, "prior_capture_steps": 1e6, "memory": None}


@pytest.fixture
def ways(monkeypatch):
    """Which way each eager step took, in order: "short" or "long"."""
    import pyro_jitmagic.compilers.auto as tiers
    import pyro_jitmagic.compilers.pyro.routes as routes

    taken: list[str] = []

    def counted(way, original):
        def step(*args, **kwargs):
            taken.append(way)
            return original(*args, **kwargs)
        return step

    monkeypatch.setattr(tiers, "eager_step", counted("short", tiers.eager_step))
    monkeypatch.setattr(routes, "eager_step", counted("long", routes.eager_step))
    return taken


def _eager_losses(ip, body):
    ip.run_cell(SETUP)
    ip.run_cell(f"losses = []\n{body}")
    return list(ip.user_ns["losses"])


def _climbed(ip, body):
    ip.run_cell(SETUP)
    result, _ = run(ip, f"%%pyrojit -q -o report\nlosses = []\n{body}")
    assert result.success, result.error_in_exec
    return list(ip.user_ns["losses"]), ip.user_ns["report"]


LOOP = "for _ in range(40):\n    losses.append(svi.step(data))"


def test_steps_that_stay_eager_take_the_short_way_with_eagers_losses_and_every_step_booked(
        shell, ways, auto_policy):
    eager = _eager_losses(shell, LOOP)
    auto_policy(**HOPELESS)
    losses, report = _climbed(shell, LOOP)

    assert losses == eager  # the same eager steps, in the same order: bit for bit
    # three steps measure the key, the fourth decides it for the rest of the cell
    assert ways.count("short") == 36 and ways[-36:] == ["short"] * 36
    (row,) = [d for d in report.auto if d.eager_steps]
    assert (row.eager_steps, row.compiled_steps) == (40, 0) and row.why.startswith("stayed eager")
    (svi_run,) = report.svi_runs
    assert [s.loss for s in svi_run.steps] == eager  # every step timed and recorded


def test_a_step_under_no_grad_mid_run_takes_the_long_way_and_is_reported(shell, ways, auto_policy):
    body = ("import contextlib\n"
            "for i in range(40):\n"
            "    with torch.no_grad() if i == 20 else contextlib.nullcontext():\n"
            "        losses.append(svi.step(data))")
    eager = _eager_losses(shell, body)
    auto_policy(**HOPELESS)
    losses, report = _climbed(shell, body)

    assert losses == eager
    assert "torch.no_grad() was active" in str(report)  # the long way saw it, and said so
    # (the no_grad step runs as written, by neither way; the step after it takes the long way)
    assert ways[4:20] == ["short"] * 16 and ways[20] == "long" and ways[21:] == ["short"] * 18


def test_another_signature_mid_run_takes_the_long_way(shell, ways, auto_policy):
    body = ("for i in range(40):\n"
            "    losses.append(svi.step(data[:10] if i == 20 else data))")
    eager = _eager_losses(shell, body)
    auto_policy(**HOPELESS)
    losses, report = _climbed(shell, body)

    assert losses == eager
    # step 21 is another signature's first: the long way books it; step 22 is back on the first
    # signature, whose short way the long way offers again after it
    assert ways[4:20] == ["short"] * 16 and ways[20:22] == ["long", "long"] and ways[22:] == ["short"] * 18
    (row,) = report.auto  # Pyro's key is one for both (it keys on keywords, not shapes)
    assert row.eager_steps == 40


def test_figures_learned_mid_cell_send_the_next_step_the_long_way(shell, ways, auto_policy):
    policy = auto_policy(**HOPELESS)
    shell.push({"policy": policy})
    body = ("for i in range(40):\n"
            "    if i == 20:\n"
            "        policy.learned += 1  # (as when another key's compile is learned)\n"
            "    losses.append(svi.step(data))")
    losses, _ = _climbed(shell, body)

    assert len(losses) == 40
    # steps 5-20 short; step 21 sees new figures and decides again (the long way); then short again
    assert ways[4:20] == ["short"] * 16 and ways[20] == "long" and ways[21:] == ["short"] * 19


def test_steps_on_pyros_jit_skip_the_climbs_look_with_every_check_of_pyros_route(shell, auto_policy,
                                                                                  monkeypatch):
    import pyro_jitmagic.compilers.auto as tiers
    import pyro_jitmagic.policy.auto as policies

    monkeypatch.setattr(policies, "STEP_DOWN_AT", ())  # (stepping down compares measured step times)
    long_way = []
    step = tiers.TieredRoute._step

    def counted(self, *args):
        long_way.append(len(shell.user_ns.get("losses", ())) + 1)  # (the step's number)
        return step(self, *args)

    monkeypatch.setattr(tiers.TieredRoute, "_step", counted)
    eager = _eager_losses(shell, LOOP)
    auto_policy(prior_compile_steps={"svi": 0.0}, prior_capture_steps=1e6, memory=None)  # compiles at once
    losses, report = _climbed(shell, LOOP)

    expected = torch.tensor(eager)
    torch.testing.assert_close(torch.tensor(losses), expected, rtol=0, atol=rounding_atol(expected, 40))
    # three eager steps measure the key, the fourth compiles it, then the short way; once the key's
    # compile is learned (LEARN_AFTER compiled steps), the session's figures are new: one long look
    assert long_way == [1, 2, 3, 4, 4 + LEARN_AFTER + 1], long_way
    (row,) = report.auto
    assert (row.eager_steps, row.compiled_at, row.compiled_steps) == (3, 4, 37)
    assert report.sentinel_checks >= 1  # the sentinel's checks are Pyro's route's: still made
