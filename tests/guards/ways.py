"""Run a habit's cells eager or under ``%%pyrojit`` one way, in the test shell, and keep what a user
would compare: every loss, the params, the optimizer state, the random streams, the cells' errors,
and what the reports said of guards and eager steps."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import torch
from habits import WAYS, Case
from IPython.utils.capture import capture_output

#: Steps per loop, per way: plain %%pyrojit climbs to the whole step on a cell of 800 steps (the
#: loop says so before it runs); the named backends compile from the start, so fewer steps tell.
COUNTS = {"plain": {"n": 800, "half": 800, "third": 400, "short": 60},
          "pyro": {"n": 200, "half": 100, "third": 70, "short": 60},
          "step": {"n": 200, "half": 100, "third": 70, "short": 60}}


@dataclass
class Ran:
    """What one run of a habit's cells left."""

    errors: list[str]
    losses: list[float]
    params: dict[str, torch.Tensor]
    optim_states: dict[str, Any]
    rng: torch.Tensor
    streams: list[Any]  # numpy's and Python's, and the numpy generators the namespace holds
    said: list[str]  # the reports' guards, notes and switch lines
    kept: dict[str, Any]  # the values of the case's kept names


def run(shell: Any, case: Case, way: str | None, counts: dict[str, int]) -> Ran:
    """The setup, then each cell eager (``way`` None) or under ``%%pyrojit`` that way; the names the
    cells bound are removed after."""
    import random

    before = set(shell.user_ns)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    np.random.seed(0)
    random.seed(0)
    errors, said = [], []
    try:
        with capture_output():
            setup = shell.run_cell(case.setup)
            assert setup.success, setup.error_in_exec
            for cell in case.cells:
                source = cell.format(**counts)
                if way is not None:
                    source = f"%%pyrojit -q -o _habit_report {WAYS[way]}\n{source}"
                result = shell.run_cell(source)
                error = result.error_in_exec
                errors.append("" if error is None else type(error).__name__)
                report = shell.user_ns.pop("_habit_report", None)
                if report is not None:
                    said += [*report.guards, *report.notes]
                    said += [f"{s.target}: {s.reason}" for s in report.switches]
        ns = shell.user_ns
        return Ran(errors, list(ns["losses"]),
                   {k: v.detach().clone() for k, v in pyro.get_param_store().items()},
                   {name: copy.deepcopy(value.optim.get_state()) for name, value in ns.items()
                    if isinstance(value, pyro.infer.SVI)},
                   torch.get_rng_state(), _streams(ns), said, {k: copy.deepcopy(ns[k]) for k in case.kept})
    finally:
        for name in set(shell.user_ns) - before:
            del shell.user_ns[name]
        pyro.clear_param_store()


def _streams(ns: dict[str, Any]) -> list[Any]:
    import random

    found: list[Any] = [random.getstate(), np.random.get_state(legacy=False)]
    found += [v.bit_generator.state for v in ns.values() if isinstance(v, np.random.Generator)]
    return found
