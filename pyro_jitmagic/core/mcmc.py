"""MCMC under ``%%pyrojit``: whether a run can be compiled, and where its time went.

Pyro compiles an HMC/NUTS potential when the kernel has ``jit_compile=True``
and builds it afresh in each run's ``setup`` (pyro/infer/mcmc/util.py).
:class:`MCMCClock` times a run through its kernel's ``setup`` and ``sample``,
counts potential evaluations, and summarises the samples (means, sds, ESS,
r-hat) for comparing runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from ..records.report import MCMCRun, PosteriorSite
from . import compat
from .executor import optimize_setter
from .patch import PatchSet


def potential_maker(potential: Any) -> Any:
    """The Pyro object behind a kernel's ``potential_fn`` that builds it and holds its compiled
    potential (see :func:`.compat.potential_maker`). None for anything else."""
    if isinstance(potential, CellPotential):
        return potential.maker
    return compat.potential_maker(potential)


class CellPotential:
    """A potential that ``initialize_model`` built inside a ``%%pyrojit`` cell.

    It runs compiled while a compiling run is active (``is_compiling``) and eager
    otherwise, so that code outside the magic behaves as written, as every other
    object does.
    """

    def __init__(self, maker: Any, eager: Callable[..., Any], compiled: Callable[..., Any],
                 is_compiling: Callable[[], bool]) -> None:
        self.maker = maker
        self.eager = eager
        self.compiled = compiled
        self._is_compiling = is_compiling

    def __call__(self, params: Any) -> Any:
        __tracebackhide__ = True
        return (self.compiled if self._is_compiling() else self.eager)(params)


def potential_builder(original: Callable[..., Any], inside_mcmc: Callable[[], bool],
                      is_compiling: Callable[[], bool]) -> Callable[..., Any]:
    """A stand-in for Pyro's ``get_potential_fn`` (pyro/infer/mcmc/util.py): a potential built
    outside an MCMC run (by ``initialize_model`` in the cell) comes back as a
    :class:`CellPotential`; those built by a kernel's setup inside ``MCMC.run`` are left to the
    run's own decision."""

    def get_potential_fn(maker: Any, jit_compile: bool = False, skip_jit_warnings: bool = True,
                         jit_options: Any = None) -> Any:
        __tracebackhide__ = True
        if inside_mcmc() or jit_compile or not is_compiling():
            return original(maker, jit_compile, skip_jit_warnings, jit_options)
        # warnings are captured by the run, not skipped, so a risky one is still named
        compiled = original(maker, True, False, jit_options)
        return CellPotential(maker, original(maker, False, skip_jit_warnings, jit_options), compiled,
                             is_compiling)

    return get_potential_fn


def mcmc_decision(mcmc: Any, can_trace: bool) -> tuple[bool, str]:
    """Whether an MCMC run can be compiled, and why not (or why it already is)."""
    from pyro.infer.mcmc import HMC

    kernel = mcmc.kernel
    if not isinstance(kernel, HMC):
        return False, f"{type(kernel).__name__} has no compiled mode in Pyro (only HMC and NUTS do)"
    if kernel.model is None:
        return _potential_decision(kernel.potential_fn)
    if compat.runs_chains_in_workers(mcmc):
        # (with fewer CPUs than chains Pyro draws them in this process instead)
        return False, "chains run in worker processes, where Pyro does not compile the potential"
    if not can_trace:
        return False, "torch.jit.trace is not available in this torch"
    if compat.jit_compile(kernel):
        return True, "already compiled as written"
    return True, ""



def _potential_decision(potential: Any) -> tuple[bool, str]:
    """For a kernel given a ``potential_fn``: is it compiled, and why (not)."""
    if isinstance(potential, CellPotential):
        return True, ""
    maker = potential_maker(potential)
    if maker is None:
        return False, ("the kernel was given a potential_fn of your own, which Pyro's JIT does not "
                       "compile (it compiles the potentials it builds from a model)")
    if compat.is_compiled_potential(potential):
        return True, "already compiled as written"
    return False, ("its potential_fn came from initialize_model without jit_compile=True in an earlier "
                   "cell: call initialize_model inside the %%pyrojit cell, or pass it jit_compile=True")


class MCMCClock:
    """Times one MCMC run through its kernel's ``setup`` and ``sample``."""

    def __init__(self, on_sample: Callable[[], None], num_samples: int = 0) -> None:
        self.on_sample = on_sample
        self.num_samples = num_samples
        self.setup_seconds = 0.0
        self.sample_seconds: list[float] = []
        self.warmup_steps = 0
        self.done = False
        self.potential_evals = 0
        self.sites: tuple[PosteriorSite, ...] = ()
        self.samples_total = 0
        # with --executor adaptive, once the potential is compiled: its executor (an _executor.Tier)
        self.tier: Any = None
        self._maker: Any = None  # what built the potential, and holds its compiled form

    def instrument(self, patches: PatchSet, kernel: Any,
                   wrap_potential: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None) -> None:
        """Time ``kernel``'s setup and samples and count its potential evaluations, through
        ``patches``; ``wrap_potential`` (--auto) wraps each potential the setup builds."""
        setup, sample = kernel.setup, kernel.sample

        def timed_setup(warmup_steps: int, *args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            self.warmup_steps = warmup_steps
            self.samples_total = warmup_steps + self.num_samples
            start = time.perf_counter()
            try:
                return setup(warmup_steps, *args, **kwargs)
            finally:
                self.setup_seconds += time.perf_counter() - start
                potential = getattr(kernel, "potential_fn", None)
                self._maker = potential_maker(potential)
                if potential is not None:
                    if wrap_potential is not None:
                        potential = wrap_potential(potential)
                    patches.set(kernel, "potential_fn", counted(potential))

        def counted(potential: Callable[..., Any]) -> Callable[..., Any]:
            def potential_fn(*args: Any, **kwargs: Any) -> Any:
                self.potential_evals += 1
                return potential(*args, **kwargs)
            return potential_fn

        def timed_sample(params: Any) -> Any:
            __tracebackhide__ = True
            tier, evals = self.tier, self.potential_evals
            if tier is not None:
                optimize_setter()(tier.optimize)
            start = time.perf_counter()
            result = sample(params)
            seconds = time.perf_counter() - start
            self.sample_seconds.append(seconds)
            if tier is not None and self.potential_evals > evals:
                self._tier_sample(tier, seconds, self.potential_evals - evals)
            self.on_sample()
            return result

        cleanup = kernel.cleanup

        def timed_cleanup() -> Any:
            self.done = True
            return cleanup()

        patches.set(kernel, "setup", timed_setup)
        patches.set(kernel, "sample", timed_sample)
        patches.set(kernel, "cleanup", timed_cleanup)

    def _tier_sample(self, tier: Any, seconds: float, evals: int) -> None:
        done = len(self.sample_seconds)
        recent = self.sample_seconds[-20:]
        remaining = max(self.samples_total - done, 0) * sum(recent) / len(recent)
        if tier.after_step(seconds, done, remaining=remaining, weight=evals) and tier.drop:
            tier.drop = False  # its optimised trace was slower: trace it again, no-opt
            if self._maker is not None:
                compat.drop_compiled_potential(self._maker)

    def summarise(self, mcmc: Any) -> None:
        """Posterior means, sds, ESS and r-hat of every site, for comparing runs."""
        from pyro.ops.stats import effective_sample_size, split_gelman_rubin

        sites = []
        for name, samples in mcmc.get_samples(group_by_chain=True).items():
            flat = samples.detach().reshape(samples.shape[0], samples.shape[1], -1).double()
            pooled = flat.reshape(-1, flat.shape[-1])
            ess = effective_sample_size(flat, chain_dim=0, sample_dim=1)
            r_hat = split_gelman_rubin(flat, chain_dim=0, sample_dim=1) if flat.shape[1] >= 4 else None
            sites.append(PosteriorSite(
                name=name, mean=tuple(pooled.mean(0).tolist()), sd=tuple(pooled.std(0).tolist()),
                ess=float(ess.min()) if ess.numel() else math.nan,
                r_hat=float(r_hat.max()) if r_hat is not None and r_hat.numel() else math.nan))
        self.sites = tuple(sites)

    def record(self, target: str, kernel: str, compiled: bool, compile_seconds: float) -> MCMCRun:
        warm = self.sample_seconds[: self.warmup_steps]
        draws = self.sample_seconds[self.warmup_steps:]
        return MCMCRun(target=target, kernel=kernel, compiled=compiled,
                       warmup_steps=len(warm), num_samples=len(draws),
                       setup_seconds=self.setup_seconds, warmup_seconds=sum(warm),
                       sampling_seconds=sum(draws), compile_seconds=compile_seconds,
                       completed=self.done, potential_evals=self.potential_evals,
                       sites=self.sites)
