"""``MCMC.run`` while a run is active: each run asks the compiler how it runs, and is timed.

``MCMC.run`` is wrapped at class level; each call asks the compiler for an
:class:`~.route.MCMCRoute`, and :class:`MCMCClock` times it through its kernel's ``setup`` and
``sample``, counts potential evaluations, and summarises the samples for comparing runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..patch import PatchSet
from .context import RunContext
from .mcmc_clock import MCMCClock
from .recorder import MCMCPlan


def install(ctx: RunContext) -> None:
    """Wrap ``MCMC.run``: each run asks the compiler how it runs, and is timed."""
    from pyro.infer.mcmc import MCMC

    ctx.wrap(MCMC, "run", lambda original: _run_wrapper(ctx, original))


def wrapped() -> list[tuple[Any, str]]:
    """What :func:`install` wraps, for healing a cut-off run."""
    from pyro.infer.mcmc import MCMC

    return [(MCMC, "run")]


def _run_wrapper(ctx: RunContext, original: Callable[..., Any]) -> Callable[..., Any]:
    def run_mcmc(mcmc: Any, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if not ctx.active:
            return original(mcmc, *args, **kwargs)
        return _run(ctx, original, mcmc, args, kwargs)

    return run_mcmc


def _run(ctx: RunContext, original: Callable[..., Any], mcmc: Any,
         args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    __tracebackhide__ = True
    import pyro

    recorder, kernel = ctx.recorder, mcmc.kernel
    kernel_name = type(kernel).__name__
    target = ctx.name_of(mcmc, ctx.name_of(kernel, f"MCMC({kernel_name})"))
    if ctx.on_first_use is not None:
        ctx.on_first_use(mcmc)
    assert ctx.compiler is not None
    route = ctx.compiler.plan_mcmc(mcmc, target)
    recorder.switch(id(mcmc), target, route)
    recorder.mcmc_routes.append(route)
    local = PatchSet()
    clock = MCMCClock(recorder.sample_done, num_samples=getattr(mcmc, "num_samples", 0))
    plan = MCMCPlan(target, clock, route)
    # Pyro turns requires_grad off on every param while tracing the
    # potential and only turns it back on if tracing succeeds
    # (pyro/infer/mcmc/util.py, the jit potential).
    store = pyro.get_param_store()
    grads = {name: p.requires_grad for name, p in store.named_parameters()}
    outer, recorder.current = recorder.current, plan
    try:
        route.prepare(local, clock)
        clock.instrument(local, kernel)
        result = original(mcmc, *args, **kwargs)
        clock.summarise(mcmc)
        return result
    except BaseException as exc:
        clock.ended_by = exc
        for name, p in store.named_parameters():
            if name in grads and p.requires_grad != grads[name]:
                p.requires_grad_(grads[name])
        raise
    finally:
        recorder.current = outer
        local.restore()
        recorder.mcmc_runs.append(clock.record(target, kernel_name, route.compiled, plan.compile_seconds))
        route.finish(clock, plan.compile_seconds)


