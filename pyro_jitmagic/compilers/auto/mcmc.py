"""The climb for HMC/NUTS: the potential runs eager, then on Pyro's JIT, then captured with its
gradient as one graph, then on inductor's kernels, each once it pays.

An MCMC run knows how many samples remain, so it looks ahead instead of guessing. Every few
evaluations it measures what one costs and asks :meth:`~...policy.auto.AutoPolicy.climb_potential`
whether to capture now (Pyro's JIT is decided below, by :class:`~..pyro.mcmc.PyroMCMCRoute`). The
capture runs on the cell's thread between two evaluations; the draws then follow eager's path up
to float rounding, as with ``--backend step``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...compat import capture as compat
from ...policy.auto import (
    AFTER_CELL_DELAY,
    MCMC_CHECK_EVERY,
    MCMC_MEASURE_SAMPLES,
    PRIOR_FIRST_LOAD,
    PRIOR_POTENTIAL_SPEEDUP,
    PRIOR_STACK_LOAD,
)
from ...run.session import WholeStepEntry
from ..pyro.mcmc import PyroMCMCRoute
from ..step.mcmc import (
    POTENTIAL_KEY,
    inductor_said,
    inductor_started,
    install_potential,
    load_stack,
    potential_compiled,
    reused_said,
    sentinel_said,
    trajectory_said,
    trajectory_started,
)

if TYPE_CHECKING:
    from ...patch import PatchSet
    from ...run.context import RunContext
    from ...run.mcmc_clock import MCMCClock


@dataclass
class Pace:
    """Where the potential's current tier began to be measured: its sample and evaluation counts
    then, the tier, and what an eager evaluation cost (the unit of a capture's cost)."""

    sample: int
    evals: int
    tier: str = "eager"
    eager_per_eval: float | None = None
    settling: bool = False

    def measured(self, tier: str, sample: int, evals: int) -> bool:
        """At a look, on ``tier`` with these counts: whether its pace is being measured. A new tier
        is measured from the look after the one that sees it: a trace's first calls profile and
        optimise it, and a climb bet on them once took a short run to inductor (docs/benchmarks.md)."""
        if tier != self.tier or self.settling:
            self.sample, self.evals, self.settling = sample, evals, tier != self.tier
            self.tier = tier
            return False
        return True


class TieredMCMCRoute(PyroMCMCRoute):
    """An ``MCMC.run`` under ``--auto`` whose potential may climb to the whole step and inductor."""

    def __init__(self, ctx: RunContext, mcmc: Any, target: str, can_trace: bool, adaptive: bool,
                 top: str = "inductor") -> None:
        super().__init__(ctx, mcmc, target, can_trace, adaptive)
        self.top = top
        self.key = id(mcmc)  # what the run's record of switches knows it by
        if self.auto:
            self.after = f"{self.before}(jit_compile=True, then the whole potential, once each pays: --auto)"
        self.climbed = False
        self.compiled_potential: Any = None
        self.trajectory: Any = None
        self.kept: Any = None  # the graphs kept for a later run (wholestep.reuse.Kept)
        self._patches: PatchSet | None = None
        self._clock: MCMCClock | None = None
        self._why = ""
        self._eager_per_eval = 0.0
        self._left_seconds = 0.0  # the evaluations left when it climbed, expected on the whole step
        self._codegen_after: Any = None  # a potential whose cold codegen waits for the run's end
        # what capturing was expected to net, where only the compiler stack's first load held it back
        self._forgone = 0.0
        self._forgone_why = ""

    def prepare(self, patches: PatchSet, clock: MCMCClock) -> None:
        super().prepare(patches, clock)
        if not self.auto or clock.wrap_potential is None:
            return
        self._patches, self._clock = patches, clock
        below = clock.wrap_potential
        clock.wrap_potential = lambda potential: self._watch(below(potential), potential)

    def _watch(self, wrapped: Any, eager: Any) -> Any:
        """The run's potential: Pyro's --auto below it, a look ahead to the whole step every few calls."""
        clock = self._clock
        assert clock is not None and self.ctx.auto is not None
        policy, route = self.ctx.auto, self
        tallies = [t for t in self.ctx.recorder.tallies.values() if t.book.kind == "potential"]
        if wrapped is eager or not tallies:  # a potential Pyro's --auto does not decide for
            return wrapped
        book = tallies[-1].book
        first = len(clock.sample_seconds)
        pace = Pace(first, clock.potential_evals)
        calls = 0

        def potential_fn(params: Any) -> Any:
            nonlocal calls
            __tracebackhide__ = True
            calls += 1
            if route.climbed:  # (an energy-only call: the gradient calls go to the graph)
                return eager(params)
            if calls % MCMC_CHECK_EVERY == 0:
                tier = "pyro" if book.state == "compiled" else "eager"
                if (pace.measured(tier, len(clock.sample_seconds), clock.potential_evals)
                        and route._should_climb(policy, book, pace, first)):
                    route._climb(eager, params)
                    return eager(params)
            return wrapped(params)

        return potential_fn

    def _should_climb(self, policy: Any, book: Any, pace: Pace, first: int) -> bool:
        clock = self._clock
        assert clock is not None
        samples = clock.sample_seconds[pace.sample:]
        evals = clock.potential_evals - pace.evals
        if len(samples) < MCMC_MEASURE_SAMPLES or evals <= 0:
            return False
        per_eval = sum(samples) / evals
        if pace.tier == "eager" and pace.eager_per_eval is None:
            pace.eager_per_eval = per_eval  # what an eager evaluation costs, the unit of the capture's cost
        eager_per_eval = pace.eager_per_eval if pace.eager_per_eval is not None else per_eval * 2
        done = len(clock.sample_seconds) - first
        remaining = clock.potential_evals / max(done, 1) * max(clock.samples_total - done, 0)
        pyro_net = 0.0
        if pace.tier == "eager":  # what compiling on Pyro's JIT would net instead
            speedup, _ = policy.speedup("potential")
            eager = book.eager_step() or per_eval
            pyro_net = remaining * per_eval * (1 - 1 / speedup) - eager * policy.compile_steps("potential")[0]
        climb, why, forgone = policy.climb_potential(pace.tier, per_eval, eager_per_eval, remaining, pyro_net,
                                                     stack_loaded=compat.compiler_stack_loaded())
        if forgone > self._forgone:  # (the run's first such look expects the most)
            self._forgone, self._forgone_why = forgone, why
        if climb:
            self._why = f"captured after {done} samples: {why}"
            self._eager_per_eval = eager_per_eval
            self._left_seconds = remaining * per_eval / PRIOR_POTENTIAL_SPEEDUP[pace.tier]
        return climb

    def _climb(self, eager: Any, params: dict[str, Any]) -> None:
        """Capture the potential and its gradient now, from the current latent values, and install it."""
        from ...wholestep import CannotCompile

        assert self._patches is not None and self._clock is not None
        recorder = self.ctx.recorder
        self.climbed = True  # (tried once: a potential the capture cannot write stays below)
        self._forgone = 0.0
        load_stack(self.ctx, self.target)  # (once a process, apart from the capture's cost)
        start = recorder.clock()
        try:
            values = {k: v.detach() for k, v in params.items()}
            compiled, self.kept = potential_compiled(self.ctx, eager, values)
        except CannotCompile as exc:
            self.climbed = False
            self.auto = False
            recorder.note(f"{self.target}: --auto keeps the potential below the whole step: {exc.reason}")
            return
        seconds = recorder.clock() - start
        recorder.record_compile(POTENTIAL_KEY, seconds, compiled.capture_seconds,
                                tuple(str(tuple(v.shape)) for v in params.values()))
        self.ctx.session.whole_steps.of(self.kernel)[POTENTIAL_KEY] = WholeStepEntry(compiled, POTENTIAL_KEY,
                                                                                  seconds)
        assert self.ctx.auto is not None
        if not compiled.reused:  # (what a capture costs: a reused graph cost none)
            self.ctx.auto.learn_potential(compiled.capture_seconds, self._eager_per_eval)
        install_potential(self._patches, self._clock, self.kernel, compiled)
        self.after = f"{self.before}, potential and gradient compiled whole (step) once it paid (--auto)"
        recorder.switch(self.key, self.target, self)
        how = ("an earlier run's graph, nothing captured" if compiled.reused
               else f"captured in {seconds:.2f} s")
        recorder.note(f"{self.target}: the potential and its gradient {self._why}; {how}")
        self.compiled_potential = compiled
        recorder.watch_sentinel(compiled.sentinel)
        if self.top == "inductor":
            self.trajectory = trajectory_started(self.ctx, self.target, self.kernel, compiled, self._clock,
                                                 codegen=False, kept=self.kept)
            running = self.trajectory or compiled
            if running.backend != "inductor":
                self._maybe_codegen(running, compiled.capture_seconds)
            reused_said(self.ctx, self.target, compiled, self.trajectory, recorder.clock() - start)

    def _maybe_codegen(self, compiled: Any, capture_seconds: float) -> None:
        """Start inductor's codegen of ``compiled`` (the trajectory, or the potential) in the
        background while evaluations remain (a cold one in a worker process: see
        AutoPolicy.start_codegen); ``capture_seconds``, the potential's capture, sizes it."""
        from ...wholestep.memory import graph_digest

        assert self.ctx.auto is not None and self._clock is not None
        tiers, clock = self.ctx.auto, self._clock
        memory = tiers.memory
        warm = memory is not None and memory.inductor_holds(
            graph_digest(compiled.captured.graph, compiled.captured.example_inputs))
        if len(clock.sample_seconds) >= clock.samples_total:
            return  # nothing left to run
        expected = tiers.codegen_seconds(capture_seconds)
        left = f"the evaluations left take about {self._left_seconds:.1f} s on the step backend"
        if not warm and not tiers.potential_codegen_now(capture_seconds, self._left_seconds):
            # its kernels could not serve this run: hand the graph over when the run ends
            self._codegen_after = compiled
            self.ctx.recorder.note(
                f"{self.target}: inductor builds the {compiled.what}'s kernels in a worker process when the "
                f"run ends, for the next run: {left}, less than its expected {expected:.0f} s")
            return
        if warm and not compat.inductor_loaded() and not tiers.first_load_now(self._left_seconds):
            # loading inductor would hold the interpreter longer than the rest of the run takes
            self._codegen_after = compiled
            self.ctx.recorder.note(
                f"{self.target}: inductor loads the {compiled.what}'s kernels from its disk cache when the "
                f"run ends, for the next run: {left}, less than inductor's first load in this process "
                f"(about {PRIOR_FIRST_LOAD:.0f} s)")
            return
        inductor_started(self.ctx, self.target, compiled, warm=warm, expected=expected)

    def finish(self, clock: MCMCClock, compile_seconds: float) -> None:
        super().finish(clock, compile_seconds)
        if self._forgone > 0 and not self.climbed and self.ctx.auto is not None:
            self.ctx.auto.pay_stack_rent(self._forgone)
            self.ctx.recorder.note(
                f"{self.target}: --auto kept the potential below the whole step: {self._forgone_why}, and "
                f"capturing first loads torch's compiler stack, about {PRIOR_STACK_LOAD:.0f} s once a "
                "process; a later run captures once the runs that stayed have forgone that much")
        if self.kept is not None:
            self.kept.ran(self.compiled_potential, self.trajectory)
        after, self._codegen_after = self._codegen_after, None
        if after is not None and self.top == "inductor":
            if isinstance(clock.ended_by, KeyboardInterrupt):  # Ctrl-C means stop: start nothing new
                self.ctx.recorder.note(f"{self.target}: the run was interrupted: inductor's codegen of the "
                                       "potential, put off until it ended, was not started")
            else:
                after.build_inductor(delay=AFTER_CELL_DELAY)
        entry = self.ctx.session.whole_steps.of(self.kernel).get(POTENTIAL_KEY)
        if self.climbed and entry is not None and entry.hits:
            entry.last_hit = time.time()
        sentinel_said(self.ctx, self.target, self.compiled_potential)
        inductor_said(self.ctx, self.target, self.trajectory or self.compiled_potential)
        trajectory_said(self.ctx, self.target, self.trajectory)
