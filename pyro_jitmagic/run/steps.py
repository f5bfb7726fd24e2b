"""One SVI step, or one ELBO loss call the cell makes itself, on its ladder: timed and recorded.

What :mod:`.svi` and :mod:`.direct` share: the eager warm-up before a compiled route's first step,
and :func:`timed`, which runs each step on its ladder and records its time and loss. A compiled
step that meets a limit of its compiler runs again eager; other failures get one line of advice.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NoReturn

from . import advice, warmup
from .context import RunContext
from .recorder import StepPlan

if TYPE_CHECKING:
    from .route import Ladder


def warm(ctx: RunContext, plan: StepPlan, model: Any, guide: Any, args: tuple[Any, ...],
         kwargs: dict[str, Any]) -> None:
    """The eager warm-up before a compiled route's first step (unless ``--no-warmup``)."""
    if plan.route.compiled and plan.route.warm is not None and ctx.options.warmup:
        ctx.recorder.warmups.extend(warmup.warm_up(plan.target, plan.route.warm, model, guide, args, kwargs))


def timed(ctx: RunContext, plan: StepPlan, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """One step of an SVI, or one direct call of a loss, by its route: timed and recorded.

    While the route offers a short way for its settled steps (:class:`~.route.Express`), a step
    takes it, past the ladder, the route and the signature's lookup (docs/benchmarks.md, The step
    around the graph)."""
    __tracebackhide__ = True
    recorder, ladder = ctx.recorder, plan.route
    express = plan.express
    if express is not None:
        outer, recorder.current = recorder.current, plan
        plan.compile_seconds = 0.0  # (a short way on Pyro's route may trace a key again)
        start = recorder.clock()
        try:
            result = express.run(args, kwargs)
        except BaseException as exc:
            plan.express = None
            if not (ladder.compiled and ladder.recover(exc)):
                _fail(ctx, ladder, exc, args, kwargs)
            result = None  # (its route put back what the step changed: the long way runs it, eager)
        finally:
            recorder.current = outer
        if result is not None:
            end = recorder.clock()
            plan.raw.append((end - start, result if type(result) is float else loss_value(result),
                             plan.compile_seconds))
            if express.book is not None:
                express.book(end - start, len(plan.raw))
            recorder.step_done(plan, end)
            return result
        plan.express = None  # (the route's own step runs this call, and says what comes next)
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
        plan.express = ladder.express()
    return result


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
