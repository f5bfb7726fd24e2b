"""The climb of plain ``%%pyrojit``: each SVI call signature goes eager -> Pyro's JIT -> whole step ->
inductor's kernels, only as far as :class:`~...policy.auto.AutoPolicy` expects it to pay.

Pyro's route runs the low tiers. A signature that climbs higher captures its whole step between
two steps, on the cell's thread (the capture runs the model's Python), and runs it on TorchScript.
Inductor then builds its kernels in the background, and they take over at the first step after;
a cold codegen that could not finish in time to serve this cell starts when it ends, for the next
run. Every tier reads and writes the very param and optimizer tensors the user holds, so a switch
loses nothing: the losses are those of one uninterrupted run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ...guards import CallSite, Change
from ...policy.auto import AFTER_CELL_DELAY, AutoPolicy
from ...policy.books import CellSteps, Tier, TierBook, TierTally
from ...run.context import RunContext
from ...run.route import CannotRun, Express, Ladder, Ran, Route
from ...run.session import WholeStepEntry
from ...wholestep.keys import signature_check, step_key
from ..eager import eager_step
from ..pyro import PyroJit
from ..pyro.routes import PyroRoute
from ..step.routes import SignatureRun, WholeStepRoute, said

#: Steps on ``step`` between two looks at a codegen put off until the cell ends.
RECHECK_EVERY = 32


@dataclass
class TieredRoute(WholeStepRoute):
    """An SVI under ``--auto``: each call signature on the tier that pays, up to ``top``."""

    low: Route | None = None
    top: str = "inductor"
    tallies: dict[Any, TierTally] = field(default_factory=dict)
    cell: CellSteps | None = None
    in_cache: dict[Any, bool] = field(default_factory=dict)  # per signature: inductor's cache holds its graph
    #: codegens put off until the cell ends (its run is expected to end before they would)
    after_cell: dict[int, tuple[WholeStepEntry, TierBook]] = field(default_factory=dict)
    low_last: tuple[Any, TierTally] | None = None  # (signature, tally) of the last step on the low tiers

    @classmethod
    def plan_tiered(cls, ctx: RunContext, pyro: PyroJit, top: str, svi: Any, elbo: Any, target: str,
                    as_written: Any) -> Route:
        """Pyro's route under --auto, with the whole step above it when the capture can write it."""
        from ...wholestep import CannotCompile
        from ...wholestep.capture import check_svi

        low = pyro.route_svi(svi, elbo, target, as_written)
        try:
            check_svi(svi)
        except CannotCompile:
            return low  # eager and Pyro's JIT only: the report's --auto rows say how they went
        route = cls(before=low.before, after=f"{low.after}, then the whole step when it pays (--auto)",
                    compiled=low.compiled, call=as_written, reason=low.reason, note=low.note,
                    runner=low.runner, warm=low.warm, ctx=ctx, pyro=pyro, backend="step", svi=svi,
                    elbo=elbo, target=target, as_written=as_written,
                    entries=ctx.session.whole_steps.of(svi), low=low, top=top, call_site=CallSite())
        route.compiled_after = route.after
        route.waiting = next((e for e in route.entries.values() if e.unannounced), None)
        return route

    @property
    def policy(self) -> AutoPolicy:
        assert self.ctx is not None and self.ctx.auto is not None
        return self.ctx.auto

    # -- one step ---------------------------------------------------------------------
    def step(self, svi: Any, *args: Any, **kwargs: Any) -> Ran:
        __tracebackhide__ = True
        try:
            return self._step(svi, args, kwargs)
        except CannotRun as exc:  # the ladder runs the steps on Pyro's route from now on
            where = "Pyro's JIT" if self.low is not None and self.low.compiled else "eager"
            assert self.ctx is not None
            self.ctx.recorder.note(f"{self.target}: --auto stays on {where}: the whole step cannot be "
                                   f"compiled ({exc})")
            raise

    def _step(self, svi: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Ran:
        __tracebackhide__ = True
        assert self.call_site is not None and self.low is not None
        problem = self.call_site.problem()
        if problem is not None:
            return self.eager_call(svi, args, kwargs, problem)
        sig = step_key(args, kwargs)
        tally = self._tally(sig, svi, args, kwargs)
        run = self.signature_run(sig, args, kwargs, base=("auto", sig))
        if run.eager_why:
            return self._booked(tally, self.eager(svi, args, kwargs))
        if run.entries and not tally.book.stepped_down:
            entry, result = run.serve(args, kwargs)
            if type(result) is float:
                self.served = (run, entry)  # type: ignore[assignment]
                return self._whole(entry, tally, result)  # type: ignore[arg-type]
            return self._declined(svi, run, tally, result, args, kwargs)
        book, calls = tally.book, self._function_calls()
        if self.top != "pyro" and self.policy.climb_to_step(book, calls, self._warm(book)):
            entry = self._capture(svi, run, args, kwargs)
            if entry is not None:
                return self._first_call(svi, run, tally, entry, args, kwargs)
            if run.eager_why:
                return self._booked(tally, self.eager(svi, args, kwargs))
        self.low_last = (sig, tally)
        return self._low_step(svi, tally, args, kwargs)

    def _first_call(self, svi: Any, run: SignatureRun, tally: TierTally, entry: WholeStepEntry,
                    args: tuple[Any, ...], kwargs: dict[str, Any]) -> Ran:
        """The first call of a step just captured (its time is the capture's)."""
        result = entry.compiled.run(*args, **kwargs)
        if type(result) is float:
            return self._whole(entry, tally, result, capturing=True)
        return self._declined(svi, run, tally, result, args, kwargs)

    def _low_step(self, svi: Any, tally: TierTally, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Ran:
        """A step on the low tiers: Pyro's route, which runs it eager or on Pyro's JIT."""
        assert self.low is not None and self.ctx is not None
        was = self.low.compiled
        ran = self.low.step(svi, *args, **kwargs)
        if was and not self.low.compiled:  # Pyro's JIT met one of its limits: eager below, from now on
            self.sync_low()
            self.ctx.recorder.restate()
        return ran._replace(book=partial(_book_low, self, tally, ran))

    def _declined(self, svi: Any, run: SignatureRun, tally: TierTally, result: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Ran:
        """No compiled step of the signature ran this call: eager (this step, or the rest of the run
        when the sentinel found it wrong or it keeps compiling again), or a capture for the new world."""
        if result is not None and result.value_check:
            ran = self.declined(svi, run, result, args, kwargs)
            return ran._replace(book=partial(_book_failed, self, tally))
        if result is None or result.finding is not None or result.transient:
            return self._booked(tally, self.declined(svi, run, result, args, kwargs))
        changes = list(result.changes) or [Change("the SVI", "as compiled", result.why)]
        entry = self._compile_again(svi, run, changes, args, kwargs)
        if entry is None:
            return self._booked(tally, self.eager(svi, args, kwargs))
        tally.book.path.append(f"captured again at step {tally.book.calls + 1}")
        return self._first_call(svi, run, tally, entry, args, kwargs)

    def _whole(self, entry: WholeStepEntry, tally: TierTally, loss: float, capturing: bool = False) -> Ran:
        """After a step on a compiled whole step: its tier for the books, and inductor's codegen."""
        compiled, book = entry.compiled, tally.book
        if self.waiting is entry:
            self._announce(entry)
        tier: Tier = "inductor" if compiled.backend == "inductor" else "step"
        if tier == "inductor" and book.tier != "inductor":
            book.codegen_seconds, book.codegen_cache = compiled.codegen_seconds, compiled.cache
            book.moved("inductor", f"inductor at step {book.calls + 1} ({compiled.codegen_summary()})")
        elif (self.top == "inductor" and tier == "step" and not compiled.compiling and not compiled.fallback
              and (id(entry) not in self.after_cell or book.steps["step"] % RECHECK_EVERY == 0)):
            # (once put off, looked at again now and then: a run of unknown length may turn out long)
            when = self.policy.start_codegen(book, self._function_calls(), self._warm(book))
            if when == "now":
                self._start_codegen(entry, book)
            elif when == "after the cell":
                self.after_cell[id(entry)] = (entry, book)
        if capturing:
            return self._booked(tally, Ran(loss, "step", timed=False))
        return self._booked(tally, Ran(loss, tier, timed=not compiled.as_captured))

    def express(self, book: Callable[[float, int], None] | None = None) -> Express | None:
        """The short way once the signature is as high as it will climb: no step has more to decide."""
        served = self.served
        if served is None:
            return _low_express(self)
        run, entry = served
        compiled, tally = entry.compiled, self.tallies.get(run.base[1])
        tier: Tier = "inductor" if compiled.backend == "inductor" else "step"
        if tally is None or tally.book.tier != tier or (
                tier == "step" and self.top == "inductor" and not compiled.fallback):
            self.served = None
            return None
        return super().express(partial(self._book_express, tally, tier))

    def _book_express(self, tally: TierTally, tier: Tier, seconds: float, step: int) -> None:
        """A timed step on ``tier``, run by this route (the short way, or its own step); ``step``, the
        run's count, as :class:`~...run.route.Express` gives it (the books count their own)."""
        if self.cell is not None:
            self.cell.done += 1
        tally.add(tier, seconds)

    # -- climbing ------------------------------------------------------------------------
    def _capture(self, svi: Any, run: SignatureRun, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> WholeStepEntry | None:
        """Capture the whole step now (TorchScript runs it from this step on)."""
        from ...wholestep.memory import graph_digest

        assert self.ctx is not None
        sig = run.base[1]
        book = self.tallies[sig].book
        why = book.why
        # kernels in inductor's disk cache: they load at once, in the background (a large graph
        # runs as captured meanwhile, with no TorchScript to build)
        warm = self.top == "inductor" and self._warm(book)
        try:
            entry = self.compile(svi, run, args, kwargs, backend="inductor" if warm else None)
        except CannotRun as exc:  # (a limit of the capture: the same code meets it again)
            self.policy.cannot_capture(book, str(exc))
            raise
        except Exception as exc:  # a tier that cannot be built never stops the cell: it stays below
            raise CannotRun(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        if entry is None:
            return None
        compiled = entry.compiled
        book.capture_seconds = entry.compile_seconds
        book.digest = graph_digest(compiled.captured.graph, compiled.captured.example_inputs)
        book.moved("step", f"step at step {book.calls + 1} (captured in {entry.compile_seconds:.2f} s)")
        book.why = why
        if compiled.compiling:  # inductor started with the capture: announced as its kernels take over
            memory = self.policy.memory
            if memory is not None and memory.inductor_holds(book.digest):
                book.codegen_why = "its kernels came from inductor's disk cache"
                book.path.append(f"inductor's kernels loading from step {book.calls + 1}"
                                 + (", the graph run as captured meanwhile" if compiled.as_captured else ""))
            else:  # (the memory of earlier runs named another graph: this one is new to the cache)
                book.codegen_why = "inductor's codegen started with the capture, expecting a warm cache"
                book.path.append(f"inductor's codegen from step {book.calls + 1}")
        if not self.compiled:  # it ran eager below (Pyro's JIT could not compile it): now it is compiled
            self.compiled = True
            self.ctx.recorder.restate()
        return entry

    def _start_codegen(self, entry: WholeStepEntry, book: TierBook) -> None:
        assert self.ctx is not None
        self.after_cell.pop(id(entry), None)
        missing = entry.compiled.build_inductor()
        if missing is not None:
            self.top = "step"
            self.ctx.recorder.note(f"{self.target}: --auto stays on the whole step: {missing}")
            return
        self.waiting, entry.unannounced = entry, True
        book.path.append(f"inductor's codegen from step {book.calls + 1}")

    def cell_ends(self, interrupted: bool = False) -> None:
        """The run is over: start the codegens put off until now (their kernels serve the next run;
        the cell that made them has its results already), unless it was interrupted."""
        after, self.after_cell = self.after_cell, {}
        if interrupted and after and self.ctx is not None:
            self.ctx.recorder.note(f"{self.target}: the cell was interrupted: inductor's codegen, put off "
                                   "until it ended, was not started (a later run that pays for it will)")
            return
        for entry, book in after.values():
            compiled = entry.compiled
            if compiled.stale is not None or compiled.compiling or compiled.backend == "inductor":
                continue
            if compiled.build_inductor(delay=AFTER_CELL_DELAY) is None:
                entry.unannounced = True  # the next cell that steps this SVI says when they take over
                book.path.append("inductor's codegen after the cell")

    def _warm(self, book: TierBook) -> bool:
        """Whether inductor's disk cache is known to hold this signature's graph (looked up once a
        run, and again once its graph is captured: the steps in between stay cheap)."""
        known = self.in_cache.get((book.key, book.digest))
        if known is not None:
            return known
        memory = self.policy.memory
        warm = False
        if self.top == "inductor" and memory is not None:
            digest = book.digest or (memory.graph(book.memory_key) if book.memory_key else None)
            warm = memory.inductor_holds(digest)
        self.in_cache[(book.key, book.digest)] = warm
        return warm

    def fallen(self, why: str, below: Route) -> str:
        return below.reason  # (the notes say why --auto stays below)

    # -- what the low tiers do after a step ---------------------------------------------------
    def recover(self, exc: BaseException) -> bool:
        """A limit of Pyro's JIT met on a low-tier step: Pyro's route puts it back and runs eager."""
        if self.low is None or not self.low.recover(exc):
            return False
        self.sync_low()
        return True

    def sync_low(self) -> None:
        """Pyro's route below gave up compiling: show it, eager until the signature climbs."""
        assert self.low is not None
        self.after, self.reason, self.runner = (f"{self.low.after}, then the whole step when it pays "
                                                "(--auto)", self.low.reason, self.low.runner)
        self.compiled = self.low.compiled
        self.compiled_after = self.after

    def advice(self, exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        return self.low.advice(exc, args, kwargs) if self.low is not None else None

    def first_done(self) -> str | None:
        return self.low.first_done() if self.low is not None else None

    # -- books ----------------------------------------------------------------------------
    def _tally(self, sig: Any, svi: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TierTally:
        tally = self.tallies.get(sig)
        if tally is not None:
            return tally
        assert self.ctx is not None
        books = self.policy.books.setdefault(svi, {})
        book = books.get(sig)
        if book is None:
            described, _ = said(args, kwargs)
            book = books[sig] = TierBook(self.target, described, memory_key=_memory_key(svi, sig))
        _recall(self, book)
        book.cell = self._cell_steps()
        book.run_start, book.stays = book.calls, None
        book.codegen_why = ""  # (what the last run said of inductor's codegen is not this run's)
        tally = self.tallies[sig] = TierTally(book, start_calls=book.calls)
        self.ctx.recorder.tier_tallies[(id(svi), sig)] = tally
        return tally

    def _cell_steps(self) -> CellSteps | None:
        """What the cell's loops say of this SVI's steps, shared by its signatures' books."""
        if self.cell is None:
            assert self.ctx is not None
            total = self.ctx.step_counts.get(self.target)
            self.cell = CellSteps(total) if total else None
        return self.cell

    def _function_calls(self) -> int:
        return sum(t.book.calls for t in self.tallies.values()) + 1

    def _booked(self, tally: TierTally, ran: Ran) -> Ran:
        """A step this route ran itself (eager, or a whole step), to book on its tier."""
        return ran._replace(book=partial(_book_own, self, tally, ran))


def _recall(route: TieredRoute, book: TierBook) -> None:
    """What earlier runs of the same code say of a signature at the start of a run: how long it ran
    (a cell run again usually runs as long as last time), how its graph's checks of values fared, and
    a limit of the capture it met in the session (said as the run that met it said it)."""
    assert route.ctx is not None
    memory, policy = route.policy.memory, route.policy
    if memory is not None:
        book.expected_steps = memory.steps(book.memory_key)
        book.remembered_checks = memory.failed_checks(book.memory_key)
    book.cannot_capture = book.cannot_capture or policy.capture_refused(book.memory_key)
    if book.cannot_capture:
        where = "Pyro's JIT" if route.low is not None and route.low.compiled else "eager"
        route.ctx.recorder.note(f"{route.target}: --auto stays on {where}: the whole step cannot be "
                                f"compiled ({book.cannot_capture}; met by the same code before)")


def _low_express(route: TieredRoute) -> Express | None:
    """The short way of a signature on the low tiers that will not climb before the cell ends (the
    steps left cannot repay a capture, whatever a step takes, until the session learns new figures).
    Its steps skip the climb's look and the signature's lookup, and run on Pyro's route as they
    would; a step whose key runs eager for the rest of the cell skips Pyro's route too. Between two
    eager steps of a small model the long way's decisions and bookkeeping took 171.6 us before it
    (docs/real-models.md, What the climb adds to a short cell)."""
    last, route.low_last = route.low_last, None
    low, policy = route.low, route.policy
    if last is None or not isinstance(low, PyroRoute) or route.waiting is not None:
        return None
    sig, tally = last
    run = route.signatures.get(sig)
    learned = policy.learned
    if run is None or run.eager_why or (run.entries and not tally.book.stepped_down) or (
            route.top != "pyro" and tally.book.stays != (learned, route._warm(tally.book))):
        return None
    assert route.call_site is not None
    problem, svi = route.call_site.problem, route.svi
    of_sig = signature_check(sig) or (lambda args, kwargs: step_key(args, kwargs) == sig)

    def same(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        return policy.learned == learned and problem() is None and of_sig(args, kwargs)

    key = low.calls.auto.eager_for_the_cell(low) if low.compiled and low.eager_instead else None
    if key is None:  # Pyro's route runs the step, deciding what it decides
        ran: list[Ran] = []

        def on_pyros_route(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if not same(args, kwargs):
                return None
            ran[:] = [route._low_step(svi, tally, args, kwargs)]
            return ran[0].result  # (SVI.step returns a number, never None: None means declined)

        def book_low(seconds: float, step: int) -> None:
            booked = ran[0].book
            if booked is not None:
                booked(seconds, step)

        return Express(on_pyros_route, book_low)
    fn, key_tally = key
    assert low.step_as_written is not None
    as_written, elbo = low.step_as_written, low.elbo

    def eager(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return eager_step(as_written, svi, elbo, args, kwargs) if same(args, kwargs) else None

    def book_eager(seconds: float, step: int) -> None:
        route._book_express(tally, "eager", seconds, step)
        low.calls.auto.eager_booked(fn, key_tally, seconds)

    return Express(eager, book_eager)


def _book_own(route: TieredRoute, tally: TierTally, ran: Ran, seconds: float, step: int) -> None:
    """A step ``route`` ran itself (eager, or a whole step), on its tier."""
    if ran.timed:
        route._book_express(tally, ran.tier, seconds, step)
        return
    if route.cell is not None:
        route.cell.done += 1
    tally.count("step", seconds)  # (a capture, or the graph as captured)


def _book_failed(route: TieredRoute, tally: TierTally, seconds: float, step: int) -> None:
    """A call of the signature's graph whose check of a value failed, then run eager: booked at its
    whole cost against the graph, which leaves for the low tiers when it no longer pays."""
    if route.cell is not None:
        route.cell.done += 1
    book = tally.book
    tally.count("eager", seconds)
    book.checks_failed += 1
    book.failed_times.append(seconds)
    if not route.policy.graph_pays(book):
        book.moved("eager", f"eager at step {book.calls + 1} (its graph's checks of values kept failing)")
        book.why = book.stepped_down
        route.served = None


def _book_low(route: TieredRoute, tally: TierTally, ran: Ran, seconds: float, step: int) -> None:
    """A step of ``route``'s on the low tiers: Pyro's route books its key's figures, and the signature
    its tier."""
    if route.cell is not None:
        route.cell.done += 1
    book, tier = tally.book, ran.tier
    if not book.path:
        book.path.append(tier)
    elif book.tier in ("eager", "pyro") and tier != book.tier:  # (Pyro's traces may be dropped)
        book.path.append(f"{tier} at step {book.calls + 1}")
    book.tier = tier if book.tier in ("eager", "pyro") else book.tier
    if not ran.timed:  # Pyro's trace: not a step time
        tally.count("pyro", seconds)
    else:
        tally.add(tier, seconds)
    if ran.book is not None:
        ran.book(seconds, step)


def _memory_key(svi: Any, sig: Any) -> str:
    """The key of this SVI's signature in the memory of earlier runs: its model's, guide's, ELBO's and
    optimizer's identity and the signature (shapes and keyword values, never the data)."""
    from ...wholestep.memory import code_digest

    elbo = getattr(svi.loss_and_grads, "__self__", svi.loss)
    optim = svi.optim
    parts = (code_digest(svi.model), code_digest(svi.guide), type(elbo).__name__,
             type(optim).__name__, repr(getattr(optim, "pt_optim_args", "")), repr(sig))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


class Tiered:
    """The climb with the whole step above Pyro's JIT: a :class:`TieredRoute` for each SVI, a
    :class:`~.mcmc.TieredMCMCRoute` for each MCMC run; ELBO losses the cell calls itself climb
    only as far as Pyro's JIT."""

    compiles = True

    def __init__(self, session: Any, top: str = "inductor") -> None:
        from ..step import WholeStep

        self.name = top
        self.session = session
        self._whole = WholeStep(session, backend="step")
        self._pyro: PyroJit = self._whole._pyro
        self._routes: list[TieredRoute] = []
        self._ctx: RunContext | None = None

    def install(self, ctx: RunContext, patches: Any) -> None:
        from ...wholestep.memory import shared

        self._ctx = ctx
        if ctx.auto is not None:
            ctx.auto.find_memory(shared)
        self._whole.install(ctx, patches)
        patches.on_restore(self._cell_ends)

    def _cell_ends(self) -> None:
        assert self._ctx is not None
        # an interrupted cell starts nothing new: Ctrl-C means stop (a codegen already running goes on)
        stopped = isinstance(self._ctx.ended_by, KeyboardInterrupt)
        for route in self._routes:
            route.cell_ends(stopped)

    @staticmethod
    def wrapped() -> list[tuple[Any, str]]:
        return PyroJit.wrapped()

    def plan_svi(self, svi: Any, elbo: Any, target: str, as_written: Any) -> Ladder:
        assert self._ctx is not None
        route = TieredRoute.plan_tiered(self._ctx, self._pyro, self.name, svi, elbo, target, as_written)
        if isinstance(route, TieredRoute):
            self._routes.append(route)
            assert route.low is not None
            return Ladder(route, route.low)
        return Ladder(route)

    def plan_loss(self, method: str, elbo: Any, model: Any, guide: Any, target: str, as_written: Any,
                  args: tuple[Any, ...]) -> Ladder:
        return self._pyro.plan_loss(method, elbo, model, guide, target, as_written, args)

    def plan_mcmc(self, mcmc: Any, target: str) -> Any:
        from .mcmc import TieredMCMCRoute

        assert self._ctx is not None
        return TieredMCMCRoute(self._ctx, mcmc, target, self._pyro.can_trace, self._pyro.adaptive,
                               top=self.name)

    def cached(self, namespace: Any, objects: list[Any] | None = None) -> list[Any]:
        return self._whole.cached(namespace, objects)

    def clear(self, ident: int | None = None) -> int:
        return self._whole.clear(ident)
