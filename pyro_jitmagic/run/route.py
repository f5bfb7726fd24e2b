"""The seam between a run and its compiler: routes, the ladder they stand on, and what a step ran.

For each SVI, each ELBO loss the cell calls itself and each MCMC run, the
compiler says how it runs: a :class:`Ladder` of :class:`Route` objects (the
whole step, then Pyro's JIT below it, say) or an :class:`MCMCRoute`. The run
calls the ladder for every step and gets a :class:`Ran` back: the step's result,
the tier it ran on, and how to book its time. A route that cannot go on hands
the step to the one below it; the ladder owns that fall and says why, once.
The run never asks which compiler made a route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ..policy.books import Tier

if TYPE_CHECKING:
    from ..patch import PatchSet
    from .mcmc_clock import MCMCClock


class Ran(NamedTuple):
    """What one step ran: its result (what the eager step returns), on which tier, and what then.

    ``timed`` is False when its time says nothing of the tier's step time (it traced or captured,
    or ran a graph as captured while kernels load). ``book`` is how the route that ran it books the
    step's time once the run has measured it (``book(seconds, step)``), or None. (A named tuple: it
    is made on every step.)
    """

    result: Any
    tier: Tier
    timed: bool = True
    book: Callable[[float, int], None] | None = None

    @property
    def compiled(self) -> bool:
        return self.tier != "eager"


class Express(NamedTuple):
    """The short way of a route's settled steps, which the run takes while it can.

    ``run(args, kwargs)`` runs one step and returns its result, or None, having changed nothing,
    when the route's own :meth:`Route.step` must run this call (after which the run asks the route
    again). ``book(seconds, step)`` books a step it ran (``step``: the run's count), or is None. A
    route offers one only while no step of its needs more than the run's timing: nothing to
    compile, announce or decide that the short way does not.

    ``closed``: a step runs none of the user's or Pyro's Python, nor traces (a graph's call), so
    nothing it calls asks which step is in progress, and its result is a float. ``ended(when)``,
    where given, is told once that the run stopped taking it, with the wall-clock time
    (``time.time()``) its last step ended: a route that keeps a time per step does it then.
    """

    run: Callable[[tuple[Any, ...], dict[str, Any]], float | None]
    book: Callable[[float, int], None] | None = None
    closed: bool = False
    ended: Callable[[float], None] | None = None


class CannotRun(Exception):
    """Raised by a route that cannot run this step, nor any later one, having changed nothing: the
    ladder runs it on the route below. ``args[0]`` says why."""


@dataclass
class Route:
    """One way an SVI's steps, or one ELBO loss's direct calls, run in one run.

    :meth:`step` runs one step (the run's ``head`` is ``(svi,)`` for an SVI, ``(model,
    guide)`` for a loss called directly) and returns a :class:`Ran`; the plain route runs
    ``call``. ``before`` and ``after`` name the inference as written and as run, ``reason`` says
    why it runs as it does when that is not plain (empty otherwise), ``note`` is said once in
    the report. ``runner`` is what a compiled step runs on (the cache tab of ``--compare``
    shows its caches); ``warm`` the ELBO to warm up eagerly before the first compiled step
    (AutoGuide prototype, ``max_plate_nesting``), or None. ``name`` is what it compiles, in
    words, for the ladder's reasons.
    """

    before: str
    after: str
    compiled: bool
    call: Callable[..., Any]
    reason: str = ""
    note: str = ""
    runner: Any = None
    warm: Any = None

    name = "it"

    def step(self, *args: Any, **kwargs: Any) -> Ran:
        """One step: ``call``, on Pyro's JIT when the route is compiled (a ``Jit*`` ELBO as written)."""
        __tracebackhide__ = True
        return Ran(self.call(*args, **kwargs), "pyro" if self.compiled else "eager")

    def recover(self, exc: BaseException) -> bool:
        """A compiled step failed with ``exc``: when that is a limit of the compiler (not the
        user's to fix), put back what the failed step changed, make this route eager from now
        on and return True to run the step again."""
        return False

    def advice(self, exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """One line on what to do about ``exc``, raised by a compiled step; None when none is known."""
        return None

    def first_done(self) -> str | None:
        """After its first step: anything the compiler does then; a note for the report, or None."""
        return None

    def express(self) -> Express | None:
        """After a step: the short way of the steps from now on, or None (see :class:`Express`)."""
        return None

    def fallen(self, why: str, below: Route) -> str:
        """The reason the report gives once this route fell to ``below`` because of ``why``."""
        ran = f"ran on {below.name}" if below.compiled else f"ran eager ({below.reason})"
        return f"{self.name} cannot be compiled ({why}): {ran}"


class Ladder:
    """The routes of one SVI or loss, highest first: each step runs on the highest that can run it.

    A route that cannot go on raises :class:`CannotRun`; the route below runs the steps from then
    on. The ladder shows the route that runs them, with the reason the fallen route gives
    (:meth:`Route.fallen`), and after a route's first step asks it for its first-step work. A
    route below may be given as a function that makes it: made once the steps fall to it.
    """

    def __init__(self, top: Route, *below: Route | Callable[[], Route]) -> None:
        self.routes = [top]  # made so far; the last runs the steps
        self.level = 0  # how many routes fell so far
        self._below = list(below)
        self.why = ""  # why the route above the last fell, once one did
        self._started: set[int] = set()

    @property
    def route(self) -> Route:
        """The route that runs the steps now."""
        return self.routes[-1]

    # -- what the report shows ----------------------------------------------------------
    @property
    def before(self) -> str:
        return self.routes[0].before

    @property
    def note(self) -> str:
        return self.routes[0].note

    @property
    def after(self) -> str:
        return self.route.after

    @property
    def compiled(self) -> bool:
        return self.route.compiled

    @property
    def runner(self) -> Any:
        return self.route.runner

    @property
    def warm(self) -> Any:
        return self.route.warm

    @property
    def reason(self) -> str:
        if len(self.routes) == 1:
            return self.route.reason
        return self.routes[-2].fallen(self.why, self.route)

    # -- running ------------------------------------------------------------------------
    def call(self, *args: Any, **kwargs: Any) -> Ran:
        """One step, on the highest route that can run it."""
        __tracebackhide__ = True
        while True:
            route = self.route
            try:
                return route.step(*args, **kwargs)
            except CannotRun as exc:
                self.fall(str(exc))

    def fall(self, why: str) -> None:
        """The route now cannot go on: the one below runs the steps from now on."""
        if not self._below:
            raise RuntimeError(f"the last route of the ladder gave up: {why}")
        below = self._below.pop(0)
        self.routes.append(below if isinstance(below, Route) else below())
        self.level, self.why = self.level + 1, why

    def recover(self, exc: BaseException) -> bool:
        """A compiled step failed: True when its route put back what it changed and runs eager now."""
        return self.route.recover(exc)

    def advice(self, exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        return self.route.advice(exc, args, kwargs)

    def express(self) -> Express | None:
        """The short way of the route that runs the steps now, once it has started."""
        return self.route.express() if self.level in self._started else None

    def started(self) -> str | None:
        """After every step: the first-step work of a route that has just run its first step
        (the run's first route, or one the steps fell to), and its note for the report."""
        if self.level in self._started:
            return None
        self._started.add(self.level)
        return self.route.first_done()


@dataclass
class MCMCRoute:
    """How one ``MCMC.run`` runs: its switch, and what the compiler does around it.

    ``prepare`` runs before ``MCMC.run``: it may patch the kernel for the run
    (through ``patches``, restored after it) and set the clock's hooks around
    each sample (:class:`~.mcmc_clock.MCMCClock`). ``finish`` runs after it, whatever
    ended it. ``runner`` is what the run compiled with (the kernel), or None.
    """

    before: str
    after: str
    compiled: bool
    reason: str = ""
    runner: Any = None

    def prepare(self, patches: PatchSet, clock: MCMCClock) -> None:
        """Before the run: patch the kernel for it, set the clock's hooks."""

    def finish(self, clock: MCMCClock, compile_seconds: float) -> None:
        """After the run, whatever ended it."""
