"""The clock of one MCMC run: its kernel's setup and each sample timed, its potential's evaluations
counted. A compiler's MCMC route sets the clock's hooks (a wrapper for each potential the setup
builds, and calls around each sample) in :meth:`~.route.MCMCRoute.prepare`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from ..patch import PatchSet
from ..records.report import MCMCRun, PosteriorSite


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
        #: what ended the run early (None: it ran to the end)
        self.ended_by: BaseException | None = None
        # the potential the kernel's setup built, before it was wrapped
        self.potential: Any = None
        # set by the compiler's route before the run: wraps each potential the setup builds
        # (--auto), and runs around each sample (and is told its time and evaluations)
        self.wrap_potential: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None
        self.before_sample: Callable[[], None] | None = None
        self.after_sample: Callable[[float, int], None] | None = None
        #: what makes each sample instead of the kernel's own ``sample`` (a compiled trajectory)
        self.inner_sample: Callable[[Any], Any] | None = None

    def instrument(self, patches: PatchSet, kernel: Any) -> None:
        """Time ``kernel``'s setup and samples and count its potential evaluations, through
        ``patches``; :attr:`wrap_potential` wraps each potential the setup builds."""
        setup, sample = kernel.setup, kernel.sample
        wrap_potential = self.wrap_potential

        def timed_setup(warmup_steps: int, *args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            self.warmup_steps = warmup_steps
            self.samples_total = warmup_steps + self.num_samples
            start = time.perf_counter()
            try:
                return setup(warmup_steps, *args, **kwargs)
            finally:
                self.setup_seconds += time.perf_counter() - start
                potential = self.potential = getattr(kernel, "potential_fn", None)
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
            before, after, evals = self.before_sample, self.after_sample, self.potential_evals
            if before is not None:
                before()
            start = time.perf_counter()
            result = (self.inner_sample or sample)(params)
            seconds = time.perf_counter() - start
            self.sample_seconds.append(seconds)
            if after is not None and self.potential_evals > evals:
                after(seconds, self.potential_evals - evals)
            self.on_sample()
            return result

        cleanup = kernel.cleanup

        def timed_cleanup() -> Any:
            self.done = True
            return cleanup()

        patches.set(kernel, "setup", timed_setup)
        patches.set(kernel, "sample", timed_sample)
        patches.set(kernel, "cleanup", timed_cleanup)

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
