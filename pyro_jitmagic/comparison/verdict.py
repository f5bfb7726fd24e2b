"""Eager against compiled: the figures and the verdict ``--compare`` derives from two runs.

Everything here is a pure function of the two runs' records (step times, losses, samples), so it
is tested with made-up clocks. The outcomes and their tolerances are defined beside the records,
in :mod:`pyro_jitmagic.records.comparison`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any

from ..records.comparison import (
    MCMC_Z_TOLERANCE,
    RELATIVE_TOLERANCE,
    Comparison,
    Isolation,
    MCMCComparison,
    Outcome,
    SVIComparison,
)
from ..records.report import JitReport, LossRun, MCMCRun, SVIRun

#: Before the first step whose losses differ beyond :data:`RELATIVE_TOLERANCE`,
#: a difference this small means both runs were still in the same state: the
#: step that differs computed another loss from the same inputs (not float
#: rounding grown over many steps, which creeps up through this value first).
SAME_STATE = 1e-5

#: Within noise: the loss levels over the last part of the runs (the last
#: quarter, at least :data:`LEVEL_WINDOW` steps) differ beyond noise when their
#: means are further apart than how much the level moves within that part plus
#: this many standard errors of the means (from the step-to-step noise).
LEVEL_Z = 4.0
LEVEL_WINDOW = 10

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


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _noise(values: Sequence[float]) -> float:
    """Step-to-step noise of a loss: the sd of its differences over sqrt(2), which a trend barely moves."""
    diffs = [b - a for a, b in itertools.pairwise(values)]
    if len(diffs) < 2:
        return math.nan
    m = _mean(diffs)
    return math.sqrt(sum((d - m) ** 2 for d in diffs) / (len(diffs) - 1) / 2)


def _level(eager: Sequence[float], compiled: Sequence[float]) -> tuple[bool, str]:
    """Whether the loss levels at the end of the runs differ beyond noise, and the figures, in words."""
    n = min(len(eager), len(compiled))
    k = max(LEVEL_WINDOW, n // 4)
    if n < 2 * LEVEL_WINDOW:
        return False, f"too few steps ({n}) to tell a difference of the loss levels from noise"
    e, c = list(eager[n - k:n]), list(compiled[n - k:n])
    if not all(math.isfinite(x) for x in (*e, *c)):
        return True, f"the losses of the last {k} steps are not all finite"
    me, mc = _mean(e), _mean(c)
    half = k // 2
    drift = max(abs(_mean(x[half:]) - _mean(x[:half])) for x in (e, c))
    error = math.sqrt((_noise(e) ** 2 + _noise(c) ** 2) / k)
    allowed = drift + LEVEL_Z * error
    apart = abs(me - mc)
    figures = (f"over the last {k} steps the mean loss is {mc:.6g} compiled against {me:.6g} eager, "
               f"{apart:.3g} apart")
    if apart > allowed and apart > RELATIVE_TOLERANCE * max(abs(me), abs(mc)):
        return True, f"{figures}: more than noise explains ({allowed:.3g}: the level's movement plus " \
                     f"{LEVEL_Z:g} standard errors)"
    return False, f"{figures}, within noise ({allowed:.3g})"


def _judge_svi(eager: SVIRun | LossRun, compiled: SVIRun | LossRun, param_difference: float,
               param_spread: float) -> tuple[Outcome, str]:
    """The verdict on one SVI object's two runs, and why, in one line."""
    n = min(len(eager.steps), len(compiled.steps))
    if n == 0:
        return "agree", "no steps to compare"
    le, lc = eager.losses[:n], compiled.losses[:n]
    parted = compiled.diverges or eager.diverges
    if not parted and len(eager.steps) != len(compiled.steps):
        parted = f"the runs took {len(eager.steps)} and {len(compiled.steps)} steps"
    if not parted:
        diffs = [relative_difference([x], [y]) for x, y in zip(le, lc, strict=True)]
        first = next((i for i, d in enumerate(diffs) if not d <= RELATIVE_TOLERANCE), None)
        if first is None and not param_difference > RELATIVE_TOLERANCE:
            return "agree", (f"the same losses step by step over {n} steps (largest relative "
                             f"difference {_figure(max(diffs))}) and the same final params "
                             f"({_figure(param_difference)})")
        if first is not None and (first == 0 or diffs[first - 1] <= SAME_STATE):
            return "disagree", (f"step {first + 1} computed another loss from the same params and random "
                                f"draws: {lc[first]:.6g} compiled against {le[first]:.6g} eager")
        if first is not None:
            parted = (f"the losses were the same for {first} steps, then parted as float rounding grew "
                      "(or a discrete draw flipped)")
        else:
            parted = (f"the losses were the same step by step; the final params differ by "
                      f"{_figure(param_difference)} (relative), float rounding grown over {n} steps")
    beyond, level = _level(le, lc)
    params = ""
    if math.isfinite(param_spread):
        params = f"; the final params are up to {param_spread:.2g} times their spread apart"
    return ("disagree" if beyond else "agree within noise"), f"{parted}; {level}{params}"


def _figure(x: float) -> str:
    if x != x:
        return "n/a"
    return "identical" if x == 0 else f"{x:.2g}"


def compare_svi(eager: SVIRun | LossRun, compiled: SVIRun | LossRun, param_difference: float = math.nan,
                param_spread: float = math.nan) -> SVIComparison:
    e_steps, c_steps = eager.step_seconds, compiled.step_seconds
    ahead = break_even(e_steps, c_steps)
    projected = None
    med_e, med_c = eager.median_step_seconds, compiled.median_step_seconds
    if ahead is None and med_e is not None and med_c is not None and med_c < med_e:
        n = min(len(e_steps), len(c_steps))
        behind = sum(c_steps[:n]) - sum(e_steps[:n])
        projected = n + math.ceil(behind / (med_e - med_c) - 1e-9)  # not a step more for rounding
    outcome, reason = _judge_svi(eager, compiled, param_difference, param_spread)
    return SVIComparison(
        target=compiled.target, eager=eager, compiled=compiled,
        speedup=_ratio(eager.total_seconds, compiled.total_seconds),
        steady_speedup=_ratio(med_e, med_c),
        compile_cost=compiled.compile_seconds, break_even_step=ahead, projected_break_even_step=projected,
        loss_difference=relative_difference(eager.losses, compiled.losses),
        param_difference=param_difference, outcome=outcome, reason=reason, param_spread=param_spread,
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
    same = [(s.mean, s.sd) for s in eager.sites] == [(s.mean, s.sd) for s in compiled.sites]
    figures = (f"posterior means differ by up to {worst_z:.2g} Monte Carlo standard errors "
               f"({worst_sd:.2g} posterior sd)")
    outcome: Outcome
    if same:
        outcome, reason = "agree", "the same draws: posterior means and sds are equal"
    elif worst_z > MCMC_Z_TOLERANCE:
        outcome, reason = "disagree", f"{figures}: more than the {MCMC_Z_TOLERANCE:g} that noise explains"
    else:
        outcome, reason = "agree within noise", (
            "HMC/NUTS paths part at the first float difference between the compiled and eager "
            f"gradients, so the draws are compared as samples: {figures}, within {MCMC_Z_TOLERANCE:g}")
    return MCMCComparison(
        target=compiled.target, eager=eager, compiled=compiled,
        speedup=_ratio(eager.total_seconds, compiled.total_seconds),
        sampling_speedup=_ratio(eager.sampling_seconds, compiled.sampling_seconds),
        compile_cost=max(0.0, compiled.setup_seconds - eager.setup_seconds),
        mean_difference_sd=worst_sd, mean_difference_z=worst_z, outcome=outcome, reason=reason,
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


def disagreement_cause(compiled: JitReport, isolation: Isolation) -> str:
    """The likeliest cause of a disagreement that the runs themselves support, in words."""
    if compiled.risky_warnings:
        where = "; ".join(f"{w.where}: {w.source}" for w in compiled.risky_warnings)
        return f"a risky JIT warning explains it: a tensor became a Python value while tracing at {where}"
    state = [m for m in isolation.mutated if m.endswith("(a tensor)") or m.startswith("param ")]
    if state:
        return (f"likely cause: state outside the param store ({', '.join(state)} changed in place by "
                "the eager run, so the compiled run started from elsewhere)")
    return ("no risky read was seen while tracing: look in the model for a Python value taken from a "
            "tensor that torch does not warn about, or for tensors kept outside pyro.param that change "
            "between steps")


def _with_sentinel(x: SVIComparison, compiled: JitReport) -> SVIComparison:
    """Say so when the sentinel found a compiled step of this SVI wrong and ran it eager: the runs
    may then agree, but the compiled code would not have."""
    found = [g.split(": ", 1)[1] for g in compiled.guards
             if g.startswith(f"{x.target}: ") and "the sentinel found" in g]
    if not found:
        return x
    return dataclasses.replace(x, reason=f"{x.reason}; the sentinel found a compiled step wrong while the "
                                         f"compiled run ran, and ran it eager ({'; '.join(found)})")


def compare_reports(eager: JitReport, compiled: JitReport, isolation: Isolation,
                    param_difference: float = math.nan, seed: int | None = None,
                    param_spread: float = math.nan) -> Comparison:
    # a hand-written loop's loss calls are judged as SVI steps are
    svi = tuple(compare_svi(e, c, param_difference, param_spread)
                for e, c in [*_pair(eager.svi_runs, compiled.svi_runs),
                             *_pair(eager.loss_runs, compiled.loss_runs)])
    mcmc = tuple(compare_mcmc(e, c) for e, c in _pair(eager.mcmc_runs, compiled.mcmc_runs))
    svi = tuple(_with_sentinel(x, compiled) for x in svi)
    if any(x.outcome == "disagree" for x in svi) or any(x.outcome == "disagree" for x in mcmc):
        cause = disagreement_cause(compiled, isolation)
        svi = tuple(dataclasses.replace(x, reason=f"{x.reason}; {cause}") if x.outcome == "disagree" else x
                    for x in svi)
        mcmc = tuple(dataclasses.replace(x, reason=f"{x.reason}; {cause}") if x.outcome == "disagree" else x
                     for x in mcmc)
    return Comparison(eager=eager, compiled=compiled, svi=svi, mcmc=mcmc,
                      isolation=isolation, seed=seed)
