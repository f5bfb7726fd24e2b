"""Every ``torch.jit.trace`` while a run is active: timed, watched, and checked before its trace is used.

A trace runs on a shallow stack (:mod:`...run.stack`), with every tensor read as a Python value
watched (:mod:`...run.tensor_reads`), so that a risky read is named at the user's line. A new trace
is checked before anything uses it: a param created while tracing, which the compiled step would
hold as a constant, is an error, and so is a risky read under ``--warnings error``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...compat import jit as compat
from ...run import advice
from ...run.context import RunContext
from ...run.recorder import MCMCPlan
from ...run.stack import call_shallow
from ...run.tensor_reads import watch_reads
from .calls import KeyCalls, PendingCompile
from .mcmc import PyroMCMCRoute


@dataclass
class TraceStart:
    """What a ``torch.jit.trace`` call started from."""

    pending: PendingCompile | None
    shapes: tuple[str, ...]
    risky: int
    params: set[str]
    potential: bool = False  # an HMC/NUTS potential energy


class Traces:
    """The traces one run builds."""

    def __init__(self, ctx: RunContext, calls: KeyCalls) -> None:
        self.ctx = ctx
        self.calls = calls  # whose compile in progress a trace belongs to

    def wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """The stand-in for ``torch.jit.trace``."""
        traces, ctx = self, self.ctx

        def trace(*args: Any, **kwargs: Any) -> Any:
            """``torch.jit.trace``: time it, and check the new trace before anything uses it."""
            __tracebackhide__ = True
            if not ctx.active:
                return original(*args, **kwargs)
            before = traces._before(args, kwargs)
            start = ctx.recorder.clock()
            try:
                # every tensor read as a Python value is watched: its size or a value, and who read it
                result = call_shallow(watch_reads(ctx.capture, original), *args, **kwargs)
            finally:
                traces._done(before, ctx.recorder.clock() - start)
            traces._check(before)
            return result

        return trace

    def _before(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TraceStart:
        import pyro
        import torch

        inputs = args[1] if len(args) > 1 else kwargs.get("example_inputs", ())
        if not isinstance(inputs, tuple):
            inputs = (inputs,)
        before = TraceStart(
            pending=self.calls.pending,
            shapes=tuple(str(tuple(t.shape)) for t in inputs if torch.is_tensor(t)),
            risky=self.ctx.capture.risky_count,
            params=set(pyro.get_param_store().keys()),
            potential=getattr(args[0] if args else None, "__name__", "") == compat.POTENTIAL_TRACE_NAME)
        self.ctx.recorder.compiling()
        if before.pending is not None:
            # Pyro ran the step once eagerly to find its params, drawing random
            # numbers; trace from the state the step started in, then run the
            # trace from it too, so the compiled step draws what an eager one would.
            torch.set_rng_state(before.pending.rng_state)
        return before

    def _done(self, before: TraceStart, seconds: float) -> None:
        if before.pending is not None:
            before.pending.trace_seconds, before.pending.shapes = seconds, before.shapes
            return
        # HMC/NUTS's potential, or a trace in user code
        recorder = self.ctx.recorder
        plan = recorder.current
        mcmc = isinstance(plan, MCMCPlan)
        recorder.record_compile("potential energy" if mcmc or before.potential else "torch.jit.trace",
                                seconds, seconds, before.shapes,
                                outside="initialize_model" if before.potential else "")
        if isinstance(plan, MCMCPlan) and isinstance(plan.route, PyroMCMCRoute):
            plan.route.potential_traced(seconds)

    def _check(self, before: TraceStart) -> None:
        """Stop before a trace that would be wrong is used: stray params, risky warnings."""
        import pyro
        import torch

        if before.pending is not None:
            torch.set_rng_state(before.pending.rng_state)
            store = pyro.get_param_store()
            stray = sorted(set(store.keys()) - before.params)
            if stray:
                for name in stray:
                    del store[name]
                raise advice.StrayParamError(
                    f"pyro.param {', '.join(map(repr, stray))} was first created while tracing, "
                    "so the compiled step would hold it as a constant and never train it; "
                    "create every pyro.param on the model's and guide's first call "
                    "(the stray param was removed from the param store)")
        if self.ctx.options.warnings == "error":
            risky = self.ctx.capture.risky_since(before.risky)
            if risky:
                first = risky[0]
                raise advice.RiskyTraceError(
                    f"risky JIT warning at {first.where}: {first.message.splitlines()[0]} "
                    "(the compiled step was not used; fix the line, or run with --warnings capture)")
