"""``SVI.step`` while a run is active: each SVI planned once, warmed up, and every step timed.

``SVI.step`` is wrapped at class level, so every SVI object is caught wherever it was built. An
SVI's first step in a run asks the compiler for its :class:`~.route.Ladder` and warms it up;
every step then runs through :func:`.steps.timed`. ``SVI.evaluate_loss`` and ``Predictive`` run
as written, and the report says so once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .context import RunContext
from .naming import label
from .recorder import StepPlan
from .steps import pay_start_up, timed, warm


def install(ctx: RunContext) -> None:
    """Wrap ``SVI.step``, and run ``SVI.evaluate_loss`` and ``Predictive`` as written, with a note."""
    from pyro.infer import SVI, Predictive

    ctx.wrap(SVI, "step", lambda original: _step_wrapper(ctx, original))
    ctx.wrap(SVI, "evaluate_loss", _noted(ctx, "SVI.evaluate_loss ran eager: Pyro compiles only the "
                                               "steps' loss_and_grads"))
    ctx.wrap(Predictive, "forward", _noted(ctx, "Predictive ran eager: it samples the model and guide, "
                                                "which Pyro does not compile"))


def wrapped() -> list[tuple[Any, str]]:
    """What :func:`install` wraps, for healing a cut-off run."""
    from pyro.infer import SVI, Predictive

    return [(SVI, "step"), (SVI, "evaluate_loss"), (Predictive, "forward")]


def _step_wrapper(ctx: RunContext, original: Callable[..., Any]) -> Callable[..., Any]:
    plans = ctx.recorder.svi_plans

    def step(svi: Any, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if not ctx.active:
            return original(svi, *args, **kwargs)
        plan = plans.get(id(svi))
        if plan is None or plan.holds[0] is not svi:
            plan = _prepare(ctx, svi, original, args, kwargs)
        express = plan.express  # (timed's first lines, here: a call less on the short way)
        if express is not None:
            result = express(args, kwargs)
            if result is not None:
                return result
        return timed(ctx, plan, args, kwargs)

    return step


def _prepare(ctx: RunContext, svi: Any, original: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> StepPlan:
    """Plan an SVI met for the first time in this run, and warm it up."""
    from pyro.infer import ELBO

    pay_start_up(ctx)
    elbo = getattr(svi.loss_and_grads, "__self__", None)
    if not isinstance(elbo, ELBO):
        elbo = None  # a custom loss function
    model, guide = svi.model, svi.guide
    target = ctx.name_of(svi, f"SVI({label(model)}, {label(guide)})")
    if ctx.on_first_use is not None:
        ctx.on_first_use(svi)
    assert ctx.compiler is not None
    route = ctx.compiler.plan_svi(svi, elbo, target, original)
    plan = StepPlan(target, route, head=(svi,), holds=(svi,), model=label(model), guide=label(guide),
                    key=id(svi))
    ctx.recorder.svi_plans[id(svi)] = plan
    ctx.recorder.switch(id(svi), target, route)
    if route.note:
        ctx.recorder.note(route.note)
    warm(ctx, plan, model, guide, args, kwargs)
    return plan


def _noted(ctx: RunContext, note: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """For inference the JIT does not apply to: run it as written, and say so once."""

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def noted(obj: Any, *args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            if not ctx.active:
                return original(obj, *args, **kwargs)
            ctx.recorder.note(note)
            ctx.as_written += 1  # the ELBO losses it calls run as written too
            try:
                return original(obj, *args, **kwargs)
            finally:
                ctx.as_written -= 1

        return noted

    return make
