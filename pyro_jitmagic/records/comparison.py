"""Eager against compiled: what ``%%pyrojit --compare`` found, as records.

:class:`Comparison` is what ``--compare -o NAME`` stores; :mod:`pyro_jitmagic.comparison.verdict`
derives its figures. Its verdict is one of three, each with a one-line reason:

* **agree**: the same random draws, and losses equal step by step up to float rounding;
* **agree within noise**: the draws part (a NUTS path, a discrete draw that flips), so loss levels
  and posterior means are judged against their own noise. Final params are said, not judged: a
  network's weights may end elsewhere, equally good;
* **disagree**: only on evidence beyond noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .report import JitReport, LossRun, MCMCRun, SVIRun
from .shown import Shown

#: Losses and params agree when their relative difference is at most this.
#: Float32 rounding differs between the executor and eager kernels; over
#: thousands of optimizer steps it stays orders of magnitude below this.
RELATIVE_TOLERANCE = 1e-3

#: Posterior means agree when they differ by at most this many Monte Carlo
#: standard errors (sd / sqrt(ESS), from both runs). NUTS trajectories part
#: ways at the first float difference in a gradient, so compiled and eager
#: chains are different draws from one posterior; a baked-in branch shifts a
#: mean by far more than this.
MCMC_Z_TOLERANCE = 5.0

Outcome = Literal["agree", "agree within noise", "disagree"]
_WORST = {"agree": 0, "agree within noise": 1, "disagree": 2}
_OUTCOME_WORDS = {"agree": "results agree", "agree within noise": "results agree within noise",
                  "disagree": "RESULTS DISAGREE"}

@dataclass(frozen=True)
class SVIComparison:
    """One SVI object's steps, or one hand-written loop's loss calls, eager and compiled.

    Attributes
    ----------
    speedup : float or None
        Eager total time over compiled total time, compile included.
    steady_speedup : float or None
        Eager median step over compiled median step after compiling.
    compile_cost : float
        Seconds the compiled run spent above its steady step time on the steps
        that traced and the steps after each (:attr:`~.report.SVIRun.compile_seconds`).
    break_even_step : int or None
        The step from which the compiled run is ahead in total time, for good;
        None when it never is in this run.
    projected_break_even_step : int or None
        When not ahead in this run: the step it would be ahead at, if steps
        went on at their median times; None when compiled steps are not faster.
    loss_difference, param_difference : float
        Largest relative difference of the losses, step by step, and of the
        final params (``nan`` when there is nothing to compare).
    outcome : {"agree", "agree within noise", "disagree"}
        The verdict (see the module's docstring); ``reason`` says it in one line.
    param_spread : float
        Largest difference of the final params in units of their spread over the
        last quarter of the runs (``nan`` when it could not be measured).
    """

    target: str
    eager: SVIRun | LossRun
    compiled: SVIRun | LossRun
    speedup: float | None
    steady_speedup: float | None
    compile_cost: float
    break_even_step: int | None
    projected_break_even_step: int | None
    loss_difference: float
    param_difference: float
    outcome: Outcome = "agree"
    reason: str = ""
    param_spread: float = math.nan

    @property
    def agree(self) -> bool:
        return self.outcome != "disagree"


@dataclass(frozen=True)
class MCMCComparison:
    """One MCMC run, eager and compiled.

    Attributes
    ----------
    mean_difference_sd : float
        Largest difference of posterior means over sites, in posterior
        standard deviations.
    mean_difference_z : float
        The same difference in Monte Carlo standard errors; the runs agree
        when it is at most :data:`MCMC_Z_TOLERANCE`.
    outcome, reason
        The verdict, as for :class:`SVIComparison`.
    """

    target: str
    eager: MCMCRun
    compiled: MCMCRun
    speedup: float | None
    sampling_speedup: float | None
    compile_cost: float
    mean_difference_sd: float
    mean_difference_z: float
    outcome: Outcome = "agree within noise"
    reason: str = ""

    @property
    def agree(self) -> bool:
        return self.outcome != "disagree"


@dataclass(frozen=True)
class Isolation:
    """What ``--compare`` put back between its two runs, and what it could not.

    Attributes
    ----------
    restored : tuple of str
        What was saved before the eager run and restored before the compiled one.
    discarded : tuple of str
        Names the eager run bound or rebound, put back as they were.
    mutated : tuple of str
        Objects the cell changed in place (a list appended to, a tensor
        updated): the eager run's changes could not be undone, so they were
        changed twice.
    """

    restored: tuple[str, ...]
    discarded: tuple[str, ...]
    mutated: tuple[str, ...]


@dataclass(frozen=True)
class Comparison(Shown):
    """``%%pyrojit --compare``: the same cell eager, then compiled, from the same start."""

    eager: JitReport
    compiled: JitReport
    svi: tuple[SVIComparison, ...]
    mcmc: tuple[MCMCComparison, ...]
    isolation: Isolation
    seed: int | None = None

    @property
    def agree(self) -> bool:
        """True for both "agree" and "agree within noise"."""
        return self.outcome != "disagree"

    @property
    def outcome(self) -> Outcome:
        """The worst outcome over the SVI objects and MCMC runs compared ("agree" when none)."""
        parts: list[SVIComparison | MCMCComparison] = [*self.svi, *self.mcmc]
        return max((x.outcome for x in parts), key=_WORST.__getitem__, default="agree")

    @property
    def outcome_reason(self) -> str:
        """Why, in one line: the reason of the worst comparison, named when there are several."""
        parts: list[SVIComparison | MCMCComparison] = [*self.svi, *self.mcmc]
        worst = [x for x in parts if x.outcome == self.outcome]
        if not worst:
            return "the cell ran no SVI step and no MCMC run"
        x = worst[0]
        return f"{x.target}: {x.reason}" if len(parts) > 1 else x.reason

    @property
    def compiled_anything(self) -> bool:
        """False when the compiled run compiled nothing (both runs were eager)."""
        switches = self.compiled.switches
        return not switches or any(s.compiled for s in switches)

    @property
    def verdict(self) -> str:
        """The answer in one line: "compiled 2.6x faster per step, ahead after 340 steps, results agree"."""
        if (self.svi or self.mcmc) and not self.compiled_anything:
            why = "; ".join(f"{s.target}: {s.reason}" for s in self.compiled.switches if s.reason)
            return f"nothing was compiled ({why}): both runs ran eager"
        parts = []
        main_svi = max(self.svi, key=lambda s: len(s.compiled.steps), default=None)
        if main_svi is not None:
            parts += _svi_verdict(main_svi)
        for m in self.mcmc:
            if m.sampling_speedup is not None:
                parts.append(f"{m.target} sampling {_times(m.sampling_speedup)}")
        if not self.svi and not self.mcmc:
            parts.append("the cell ran no SVI step and no MCMC run")
        else:
            parts.append(_OUTCOME_WORDS[self.outcome])
        return ", ".join(parts)


def _times(speed: float) -> str:
    """``"2.6x faster"`` or ``"1.3x slower"``."""
    return f"{speed:.2g}x faster" if speed >= 1 else f"{1 / speed:.2g}x slower"


def _svi_verdict(s: SVIComparison) -> list[str]:
    """What the longest SVI comparison says of speed: per step, and from when ahead in total."""
    parts = []
    if s.steady_speedup is None:
        parts.append("no steady compiled steps to compare")
    else:
        parts.append(f"compiled {_times(s.steady_speedup)} per step")
    if s.break_even_step is not None:
        parts.append(f"ahead after {s.break_even_step} steps")
    elif s.projected_break_even_step is not None:
        parts.append(f"not yet ahead in total (would be after ~{s.projected_break_even_step} steps)")
    elif s.steady_speedup is not None:
        parts.append("never ahead in total")
    return parts
