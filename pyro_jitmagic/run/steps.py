"""One SVI step, or one ELBO loss call the cell makes itself, on its ladder: timed and recorded.

What :mod:`.svi` and :mod:`.direct` share: the eager warm-up before a compiled route's first step,
and :func:`timed`, which runs each step on its ladder and records its time and loss. A compiled
step that meets a limit of its compiler runs again eager; other failures get one line of advice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from ..records.units import seconds
from . import advice, warmup
from .context import RunContext
from .recorder import StepPlan

if TYPE_CHECKING:
    from .route import Express, Ladder


def pay_start_up(ctx: RunContext) -> None:
    """Before the first SVI step or loss call of a compiled run: torch's one-off start-up in this
    process (:func:`.seeds.prime_once`), not billed to the run. It would pass for a slow compile
    (or, with --auto, a slow eager step), and the decisions taken on those figures would be wrong.
    An MCMC run never pays it: Pyro's JIT does not need what it loads (docs/benchmarks.md)."""
    if not ctx.options.compiles:
        return
    from .seeds import prime_once

    recorder, active = ctx.recorder, ctx.active
    before = recorder.clock()
    ctx.active = False  # (its own throwaway SVI step runs as written, unseen by the run)
    try:
        primed = prime_once()
    finally:
        ctx.active = active
    if primed > 0.05:
        recorder.start += recorder.clock() - before
        recorder.note(f"torch's one-off start-up in this process took {seconds(primed)}, paid before the "
                      "first step so that no step or compile is billed for it")


def warm(ctx: RunContext, plan: StepPlan, model: Any, guide: Any, args: tuple[Any, ...],
         kwargs: dict[str, Any]) -> None:
    """The eager warm-up before a compiled route's first step (unless ``--no-warmup``)."""
    if plan.route.compiled and plan.route.warm is not None and ctx.options.warmup:
        ctx.recorder.warmups.extend(warmup.warm_up(plan.target, plan.route.warm, model, guide, args, kwargs))


def timed(ctx: RunContext, plan: StepPlan, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """One step of an SVI, or one direct call of a loss, by its route: timed and recorded.

    While the route offers a short way for its settled steps (:class:`~.route.Express`), a step
    takes it (:func:`express_step`), past the ladder, the route and the signature's lookup
    (docs/benchmarks.md, The step around the graph)."""
    __tracebackhide__ = True
    express = plan.express
    if express is not None:
        result = express(args, kwargs)
        if result is not None:
            return result
    recorder, ladder = ctx.recorder, plan.route
    outer, recorder.current = recorder.current, plan
    plan.compile_seconds = 0.0
    level = ladder.level
    start = recorder.clock()
    try:
        ran = ladder.call(*plan.head, *args, **kwargs)
        if ladder.level != level:  # a route fell to the one below it during the step
            recorder.switch(plan.key, plan.target, ladder)
    except BaseException as exc:
        if not (ladder.compiled and ladder.recover(exc)):
            _fail(ctx, ladder, exc, args, kwargs)
        recorder.switch(plan.key, plan.target, ladder)
        ran = ladder.call(*plan.head, *args, **kwargs)  # the same step, eager
    finally:
        recorder.current = outer
    cuda = recorder.cuda_initialized()
    if cuda:
        # a step returns once its kernels are queued; wait for them, so
        # the wall time is the GPU's time and not the launch time
        recorder.synchronize()
    end = recorder.clock()
    result = ran.result
    plan.raw.append((end - start, result if type(result) is float else loss_value(result),
                     plan.compile_seconds))
    if ran.book is not None:
        ran.book(end - start, len(plan.raw))
    recorder.step_done(plan, end)
    note = ladder.started()
    if note is not None:
        recorder.note(note)
    if not cuda:  # (GPU steps are timed to their kernels' end: the long way)
        offered = ladder.express()
        plan.express = express_step(ctx, plan, offered) if offered is not None else None
    return result


def express_step(ctx: RunContext, plan: StepPlan, express: Express) -> Callable[..., Any]:
    """The route's short way as the run takes it: ``step(args, kwargs)`` runs one step on it, timed
    and recorded as :func:`timed` records one, and returns its result; or None, having recorded
    nothing, when the route's own step must take this call. Either way it leaves the short way
    (``plan.express`` is None, and the express is told it :meth:`~.route.Express.ended`) when it
    returns None, and when the step raises.

    One function, its lookups made once: at a few microseconds a step, each call and attribute
    around the graph counts (docs/benchmarks.md, The step around the graph)."""
    recorder, ladder, run, book = ctx.recorder, plan.route, express.run, express.book
    clock, raw, done = recorder.clock, plan.raw, recorder.step_done
    record = raw.append
    last = [0.0]  # (the clock when its last step ended)

    def leave() -> None:
        if plan.express is step:
            plan.express = None
        if express.ended is not None and last[0]:
            express.ended(time.time() - (clock() - last[0]))

    def failed(exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        __tracebackhide__ = True
        leave()
        if not (ladder.compiled and ladder.recover(exc)):
            _fail(ctx, ladder, exc, args, kwargs)
        # (its route put back what the step changed: the long way runs it, eager)

    def closed(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        __tracebackhide__ = True
        start = clock()
        try:
            result = run(args, kwargs)
        except BaseException as exc:
            return failed(exc, args, kwargs)
        if result is None:
            return leave()
        last[0] = end = clock()
        record((end - start, result, 0.0))
        if book is not None:
            book(end - start, len(raw))
        done(plan, end)
        return result

    # (open_ is closed with the run told which step is in progress, around code that may ask: two
    # near-copies, so that the closed one, a graph's call, has no branch or call more per step)
    def open_(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        __tracebackhide__ = True
        outer, recorder.current = recorder.current, plan
        plan.compile_seconds = 0.0  # (a short way on Pyro's route may trace a key again)
        start = clock()
        try:
            result = run(args, kwargs)
        except BaseException as exc:
            return failed(exc, args, kwargs)
        finally:
            recorder.current = outer
        if result is None:
            return leave()
        last[0] = end = clock()
        record((end - start, result if type(result) is float else loss_value(result), plan.compile_seconds))
        if book is not None:
            book(end - start, len(raw))
        done(plan, end)
        return result

    step = closed if express.closed else open_
    step.leave = leave  # type: ignore[attr-defined]  # (the run ends: Recorder.leave_express)
    return step


def _fail(ctx: RunContext, ladder: Ladder, exc: BaseException, args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> NoReturn:
    """A step failed for a reason its route cannot mend: raise it, with advice where some is known."""
    __tracebackhide__ = True
    if ladder.compiled:
        _advise(ctx, ladder, exc, args, kwargs)
    if advice.ends_at_users_line(exc):
        raise exc.with_traceback(None) from exc.__cause__
    raise exc


def _advise(ctx: RunContext, route: Ladder, exc: BaseException, args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> None:
    if isinstance(exc, advice.JitMagicError) or advice.advised(exc):
        return  # raised or advised by us already: says what to do
    text = route.advice(exc, args, kwargs)
    if text is not None:
        advice.attach(exc, text)
        ctx.recorder.advice = text


def loss_value(result: Any) -> float:
    """A call's loss as a float for the record (a tensor's value; nan when it has none)."""
    if isinstance(result, float):
        return result
    detach = getattr(result, "detach", None)
    if detach is not None:  # a tensor: its value, without its graph
        value = detach()
        return value.item() if value.numel() == 1 else math.nan
    try:
        return float(result)
    except (TypeError, ValueError):
        return math.nan
