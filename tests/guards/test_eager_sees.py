"""Every way of ``%%pyrojit`` sees what eager sees: each habit of ``habits.py``, step by step.

Each way runs the habit's cells from the same seed as an eager run of them, and must give its
losses (to 1e-4, relative, at every step), its params and optimizer state (to float rounding: see
``agreement.py``), its random streams exactly, and the same errors; where it ran steps eager to do
so, its report says why.
"""

from __future__ import annotations

import math

import pytest
import torch
from agreement import rounding_atol
from habits import CASES, WAYS
from ways import COUNTS, Ran, run

from pyro_jitmagic.guards import states_equal


@pytest.fixture(scope="module")
def eager(shell):
    """The eager run of a habit with a way's step counts, run once."""
    runs: dict[tuple[str, str], Ran] = {}

    def get(case, way):
        key = (case.name, way)
        if key not in runs:
            runs[key] = run(shell, case, None, COUNTS[way])
        return runs[key]

    return get


def _close(compiled, expected, steps, where):
    if isinstance(expected, dict):
        assert compiled.keys() == expected.keys(), where
        for key in expected:
            _close(compiled[key], expected[key], steps, f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(compiled) == len(expected), where
        for i, (c, e) in enumerate(zip(compiled, expected, strict=True)):
            _close(c, e, steps, f"{where}[{i}]")
    elif isinstance(expected, torch.Tensor):
        atol = max(1e-6, rounding_atol(expected, steps))
        torch.testing.assert_close(compiled, expected, rtol=1e-4, atol=atol, msg=lambda m: f"{where}: {m}")
    elif isinstance(expected, float):
        assert math.isclose(compiled, expected, rel_tol=1e-4, abs_tol=1e-6), where
    else:
        assert compiled == expected, where


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_way_gives_eagers_results(shell, eager, case, way, auto_policy):
    # plain %%pyrojit climbs on the priors alone: what the session's policy learned from earlier
    # cells (a capture measured slow on a loaded machine) could keep it below the whole step
    auto_policy()
    expected = eager(case, way)
    got = run(shell, case, way, COUNTS[way])

    assert got.errors == expected.errors
    if way in case.draws_part:  # Pyro's trace drops a draw: the report must say the streams part
        assert any("draws part" in line for line in got.said), got.said
        return
    assert len(got.losses) == len(expected.losses)
    for step, (c, e) in enumerate(zip(got.losses, expected.losses, strict=True), start=1):
        assert math.isclose(c, e, rel_tol=1e-4, abs_tol=1e-6), f"step {step}: {c} compiled, {e} eager"
    steps = len(expected.losses)
    _close(got.params, expected.params, steps, "params")
    _close(got.optim_states, expected.optim_states, steps, "optimizer state")
    assert torch.equal(got.rng, expected.rng), "torch's random stream parted from eager's"
    assert states_equal(got.streams, expected.streams), "numpy's or Python's random stream parted"
    _close(got.kept, expected.kept, steps, "kept")  # what hooks, callbacks and modules recorded
    named = case.named_for(way)
    if named:
        assert any(named in line for line in got.said), got.said
