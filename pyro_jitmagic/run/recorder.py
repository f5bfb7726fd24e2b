"""What one run records for its report, whichever compiler ran it.

Each SVI, each ELBO loss the cell calls itself and each MCMC run is planned once (:class:`StepPlan`,
:class:`MCMCPlan`) and keeps every step's time and loss; compilers add their traces, notes and the
climb's books. The :class:`Recorder` keeps all of it, feeds the progress line, and makes the
:class:`~pyro_jitmagic.records.report.JitReport`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..options import RunOptions
from ..policy.auto import AutoPolicy
from ..policy.books import Tally, TierTally
from ..records.report import (
    CapturedWarning,
    Compilation,
    ExecutorChoice,
    JitReport,
    LossRun,
    MCMCRun,
    Progress,
    Step,
    SVIRun,
    Switch,
    WarmupAction,
)

if TYPE_CHECKING:
    from .mcmc_clock import MCMCClock
    from .route import Ladder, MCMCRoute

# Live progress is offered at most this often (seconds), over the median of
# the last PROGRESS_WINDOW steps: a few updates a second cost nothing measurable.
PROGRESS_INTERVAL = 0.25
PROGRESS_WINDOW = 100


@dataclass
class StepPlan:
    """One SVI object, or one ELBO loss called directly for one (model, guide), in one run.

    ``head`` is what every call passes first (``(svi,)``, or ``(model, guide)``);
    ``holds`` the objects the plan is for, to tell a new object at a reused address.
    """

    target: str
    route: Ladder
    head: tuple[Any, ...]
    holds: tuple[Any, ...]
    model: str
    guide: str
    method: str = ""  # the ELBO method called directly; "" for an SVI
    key: int = 0  # its switch's key in the report: the SVI's id, or the plan's own for a loss
    # (seconds, loss, compile seconds) per step: tuples on the hot path, Step records in the report
    raw: list[tuple[float, float, float]] = field(default_factory=list)
    compile_seconds: float = 0.0  # of the step in progress
    # the short way of the route's settled steps, while it offers one (steps.express_step)
    express: Callable[[tuple[Any, ...], dict[str, Any]], Any] | None = None
    # why this run's random draws part from an eager run's ("" while they do not)
    diverges: str = ""

    def steps(self) -> tuple[Step, ...]:
        compiled = self.route.compiled
        return tuple(Step(seconds, loss if isinstance(loss, float) else math.nan, compiled, compiling)
                     for seconds, loss, compiling in self.raw)

    def record(self) -> SVIRun | LossRun:
        if self.method:
            return LossRun(target=self.target, method=self.method, model=self.model, guide=self.guide,
                           elbo=self.route.after, calls=self.steps(), diverges=self.diverges)
        return SVIRun(target=self.target, model=self.model, guide=self.guide, elbo=self.route.after,
                      steps=self.steps(), diverges=self.diverges)


@dataclass
class MCMCPlan:
    """One ``MCMC.run`` in one run."""

    target: str
    clock: MCMCClock
    route: MCMCRoute
    compile_seconds: float = 0.0


class Recorder:
    """Everything a run's report is made from, and the live progress it offers."""

    def __init__(self, options: RunOptions, auto: AutoPolicy | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 on_step: Callable[[], None] | None = None) -> None:
        self.options = options
        self.auto = auto
        self.clock: Callable[[], float] = time.perf_counter
        # a step returns once its kernels are queued: on a GPU, wait for them before reading the clock
        self.cuda_initialized: Callable[[], bool] = lambda: False
        self.synchronize: Callable[[], None] = lambda: None
        self.svi_plans: dict[int, StepPlan] = {}
        # direct calls of an ELBO's loss, per (ELBO, method, model, guide)
        self.loss_plans: dict[tuple[int, str, int, int], StepPlan] = {}
        self.current: StepPlan | MCMCPlan | None = None  # the step or MCMC run in progress
        self.switches: dict[int, Switch] = {}
        self.compilations: list[Compilation] = []
        self.warmups: list[WarmupAction] = []
        self.notes: list[str] = []
        self.mcmc_runs: list[MCMCRun] = []
        self.mcmc_routes: list[MCMCRoute] = []
        self.tallies: dict[tuple[int, Any], Tally] = {}  # --auto: what each key did in this run
        self.tier_tallies: dict[tuple[int, Any], TierTally] = {}  # and each SVI signature's tiers
        # keys whose executor changed under --executor adaptive (ExecutorTrial: owner, key, state, why)
        self.executor_trials: dict[int, Any] = {}
        self.past_cap: dict[int, tuple[str, Any]] = {}  # functions that met --max-entries
        self.advice: str | None = None
        # what the guards saw change and what ran eager because of it, one line each
        self.guard_events: list[str] = []
        self.sentinel_checks = 0  # compiled calls checked against eager's loss (Pyro's tier)
        self.sentinel_findings = 0  # of which disagreed
        self.sentinel_seconds = 0.0  # what the checks of Pyro's tier cost
        # whole steps' and potentials' sentinels: (it, its checks and seconds before this run)
        self._sentinels: dict[int, tuple[Any, int, float]] = {}
        self.start = 0.0
        self.end: float | None = None
        self._on_progress = on_progress
        self._on_step = on_step  # after every SVI step and direct loss call: --compare follows the params
        self._last_progress = 0.0
        self._steps_done = 0
        self._samples_done = 0

    def begin(self) -> None:
        """The run starts now: its clock, and the progress line's."""
        self.start = self._last_progress = self.clock()

    # -- what compilers and the interception report -----------------------------
    def note(self, text: str) -> None:
        """Say ``text`` in the report's notes, once."""
        if text not in self.notes:
            self.notes.append(text)

    def guard(self, owner: str, text: str) -> None:
        """Say what a guard or the sentinel saw, and what it did about it, once."""
        line = f"{owner}: {text}"
        if line not in self.guard_events:
            self.guard_events.append(line)

    def watch_sentinel(self, sentinel: Any) -> None:
        """Count the checks ``sentinel`` makes from now on in this run's report."""
        if id(sentinel) not in self._sentinels:
            self._sentinels[id(sentinel)] = (sentinel, sentinel.checks, sentinel.seconds)

    def checks(self) -> tuple[int, float]:
        """Compiled calls checked against eager's loss in this run, and what checking them cost."""
        watched = self._sentinels.values()
        return (self.sentinel_checks + sum(s.checks - checks for s, checks, _ in watched),
                self.sentinel_seconds + sum(s.seconds - spent for s, _, spent in watched))

    def switch(self, key: int, target: str, route: Ladder | MCMCRoute) -> None:
        """What was done with an SVI, a loss or an MCMC run (again, when its route changed)."""
        self.switches[key] = Switch(target, route.before, route.after, route.compiled, route.reason)

    def restate(self) -> None:
        """The route of the step in progress changed how it runs: its switch line again."""
        plan = self.current
        if isinstance(plan, StepPlan):
            self.switch(plan.key, plan.target, plan.route)

    def record_compile(self, key: str, seconds: float, trace_seconds: float, shapes: tuple[str, ...],
                       outside: str = "") -> None:
        """A trace was built, for the step or MCMC run in progress (else ``outside``)."""
        owner = self.current
        name = owner.target if owner is not None else outside or "(outside SVI and MCMC)"
        self.compilations.append(Compilation(name, key, seconds, trace_seconds, shapes))
        if owner is not None:
            owner.compile_seconds += seconds

    def draws_part(self) -> None:
        """The step just compiled drew other random numbers than its eager run: say so once per SVI."""
        plan = self.current
        if isinstance(plan, StepPlan) and not plan.diverges:
            plan.diverges = ("the compiled step draws fewer random numbers than the eager one (a random "
                             "value computed and never used, e.g. torch.randn as the initial value of a "
                             "pyro.param that exists already), so the two runs' draws part")
            self.notes.append(f"{plan.target}: {plan.diverges}; its results follow eager's in "
                              "distribution, not draw by draw")

    def target(self, fallback: str = "?") -> str:
        """The step or MCMC run in progress, by name."""
        return self.current.target if self.current is not None else fallback

    def leave_express(self) -> None:
        """The run ends: every short way it was taking is left (what their routes do then)."""
        for plan in [*self.svi_plans.values(), *self.loss_plans.values()]:
            if plan.express is not None:
                plan.express.leave()  # type: ignore[attr-defined]

    # -- progress ------------------------------------------------------------------
    def step_done(self, plan: StepPlan, now: float) -> None:
        """After every SVI step and direct loss call."""
        self._steps_done += 1
        if self._on_step is not None:
            self._on_step()
        if self._on_progress is not None and now - self._last_progress >= PROGRESS_INTERVAL:
            self.progress(now, plan)

    def sample_done(self) -> None:
        """After every MCMC sample."""
        self._samples_done += 1
        if self._on_progress is not None:
            now = self.clock()
            if now - self._last_progress >= PROGRESS_INTERVAL:
                self.progress(now)

    def compiling(self) -> None:
        """A trace is about to be built: say so on the progress line."""
        if self._on_progress is not None:
            self.progress(self.clock(), compiling=True)

    def progress(self, now: float, plan: StepPlan | None = None, compiling: bool = False) -> None:
        assert self._on_progress is not None
        self._last_progress = now
        recent = None
        if plan is not None and plan.raw:
            recent = statistics.median(step[0] for step in plan.raw[-PROGRESS_WINDOW:])
        self._on_progress(Progress(run="compiled" if self.options.compiles else "eager",
                                   steps=self._steps_done, recent_median_step_seconds=recent,
                                   samples=self._samples_done, compiling=compiling,
                                   seconds=now - self.start))

    # -- the report ----------------------------------------------------------------
    def compiled_objects(self) -> list[Any]:
        """What this run compiled with (Jit* ELBOs, HMC/NUTS kernels): what the cell's caches hold."""
        found: list[Any] = []
        for plan in [*self.svi_plans.values(), *self.loss_plans.values()]:
            runner = plan.route.runner
            if plan.route.compiled and runner is not None and all(runner is not f for f in found):
                found.append(runner)
        return found + [r.runner for r in self.mcmc_routes if r.runner is not None]

    def snapshot(self, exc: BaseException | None, warnings: tuple[CapturedWarning, ...]) -> JitReport:
        """The report of what has run so far."""
        notes = list(self.notes)
        for target, stats in self.past_cap.values():
            notes.append(f"{target}: {stats.eager_past_cap} calls with new keys ran eager "
                         f"past --max-entries {self.options.max_entries}")
        if not self.switches and exc is None:
            notes.append("the cell ran no SVI step, no ELBO loss and no MCMC run: nothing was compiled")
        error = None
        if exc is not None:
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            error = type(exc).__name__ + (f": {first_line}" if first_line else "")
        auto = self.auto
        return JitReport(
            switches=tuple(self.switches.values()),
            svi_runs=tuple(p.record() for p in self.svi_plans.values()),  # type: ignore[misc]
            mcmc_runs=tuple(self.mcmc_runs),
            compilations=tuple(self.compilations),
            warmup=tuple(self.warmups),
            warnings=warnings,
            notes=tuple(notes),
            error=error,
            advice=self.advice if exc is not None else None,
            seconds=(self.end or self.clock()) - self.start,
            executor=self.options.executor if self.compilations or self.tallies else "",
            executor_choices=tuple(ExecutorChoice(t.owner, t.key, t.state, t.why)
                                   for t in self.executor_trials.values()),
            auto=tuple(auto.decision(t) for t in self._shown_tallies()) if auto else (),
            loss_runs=tuple(p.record() for p in self.loss_plans.values()),  # type: ignore[misc]
            guards=tuple(self.guard_events),
            sentinel_checks=self.checks()[0],
            sentinel_seconds=self.checks()[1],
            sentinel_findings=self.sentinel_findings,
        )

    def _auto_tallies(self) -> list[Tally | TierTally]:
        return [*self.tier_tallies.values(), *self.tallies.values()]

    def _shown_tallies(self) -> list[Tally | TierTally]:
        """The --auto rows: a signature that climbed above Pyro's JIT by its tiers' row (whose path
        holds its eager and Pyro steps), every other key by Pyro's."""
        climbed = [t for t in self.tier_tallies.values() if t.climbed]
        told = {(t.book.owner, t.book.key) for t in climbed}
        return [*climbed, *(t for t in self.tallies.values() if (t.book.owner, t.book.key) not in told)]

    def learn(self) -> None:
        """--auto: add what this run's keys cost to what the session expects of the next."""
        if self.auto is not None:
            for tally in self._auto_tallies():
                self.auto.learn(tally.book)
            # how long each signature ran, for the next run of the same cell
            self.auto.remember(list(self.tier_tallies.values()))
