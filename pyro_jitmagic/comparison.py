"""Eager against compiled: the figures ``%%pyrojit --compare`` derives from two runs.

Everything here is a pure function of the two runs' records (step times,
losses, samples), so it is tested with made-up clocks. :class:`Comparison` is
what ``%%pyrojit --compare -o NAME`` stores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .report import JitReport, MCMCRun, Shown, SVIRun

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

@dataclass(frozen=True)
class SVIComparison:
    """One SVI object's steps, eager and compiled.

    Attributes
    ----------
    speedup : float or None
        Eager total time over compiled total time, compile included.
    steady_speedup : float or None
        Eager median step over compiled median step after compiling.
    compile_cost : float
        Seconds the compiled run spent above its steady step time on the steps
        that traced and the steps after each (:attr:`SVIRun.compile_seconds`).
    break_even_step : int or None
        The step from which the compiled run is ahead in total time, for good;
        None when it never is in this run.
    projected_break_even_step : int or None
        When not ahead in this run: the step it would be ahead at, if steps
        went on at their median times; None when compiled steps are not faster.
    loss_difference, param_difference : float
        Largest relative difference of the losses, step by step, and of the
        final params (``nan`` when there is nothing to compare).
    """

    target: str
    eager: SVIRun
    compiled: SVIRun
    speedup: float | None
    steady_speedup: float | None
    compile_cost: float
    break_even_step: int | None
    projected_break_even_step: int | None
    loss_difference: float
    param_difference: float

    @property
    def agree(self) -> bool:
        return all(not d > RELATIVE_TOLERANCE for d in (self.loss_difference, self.param_difference))


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
    """

    target: str
    eager: MCMCRun
    compiled: MCMCRun
    speedup: float | None
    sampling_speedup: float | None
    compile_cost: float
    mean_difference_sd: float
    mean_difference_z: float

    @property
    def agree(self) -> bool:
        return not self.mean_difference_z > MCMC_Z_TOLERANCE


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
        return all(s.agree for s in self.svi) and all(m.agree for m in self.mcmc)

    @property
    def verdict(self) -> str:
        """The answer in one line."""
        from ._render import comparison_verdict

        return comparison_verdict(self)

    def _text(self) -> str:
        from ._render import comparison_text

        return comparison_text(self)

    def _html(self) -> str:
        from ._render import comparison_html

        return comparison_html(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from ._panel import comparison_bundle

        return comparison_bundle(self)  # the panel, with the same text and HTML beside it


# -- derivations ---------------------------------------------------------------
def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b > 0:
        return None
    return a / b


def relative_difference(a: Sequence[float], b: Sequence[float]) -> float:
    """Largest |a-b| / max(|a|, |b|) over paired values; nan when none."""
    worst = math.nan
    for x, y in zip(a, b, strict=False):
        scale = max(abs(x), abs(y))
        diff = 0.0 if x == y else abs(x - y) / scale if scale > 0 else math.inf
        if math.isnan(diff):
            diff = math.inf
        worst = diff if math.isnan(worst) else max(worst, diff)
    return worst


def break_even(eager: Sequence[float], compiled: Sequence[float]) -> int | None:
    """The first step n (1-based) with compiled ahead in total at every step from n on."""
    n = min(len(eager), len(compiled))
    if n == 0:
        return None
    total_e = total_c = 0.0
    ahead_since: int | None = None
    for i in range(n):
        total_e += eager[i]
        total_c += compiled[i]
        if total_c <= total_e:
            if ahead_since is None:
                ahead_since = i + 1
        else:
            ahead_since = None
    return ahead_since


def compare_svi(eager: SVIRun, compiled: SVIRun, param_difference: float = math.nan) -> SVIComparison:
    e_steps, c_steps = eager.step_seconds, compiled.step_seconds
    ahead = break_even(e_steps, c_steps)
    projected = None
    med_e, med_c = eager.median_step_seconds, compiled.median_step_seconds
    if ahead is None and med_e is not None and med_c is not None and med_c < med_e:
        n = min(len(e_steps), len(c_steps))
        behind = sum(c_steps[:n]) - sum(e_steps[:n])
        projected = n + math.ceil(behind / (med_e - med_c) - 1e-9)  # not a step more for rounding
    return SVIComparison(
        target=compiled.target, eager=eager, compiled=compiled,
        speedup=_ratio(eager.total_seconds, compiled.total_seconds),
        steady_speedup=_ratio(med_e, med_c),
        compile_cost=compiled.compile_seconds, break_even_step=ahead, projected_break_even_step=projected,
        loss_difference=relative_difference(eager.losses, compiled.losses),
        param_difference=param_difference,
    )


def compare_mcmc(eager: MCMCRun, compiled: MCMCRun) -> MCMCComparison:
    worst_sd, worst_z = 0.0, 0.0
    compiled_sites = {s.name: s for s in compiled.sites}
    for site in eager.sites:
        other = compiled_sites.get(site.name)
        if other is None:
            continue
        for m1, s1, m2, s2 in zip(site.mean, site.sd, other.mean, other.sd, strict=False):
            sd = max(s1, s2)
            diff = abs(m1 - m2)
            if sd > 0:
                worst_sd = max(worst_sd, diff / sd)
                se = math.sqrt(s1 ** 2 / max(site.ess, 1.0) + s2 ** 2 / max(other.ess, 1.0))
                worst_z = max(worst_z, diff / se if se > 0 else 0.0)
            elif diff > 0:
                worst_sd = worst_z = math.inf
    return MCMCComparison(
        target=compiled.target, eager=eager, compiled=compiled,
        speedup=_ratio(eager.total_seconds, compiled.total_seconds),
        sampling_speedup=_ratio(eager.sampling_seconds, compiled.sampling_seconds),
        compile_cost=max(0.0, compiled.setup_seconds - eager.setup_seconds),
        mean_difference_sd=worst_sd, mean_difference_z=worst_z,
    )


def _pair(eager: Sequence[Any], compiled: Sequence[Any]) -> list[tuple[Any, Any]]:
    """Pair runs by target name and order of appearance."""
    pairs = []
    seen: dict[str, int] = {}
    for c in compiled:
        k = seen.get(c.target, 0)
        seen[c.target] = k + 1
        matches = [e for e in eager if e.target == c.target]
        if k < len(matches):
            pairs.append((matches[k], c))
    return pairs


def compare_reports(eager: JitReport, compiled: JitReport, isolation: Isolation,
                    param_difference: float = math.nan, seed: int | None = None) -> Comparison:
    svi = tuple(compare_svi(e, c, param_difference) for e, c in _pair(eager.svi_runs, compiled.svi_runs))
    mcmc = tuple(compare_mcmc(e, c) for e, c in _pair(eager.mcmc_runs, compiled.mcmc_runs))
    return Comparison(eager=eager, compiled=compiled, svi=svi, mcmc=mcmc,
                      isolation=isolation, seed=seed)
