"""How each SVI's steps run as compiled whole steps: a graph per call signature, used only while the
world it was captured in holds.

An SVI's first step runs eagerly while Pyro still creates things on it (an AutoGuide's prototype,
the optimizers' state): the capture needs them. Later calls of the signature run the graph, which
writes params and optimizer state into the tensors the user holds. A call the graph declines runs
as eager Pyro runs it, never on a lower compiled tier, which would have frozen the same value. A
failed guard compiles the signature again for the new world; one that keeps doing so, or that the
sentinel found wrong, runs eager for the rest of the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ...guards import CallSite, Change, Recompiles
from ...run.context import RunContext
from ...run.naming import label
from ...run.recorder import StepPlan
from ...run.route import CannotRun, Express, Ladder, Ran, Route
from ...run.session import WholeStepEntry
from ...wholestep.keys import step_key
from ..eager import eager_step
from ..pyro import PyroJit
from ..pyro.caches import describe_key

__all__ = ["WholeStepRoute", "said"]

#: Compiled steps a signature may hold when ``--max-entries`` does not say.
MAX_ENTRIES = 8


def said(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """A signature in words, and the shapes of its tensor arguments."""
    import torch

    key = describe_key((len(args), tuple(sorted(kwargs.items()))))
    shapes = tuple(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))
    return key, shapes


@dataclass
class SignatureRun:
    """One signature of one SVI in one run: its compiled steps, what made it compile again, and
    why it runs eager for the rest of the run (empty while it does not)."""

    base: Any  # every entry's key in the SVI's store is (base, n)
    described: str  # the signature in words
    store: dict[Any, WholeStepEntry]
    entries: list[WholeStepEntry] = field(default_factory=list)
    recompiles: Recompiles = field(default_factory=Recompiles)
    eager_why: str = ""

    @classmethod
    def of(cls, store: dict[Any, WholeStepEntry], base: Any, described: str) -> SignatureRun:
        """This run's view of the signature: the entries earlier cells compiled for it."""
        entries = [e for k, e in store.items() if isinstance(k, tuple) and len(k) == 2 and k[0] == base]
        return cls(base, described, store, entries)

    def serve(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[WholeStepEntry | None, Any]:
        """(the entry that ran the call, its float loss); else (the entry, its Declined) when the
        decline is about this call or the sentinel's, or (None, the last Declined, or None when there
        is no entry) when no entry fits the world any more."""
        declined = None
        stale = None
        for entry in self.entries:
            result = entry.compiled.run(*args, **kwargs)
            if type(result) is float:
                entry.last_hit = time.time()
                return entry, result
            if result.transient or result.finding is not None:
                return entry, result
            if result.stale:
                stale = entry
            declined = declined or result  # (the newest entry's: what changed since the latest world)
        if stale is not None:
            self.drop(stale)
        return None, declined

    def add(self, entry: WholeStepEntry) -> None:
        n = max((k[1] for k in self.store if isinstance(k, tuple) and len(k) == 2 and k[0] == self.base),
                default=-1) + 1
        self.store[(self.base, n)] = entry
        self.entries.insert(0, entry)  # the world now is the one it was compiled for

    def drop(self, entry: WholeStepEntry) -> None:
        """A compiled step that can never run again (its SVI changed): out of the store too."""
        self.entries.remove(entry)
        for key, held in list(self.store.items()):
            if held is entry:
                del self.store[key]


@dataclass
class WholeStepRoute(Route):
    """An SVI whose steps run as compiled whole steps, until it cannot; then on its fallback."""

    ctx: RunContext | None = None
    pyro: PyroJit | None = None
    backend: str = "step"
    svi: Any = None
    elbo: Any = None
    target: str = ""
    as_written: Callable[..., Any] | None = None
    entries: dict[Any, WholeStepEntry] = field(default_factory=dict)
    waiting: WholeStepEntry | None = None  # the entry whose inductor codegen runs in the background
    signatures: dict[Any, SignatureRun] = field(default_factory=dict)
    call_site: CallSite | None = None
    compiled_after: str = ""  # what ``after`` says while a step runs compiled
    served: tuple[SignatureRun, WholeStepEntry] | None = None  # what ran the last step, compiled

    name = "the whole step"

    @classmethod
    def plan(cls, ctx: RunContext, pyro: PyroJit, backend: str, svi: Any, elbo: Any, target: str,
             as_written: Callable[..., Any]) -> Ladder:
        """The ladder of ``svi``: whole steps, then Pyro's JIT (made once the steps fall to it: making
        it points the SVI at Pyro's compiled ELBO)."""
        from ...wholestep import CannotCompile
        from ...wholestep.capture import check_svi

        name = type(elbo).__name__ if elbo is not None else label(svi.loss)
        route = cls(before=name, after=f"{name}, whole step ({backend})", compiled=True, call=as_written,
                    ctx=ctx, pyro=pyro, backend=backend, svi=svi, elbo=elbo, target=target,
                    as_written=as_written, entries=ctx.session.whole_steps.of(svi), call_site=CallSite())
        route.runner, route.compiled_after = svi, route.after
        # an earlier cell's inductor codegen may still run in the background
        route.waiting = next((e for e in route.entries.values() if e.unannounced), None)
        ladder = Ladder(route, partial(pyro.route_svi, svi, elbo, target, as_written))
        try:
            check_svi(svi)
        except CannotCompile as exc:
            ladder.fall(exc.reason)
        return ladder

    # -- one step ---------------------------------------------------------------------
    def step(self, svi: Any, *args: Any, **kwargs: Any) -> Ran:
        """One ``svi.step(*args, **kwargs)``, compiled whole when it can be."""
        __tracebackhide__ = True
        assert self.call_site is not None
        problem = self.call_site.problem()
        if problem is not None:
            return self.eager_call(svi, args, kwargs, problem)
        run = self.signature_run(step_key(args, kwargs), args, kwargs)
        if run.eager_why:
            return self.eager(svi, args, kwargs)
        entry, result = run.serve(args, kwargs)
        if type(result) is float:
            if self.waiting is entry:
                self._announce(entry)  # type: ignore[arg-type]
            self.served = (run, entry)  # type: ignore[assignment]
            return self.ran(entry, result)  # type: ignore[arg-type]
        return self.declined(svi, run, result, args, kwargs)

    def express(self, book: Callable[[float, int], None] | None = None) -> Express | None:
        """The short way while the last step's compiled step is settled and its signature's first:
        the compiled step's short way (:meth:`~...wholestep.step.CompiledStep.short_way`), which
        checks the call site, signature, guards, binding and sentinel as the long way does."""
        served, self.served = self.served, None
        if served is None or self.waiting is not None:
            return None
        run, entry = served
        step = entry.compiled.short_way(self.call_site)
        if run.eager_why or not run.entries or run.entries[0] is not entry or step is None:
            return None

        def ended(when: float) -> None:
            entry.last_hit = when  # (the cache inspector's; kept once, not on every step)

        return Express(step, book, closed=True, ended=ended)

    @staticmethod
    def ran(entry: WholeStepEntry, loss: float) -> Ran:
        compiled = entry.compiled
        return Ran(loss, "inductor" if compiled.backend == "inductor" else "step",
                   timed=not compiled.as_captured)

    def signature_run(self, sig: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                      base: Any = None) -> SignatureRun:
        run = self.signatures.get(sig)
        if run is None:
            run = self.signatures[sig] = SignatureRun.of(self.entries, base or (self.backend, sig),
                                                         said(args, kwargs)[0])
            self._watch(run.entries)
        return run

    def declined(self, svi: Any, run: SignatureRun, result: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Ran:
        """No compiled step of the signature ran this call: run it eager, or compile again."""
        if result is not None and result.finding is not None:
            assert self.ctx is not None
            self.ctx.recorder.sentinel_findings += 1
            self.run_eager(run, f"the sentinel found its compiled step wrong: {result.why}")
            return self.eager(svi, args, kwargs)
        if result is not None and result.transient:
            return self.eager(svi, args, kwargs)
        changes = list(result.changes) if result is not None else []
        if result is not None and result.stale:
            changes = [Change("the SVI", "as compiled", result.why)]
        entry = self._compile_again(svi, run, changes, args, kwargs) if run.entries or result else \
            self.compile(svi, run, args, kwargs)
        if entry is None:
            return self.eager(svi, args, kwargs)  # Pyro creates what the capture needs, or eager
        return self.serve_new(svi, run, entry, args, kwargs)

    def serve_new(self, svi: Any, run: SignatureRun, entry: WholeStepEntry, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Ran:
        """The first call of a new compiled step."""
        result = entry.compiled.run(*args, **kwargs)
        if type(result) is float:
            return self.ran(entry, result)._replace(timed=False)  # (its time holds the capture's)
        return self.declined(svi, run, result, args, kwargs)

    def _compile_again(self, svi: Any, run: SignatureRun, changes: list[Change], args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> WholeStepEntry | None:
        """The world changed under every compiled step of the signature: compile another, unless the
        signature keeps doing so or holds as many as it may."""
        assert self.ctx is not None
        storm = run.recompiles.add(changes) if changes else None
        limit = self.ctx.options.max_entries or MAX_ENTRIES
        if storm is not None:
            self.run_eager(run, f"it kept compiling again: {storm}")
            return None
        if len(run.entries) >= limit:
            self.run_eager(run, f"it holds {limit} compiled steps already (--max-entries), and "
                                f"{'; '.join(map(str, changes))}")
            return None
        entry = self.compile(svi, run, args, kwargs)
        if entry is not None and changes:
            self.ctx.recorder.guard(self.target, f"{run.described}: compiled again at step "
                                    f"{self.step_number()}: " + "; ".join(map(str, changes)))
        return entry

    def run_eager(self, run: SignatureRun, why: str) -> None:
        """The rest of this run, the signature runs eager; the report says why, once (and, while no
        signature of the SVI runs compiled, in its switch line)."""
        assert self.ctx is not None
        run.eager_why = why
        self.ctx.recorder.guard(self.target, f"{run.described}: ran eager from step {self.step_number()}: "
                                             f"{why}")
        if self.compiled and not any(r.entries and not r.eager_why for r in self.signatures.values()):
            self.compiled, self.after, self.reason = False, self.before, f"ran eager: {why}"
            self.ctx.recorder.restate()

    def step_number(self) -> int:
        """The step in progress, counted from the run's first step of this SVI."""
        assert self.ctx is not None
        plan = self.ctx.recorder.current
        return len(plan.raw) + 1 if isinstance(plan, StepPlan) else 0

    # -- eager, as eager Pyro runs it ----------------------------------------------------------
    def eager_call(self, svi: Any, args: tuple[Any, ...], kwargs: dict[str, Any], problem: str) -> Ran:
        """A call made under a state no graph holds (grad mode, a handler): eager, said once."""
        assert self.ctx is not None
        self.ctx.recorder.guard(self.target, f"steps ran eager while {problem} (the first at step "
                                             f"{self.step_number()})")
        return self.eager(svi, args, kwargs)

    def eager(self, svi: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Ran:
        """One step as eager Pyro runs it, on the user's own ELBO (see :func:`~..eager.eager_step`);
        the compiled steps then know that eager's ``zero_grads`` left no gradient waiting."""
        __tracebackhide__ = True
        assert self.as_written is not None
        result = eager_step(self.as_written, svi, self.elbo, args, kwargs)
        for entry in self.entries.values():
            entry.compiled.eager_ran()
        return Ran(result, "eager")

    # -- compiling ---------------------------------------------------------------------------
    def compile(self, svi: Any, run: SignatureRun, args: tuple[Any, ...], kwargs: dict[str, Any],
                backend: str | None = None) -> WholeStepEntry | None:
        """Capture and compile the step for this signature and world; None when it cannot now (its
        first eager step; a read no graph can hold: the signature runs eager). An SVI the capture
        cannot write raises :class:`~...run.route.CannotRun`: the ladder's next route runs it."""
        from ...wholestep import CannotCompile, NeedsEagerStep, Unguardable, compile_svi_step

        assert self.ctx is not None
        recorder = self.ctx.recorder
        recorder.compiling()
        start = recorder.clock()
        try:
            # inductor's codegen (seconds to minutes) runs on a thread while the steps run on
            # TorchScript: the cell never waits for it, and Ctrl-C stops the cell at once
            backend = backend or self.backend
            compiled = compile_svi_step(svi, args, kwargs, backend=backend,  # type: ignore[arg-type]
                                        background=backend == "inductor", elbo=self.elbo,
                                        locate=self.ctx.capture.name_location)
        except NeedsEagerStep:
            return None
        except Unguardable as exc:
            self.run_eager(run, exc.reason)
            return None
        except CannotCompile as exc:
            raise CannotRun(exc.reason) from None
        seconds = recorder.clock() - start
        described, shapes = said(args, kwargs)
        recorder.record_compile(described, seconds, compiled.capture_seconds, shapes)
        if compiled.fallback:
            recorder.note(f"{self.target}: {compiled.fallback}")
        for read in compiled.value_reads:
            if read.origin == "user":
                recorder.note(f"{self.target}: the whole step checks {read.what} at {read.where} on every "
                              "step; a step where that value differs from the compiled one runs eagerly")
        entry = WholeStepEntry(compiled, described, seconds)
        run.add(entry)
        self._watch([entry])
        if not self.compiled:  # it ran eager so far: now a step runs compiled
            self.compiled, self.after, self.reason = True, self.compiled_after, ""
            recorder.restate()
        if compiled.compiling:
            self.waiting, entry.unannounced = entry, True
            recorder.note(f"{self.target}: inductor compiles in the background; until its kernels are "
                          + ("loaded from its disk cache the steps run the captured graph as it is (no "
                             "TorchScript to build for them)" if compiled.as_captured
                             else "ready the steps run on the step backend"))
        return entry

    def _watch(self, entries: list[WholeStepEntry]) -> None:
        """Count what these compiled steps' sentinels check from now on, in this run's report."""
        assert self.ctx is not None
        for entry in entries:
            self.ctx.recorder.watch_sentinel(entry.compiled.sentinel)

    def _announce(self, entry: WholeStepEntry) -> None:
        """A step while inductor compiles in the background: say when its kernels take over."""
        compiled = entry.compiled
        if compiled.compiling:
            return
        self.waiting, entry.unannounced = None, False
        assert self.ctx is not None
        if compiled.backend == "inductor":
            self.ctx.recorder.note(
                f"{self.target}: inductor's kernels took over after {compiled.steps} compiled steps "
                f"({compiled.codegen_summary()})")
        elif compiled.fallback:
            self.ctx.recorder.note(f"{self.target}: {compiled.fallback}")
