"""How each SVI's steps run under the whole-step compiler: one compiled graph per call signature.

An SVI's first step runs eagerly when Pyro still creates something on it (an
AutoGuide's prototype, a guessed ``max_plate_nesting``, the torch optimizers
and their state): that step is exactly eager's, and the capture needs what it
made. The next step captures the whole step and compiles it; every later call
with the same signature runs the graph, which writes the new params and
optimizer state into the very tensors the user holds. An SVI the whole step
cannot capture runs on Pyro's JIT from then on (or eager, where Pyro cannot
compile it either), and the report says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ... import compat
from ...context import RunContext
from ...naming import label
from ...recorder import StepPlan
from ...whole_steps import WholeStepEntry
from ..base import Route
from ..pyro_jit import PyroJit
from ..pyro_jit.caches import describe_key


def signature(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What a compiled step is keyed on: Pyro's key (the number of positional arguments and the
    keyword values) and each positional argument's shape and dtype, or its value (a number the
    graph holds as a constant). Cheap, as it runs on every step."""
    import torch

    try:
        key = compat.fast_key(args, kwargs)
        hash(key)
    except TypeError:
        key = compat.hashed_key(args, kwargs)
    described = tuple((a.shape, a.dtype) if isinstance(a, torch.Tensor) else ("value", a) for a in args)
    try:
        hash(described)
    except TypeError:  # an unhashable positional value: by identity, as Pyro keys other objects
        described = tuple(x if not isinstance(x, tuple) or x[0] != "value" else ("value", id(x[1]))
                          for x in described)
    return key, described


def said(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """A signature in words, and the shapes of its tensor arguments."""
    import torch

    key = describe_key((len(args), tuple(sorted(kwargs.items()))))
    shapes = tuple(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))
    return key, shapes


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
    fallback: Route | None = None
    why: str = ""  # what stopped the capture, once it did
    entries: dict[Any, WholeStepEntry] = field(default_factory=dict)
    waiting: WholeStepEntry | None = None  # the entry whose inductor codegen runs in the background

    @classmethod
    def plan(cls, ctx: RunContext, pyro: PyroJit, backend: str, svi: Any, elbo: Any, target: str,
             as_written: Callable[..., Any]) -> Route:
        """The route of ``svi``: whole steps, or Pyro's JIT when the capture cannot write its step."""
        from ....wholestep import CannotCompile
        from ....wholestep.capture import check_svi

        name = type(elbo).__name__ if elbo is not None else label(svi.loss)
        try:
            check_svi(svi)
        except CannotCompile as exc:
            route = pyro.plan_svi(svi, elbo, target, as_written)
            route.reason = _fallback_reason(exc.reason, route)
            return route
        route = cls(before=name, after=f"{name}, whole step ({backend})", compiled=True, call=as_written,
                    ctx=ctx, pyro=pyro, backend=backend, svi=svi, elbo=elbo, target=target,
                    as_written=as_written, entries=ctx.session.whole_steps.of(svi))
        route.call = route.step
        route.runner = svi
        # an earlier cell's inductor codegen may still run in the background
        route.waiting = next((e for e in route.entries.values() if e.unannounced), None)
        return route

    def step(self, svi: Any, *args: Any, **kwargs: Any) -> Any:
        """One ``svi.step(*args, **kwargs)``, compiled whole when it can be."""
        __tracebackhide__ = True
        if self.fallback is not None:
            return self.fallback.call(svi, *args, **kwargs)
        key = (self.backend, signature(args, kwargs))  # a cell asking for another backend compiles anew
        entry = self.entries.get(key)
        if entry is None or entry.compiled.stale is not None:
            entry = self._compile(svi, key, args, kwargs, stale=entry)
            if entry is None:
                if self.fallback is not None:
                    return self.fallback.call(svi, *args, **kwargs)
                assert self.as_written is not None
                return self.as_written(svi, *args, **kwargs)  # Pyro creates what the capture needs
        entry.last_hit = time.time()
        if self.waiting is entry:
            return self._while_waiting(entry, args, kwargs)
        return entry.compiled(*args, **kwargs)

    def _while_waiting(self, entry: WholeStepEntry, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A step while inductor compiles in the background: say when its kernels take over."""
        compiled = entry.compiled
        loss = compiled(*args, **kwargs)
        if not compiled.compiling:
            self.waiting, entry.unannounced = None, False
            assert self.ctx is not None
            if compiled.backend == "inductor":
                self.ctx.recorder.note(
                    f"{self.target}: inductor's kernels took over after {compiled.steps} compiled steps "
                    f"({compiled.codegen_summary()})")
            elif compiled.fallback:
                self.ctx.recorder.note(f"{self.target}: {compiled.fallback}")
        return loss

    def _compile(self, svi: Any, key: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                 stale: WholeStepEntry | None, backend: str | None = None) -> WholeStepEntry | None:
        from ....wholestep import CannotCompile, NeedsEagerStep, compile_svi_step

        assert self.ctx is not None
        recorder = self.ctx.recorder
        recorder.compiling()
        start = recorder.clock()
        try:
            # inductor's codegen (seconds to minutes) runs on a thread while the steps run on
            # TorchScript: the cell never waits for it, and Ctrl-C stops the cell at once
            backend = backend or self.backend
            compiled = compile_svi_step(svi, args, kwargs, backend=backend,  # type: ignore[arg-type]
                                        background=backend == "inductor")
        except NeedsEagerStep:
            return None
        except CannotCompile as exc:
            self._fall_back(svi, exc.reason)
            return None
        seconds = recorder.clock() - start
        described, shapes = said(args, kwargs)
        recorder.record_compile(described, seconds, compiled.capture_seconds, shapes)
        if stale is not None:
            recorder.note(f"{self.target}: its whole step was compiled again: {stale.compiled.stale}")
        if compiled.fallback:
            recorder.note(f"{self.target}: {compiled.fallback}")
        for read in compiled.value_reads:
            if read.origin == "user":
                recorder.note(f"{self.target}: the whole step checks {read.what} at {read.where} on every "
                              "step; a step where that value differs from the compiled one runs eagerly")
        entry = self.entries[key] = WholeStepEntry(compiled, described, seconds)
        if compiled.compiling:
            self.waiting, entry.unannounced = entry, True
            recorder.note(f"{self.target}: inductor compiles in the background; until its kernels are "
                          + ("loaded from its disk cache the steps run the captured graph as it is (no "
                             "TorchScript to build for them)" if compiled.as_captured
                             else "ready the steps run on the step backend"))
        return entry

    def _fall_back(self, svi: Any, why: str) -> None:
        """The capture stopped: Pyro's JIT runs this SVI from now on (this step included)."""
        assert self.ctx is not None and self.pyro is not None and self.as_written is not None
        fallback = self.pyro.plan_svi(svi, self.elbo, self.target, self.as_written)
        fallback.reason = _fallback_reason(why, fallback)
        self.fallback, self.why = fallback, why
        self._mirror(fallback)
        plan = self.ctx.recorder.current
        if isinstance(plan, StepPlan) and plan.route is self:
            # from now on the step is Pyro's route's: its compiles mark where to go back to, and
            # a limit of Pyro's JIT met on them falls back to eager as it does without --backend
            plan.route = fallback
        self.ctx.recorder.switch(id(svi), self.target, fallback)

    def _mirror(self, fallback: Route) -> None:
        """Show and run as ``fallback`` does (the step in progress still holds this route)."""
        self.after, self.compiled, self.reason = fallback.after, fallback.compiled, fallback.reason
        self.runner, self.call = fallback.runner, fallback.call

    def recover(self, exc: BaseException) -> bool:
        if self.fallback is None or not self.fallback.recover(exc):
            return False
        # Pyro's JIT met one of its limits too: the SVI runs eager from now on
        self.fallback.reason = _fallback_reason(self.why, self.fallback)
        self._mirror(self.fallback)
        return True

    def advice(self, exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        return self.fallback.advice(exc, args, kwargs) if self.fallback is not None else None

    def first_done(self) -> str | None:
        return self.fallback.first_done() if self.fallback is not None else None


def _fallback_reason(why: str, route: Route) -> str:
    ran = "ran on Pyro's JIT" if route.compiled else f"ran eager ({route.reason})"
    return f"the whole step cannot be compiled ({why}): {ran}"
