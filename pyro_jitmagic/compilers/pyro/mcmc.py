"""HMC/NUTS under Pyro's JIT: whether a run compiles its potential, and how.

Pyro compiles a potential when the kernel has ``jit_compile=True``, and builds it afresh in each
run's ``setup``; so :class:`PyroMCMCRoute` sets the flag for one ``MCMC.run``. In the climb the
potential runs eager until the samples still to come would repay compiling it
(:func:`potential_until_it_pays`). A potential built in the cell by ``initialize_model`` runs
compiled inside a compiling run and as written outside it (:class:`CellPotential`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...compat import jit as compat
from ...policy.auto import MCMC_CHECK_EVERY, AutoPolicy
from ...policy.books import Tally
from ...run.route import MCMCRoute
from .executor import ExecutorTrial, optimize_setter

if TYPE_CHECKING:
    from ...patch import PatchSet
    from ...run.context import RunContext
    from ...run.mcmc_clock import MCMCClock


def potential_maker(potential: Any) -> Any:
    """The Pyro object behind a kernel's ``potential_fn`` that builds it and holds its compiled
    potential (see :func:`...compat.jit.potential_maker`). None for anything else."""
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


def potential_until_it_pays(policy: AutoPolicy, kernel: Any, clock: Any, target: str,
                            tallies: dict[tuple[int, Any], Tally]) -> Callable[[Callable[..., Any]], Any]:
    """For one MCMC run: wrap each chain's eager potential (built by ``kernel.setup``) so that it
    runs eager until :meth:`~...policy.auto.AutoPolicy.decide_potential` says compiling pays, then compiled.

    ``clock`` (an :class:`~...run.mcmc.MCMCClock`) counts the samples; each chain's :class:`Tally` is put in
    ``tallies`` for the run's report.
    """

    def wrap(potential: Callable[..., Any]) -> Callable[..., Any]:
        maker = potential_maker(potential)
        if maker is None:
            return potential
        skip_warnings, jit_options = compat.jit_settings(kernel)
        compiled_fn = maker.get_potential_fn(jit_compile=True, skip_jit_warnings=skip_warnings,
                                             jit_options=jit_options)
        book = policy.book(maker, "potential", "potential", target, "potential energy")
        book.why = book.why or "ran eager first, to measure its evaluations"  # (until the first look)
        tally = tallies[(id(maker), "potential")] = Tally(book, compiled_before=False)
        first_sample, total = len(clock.sample_seconds), clock.samples_total
        evaluations = 0
        perf_counter = time.perf_counter

        def potential_fn(params: Any) -> Any:
            nonlocal evaluations
            __tracebackhide__ = True
            evaluations += 1
            mode: str = book.state
            if mode == "eager" and evaluations % MCMC_CHECK_EVERY == 0 and policy.decide_potential(
                    book, len(clock.sample_seconds) - first_sample, total, evaluations):
                book.state, mode = "compiled", "compile"
            start = perf_counter()
            result = (potential if mode == "eager" else compiled_fn)(params)
            tally.add(mode, perf_counter() - start, evaluations)
            return result

        return potential_fn

    return wrap


class PyroMCMCRoute(MCMCRoute):
    """An ``MCMC.run`` under Pyro's JIT: ``jit_compile`` for the run, --auto and the executor trial."""

    def __init__(self, ctx: RunContext, mcmc: Any, target: str, can_trace: bool, adaptive: bool) -> None:
        kernel = mcmc.kernel
        kernel_name = type(kernel).__name__
        compiled, reason = mcmc_decision(mcmc, can_trace)
        # --auto decides for kernels written with jit_compile=True too: the cell asked it to
        written = reason == "already compiled as written"
        self.auto = compiled and (not reason or written) and ctx.auto is not None and kernel.model is not None
        after = f"{kernel_name}(jit_compile=True)" if compiled and not reason else kernel_name
        if compiled and not reason and kernel.model is None:
            after = f"{kernel_name}(potential_fn compiled, from initialize_model in a %%pyrojit cell)"
        if self.auto:
            after = f"{kernel_name}(jit_compile=True once it pays, --auto)"
            reason = "written with jit_compile=True; --auto decides when" if written else ""
        super().__init__(before=kernel_name, after=after, compiled=compiled, reason=reason,
                         runner=kernel if compiled else None)
        self.ctx, self.kernel, self.target, self.adaptive = ctx, kernel, target, adaptive and compiled
        self.trial: ExecutorTrial | None = None  # once the potential is compiled, with --executor adaptive
        self._clock: MCMCClock | None = None

    def prepare(self, patches: PatchSet, clock: MCMCClock) -> None:
        kernel, self._clock = self.kernel, clock
        if self.adaptive:  # its trace starts no-opt, whatever the last key ran under
            optimize_setter()(False)
        if self.compiled and not compat.jit_compile(kernel) and not self.auto:
            patches.set(kernel, compat.JIT_COMPILE_ATTR, True)
        elif self.auto and compat.jit_compile(kernel):  # its setup would trace at once: eager until it pays
            patches.set(kernel, compat.JIT_COMPILE_ATTR, False)
        if self.auto:
            assert self.ctx.auto is not None
            clock.wrap_potential = potential_until_it_pays(self.ctx.auto, kernel, clock, self.target,
                                                           self.ctx.recorder.tallies)
        if self.adaptive:
            clock.before_sample, clock.after_sample = self._before_sample, self._after_sample

    def potential_traced(self, seconds: float) -> None:
        """Its potential was just traced, in ``seconds``: with the adaptive executor, it gets a tier."""
        if self.adaptive and self.trial is None:
            self.trial = ExecutorTrial(self.target, "potential energy", seconds, unit="sample",
                                       per="per evaluation")

    def _before_sample(self) -> None:
        if self.trial is not None:
            optimize_setter()(self.trial.optimize)

    def _after_sample(self, seconds: float, evals: int) -> None:
        tier, clock = self.trial, self._clock
        if tier is None or clock is None:
            return
        done = len(clock.sample_seconds)
        recent = clock.sample_seconds[-20:]
        remaining = max(clock.samples_total - done, 0) * sum(recent) / len(recent)
        if tier.after_step(seconds, done, remaining=remaining, weight=evals) and tier.drop:
            tier.drop = False  # its optimised trace was slower: trace it again, no-opt
            maker = potential_maker(clock.potential)
            if maker is not None:
                compat.drop_compiled_potential(maker)

    def finish(self, clock: MCMCClock, compile_seconds: float) -> None:
        if self.trial is not None and self.trial.state != "no-opt":
            self.ctx.recorder.executor_trials[id(self.trial)] = self.trial
        maker = potential_maker(self.kernel.potential_fn)
        if compat.compiled_potential(maker) is not None:
            # one entry per potential; every evaluation after setup is a hit
            self.ctx.session.cache.hit(maker, "potential", compile_seconds=compile_seconds or None,
                                       calls=clock.potential_evals)
