"""How Pyro's JIT runs each SVI and each ELBO loss the cell calls itself: its routes.

An SVI whose ELBO has a ``Jit*`` counterpart runs on a compiled companion (:mod:`.elbos`), and so
does a loss called directly, per model and guide. A ``Jit*`` ELBO the user built runs as written,
except that a second model gets its own copy: Pyro would silently return the first model's loss.
A step that should run eager runs on the user's own ELBO (:class:`EagerInstead`), since a companion
computes its loss in float32 and calls backward where eager does not. A first compiled step that
meets a limit of Pyro's JIT is put back and runs eager (:meth:`PyroRoute.recover`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ...compat import jit as compat
from ...guards import CallSite, GuardBuilder, Guards
from ...policy.books import Tier
from ...run import advice
from ...run.context import RunContext
from ...run.direct import METHODS
from ...run.naming import label
from ...run.recorder import StepPlan
from ...run.route import Ran, Route
from ..eager import eager_step
from . import elbos


class EagerInstead(Exception):
    """Raised by a compiled function's call that should run eager, to the route that owns the step:
    it runs the whole step on the user's own ELBO instead (see the module's text)."""


@dataclass
class PyroRoute(Route):
    """A route of Pyro's JIT: what it needs to fall back, and to repair its companions."""

    ctx: RunContext | None = None
    target: str = ""
    elbo: Any = None  # the user's ELBO; None for a custom loss
    svi: Any = None  # the SVI whose loss_and_grads points at the runner; None for a direct loss
    as_written: Callable[..., Any] | None = None  # a direct loss's call, as written
    # (random state, param names, warnings captured) before its first compile, until one succeeds
    start: tuple[Any, set[str], Any] | None = None
    compiled_once: bool = False
    method: str = ""  # the ELBO method called directly; "" for an SVI
    step_as_written: Callable[..., Any] | None = None  # SVI.step itself, for an SVI
    compiled_call: Callable[..., Any] | None = None  # a direct loss's call on its companion
    call_site: CallSite | None = None
    settings: Guards | None = None  # the user's ELBO's settings, as its companion copied them
    #: it runs on a companion of the user's eager ELBO: a call that should run eager runs on that ELBO
    eager_instead: bool = False
    calls: Any = None  # the run's calls of compiled functions (a KeyCalls), which tell what a step did
    #: --auto: the compiled function and key its last step called, and that step's own key, to decide
    #: the next step's ahead (AutoKeys.ahead_of)
    last_call: tuple[Any, Any] | None = None
    last_args: Any = None

    name = "Pyro's JIT"

    def step(self, *args: Any, **kwargs: Any) -> Ran:
        """One step or loss call, and what it ran on: Pyro's JIT, or eager where its key did (under
        --auto, or a guard failed), with its key's figures to book once its time is known."""
        __tracebackhide__ = True
        calls = self.calls
        outer = calls.begin(self)
        try:
            if self.svi is not None:
                result = self.svi_step(*args, **kwargs)
            elif self.eager_instead and self.compiled:
                result = self.loss_call(*args, **kwargs)
            else:
                result = self.call(*args, **kwargs)
        finally:
            took = calls.end(outer)
        mode = took.auto[1] if took.auto is not None else None
        if mode is not None:
            tier: Tier = "eager" if mode == "eager" else "pyro"
        else:  # no --auto: the route's, unless --auto left its compiled function uncalled
            tier = "pyro" if self.compiled and self.ctx is not None and self.ctx.auto is None else "eager"
        booked = took.auto is not None or took.trial is not None
        return Ran(result, tier, mode != "compile", took.book if booked else None)

    def svi_step(self, svi: Any, *args: Any, **kwargs: Any) -> Any:
        """One ``svi.step`` on the companion, or on the user's ELBO where it should run eager."""
        __tracebackhide__ = True
        assert self.step_as_written is not None
        if not (self.eager_instead and self.compiled):
            return self.step_as_written(svi, *args, **kwargs)
        problem = self._eager_why()
        if problem is None and not self.calls.auto.ahead_of(self, args, kwargs):
            try:
                return self.step_as_written(svi, *args, **kwargs)
            except EagerInstead:
                pass
        return eager_step(self.step_as_written, svi, self.elbo, args, kwargs)

    def loss_call(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> Any:
        """One direct loss call on the companion, or as written where it should run eager."""
        __tracebackhide__ = True
        assert self.compiled_call is not None and self.as_written is not None
        if self._eager_why() is None:
            try:
                return self.compiled_call(model, guide, *args, **kwargs)
            except EagerInstead:
                pass
        return self.as_written(model, guide, *args, **kwargs)

    def _eager_why(self) -> str | None:
        """Why this call runs eager, said once: a state no trace holds (grad mode, a handler), or the
        user's ELBO's settings changed during the cell (its companion copied the old ones)."""
        assert self.call_site is not None and self.ctx is not None
        problem = self.call_site.problem()
        if problem == "torch.no_grad() was active" and self.method in ("loss", "differentiable_loss"):
            problem = None  # a loss needs no gradient: its trace computes eager's value
        if problem is None and self.settings is not None and not self.settings.holds():
            changed = "; ".join(map(str, self.settings.changes()))
            problem = (f"the ELBO's settings changed during the cell ({changed}); the next cell compiles "
                       "for them")
            self.ctx.recorder.guard(self.target, f"ran eager from step {_step(self.ctx)}: {problem}")
            return problem
        if problem is not None:
            self.ctx.recorder.guard(self.target, f"{'steps' if self.svi is not None else 'calls'} ran eager "
                                                 f"while {problem} (the first at {_step(self.ctx)})")
        return problem

    def recover(self, exc: BaseException) -> bool:
        import pyro
        import torch

        assert self.ctx is not None
        store = pyro.get_param_store()
        why = elbos.cannot_compile(self.elbo, exc, store.keys())
        if why is None or self.start is None or self.runner is self.elbo:  # not the user's own Jit* ELBO
            return False
        rng, names, warned = self.start
        for name in set(store.keys()) - names:  # made by the failed trace
            compat.forget_param(store, name)
        torch.set_rng_state(rng)
        self.ctx.capture.rollback(warned)  # about a trace that is not used
        self.give_up(why)
        return True

    def give_up(self, why: str) -> None:
        """Compiling met a limit of Pyro's JIT: this route, and its ELBO in later cells, run eager."""
        assert self.ctx is not None
        self.ctx.session.never_compile(self.elbo, why)
        if self.calls is not None:  # (--auto: a later run of the same code, with a new ELBO, stays eager)
            self.calls.auto.unusable(self, why)
        self.runner, self.compiled, self.after, self.reason = self.elbo, False, self.before, why
        if self.svi is not None:
            self.ctx.patches.set(self.svi, "loss_and_grads", self.elbo.loss_and_grads)
        else:
            assert self.as_written is not None
            self.call = self.as_written

    def advice(self, exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        check_trace = bool((getattr(self.runner, "jit_options", None) or {}).get("check_trace"))
        return advice.advise(exc, args, kwargs, check_trace)

    def first_done(self) -> str | None:
        if self.runner is None:
            return None
        if self.runner is self.elbo and self.compiled:
            # the user's own Jit* ELBO: left as written, but say what it costs
            if type(self.runner).__name__ == "JitTraceMeanField_ELBO":
                what = "the SVI" if self.svi is not None else "it"
                return (f"{self.target}: Pyro's JitTraceMeanField_ELBO traces again on every call; "
                        f"give {what} a TraceMeanField_ELBO and %%pyrojit compiles it once")
        else:
            compat.repair_retracing(self.runner)
        return None


def plan_svi(ctx: RunContext, calls: Any, can_trace: bool, svi: Any, elbo: Any, target: str,
             as_written: Callable[..., Any]) -> PyroRoute:
    """How an SVI's steps run under Pyro's JIT; its ``loss_and_grads`` points at the runner for the run."""
    session = ctx.session
    elbo_name = type(elbo).__name__ if elbo is not None else label(svi.loss)
    runner: Any = elbo
    compiled, after, reason, note = False, elbo_name, "", ""
    if elbo is None:
        reason = elbos.why_eager(svi.loss)
    elif not can_trace:
        reason = "torch.jit.trace is not available in this torch"
    elif isinstance(elbo, elbos.jit_classes()):
        compiled, reason = True, "already compiled as written"
        bound = compat.bound_model_and_guide(elbo)
        if bound is not None and (bound[0] is not svi.model or bound[1] is not svi.guide):
            # Pyro would silently compute the loss of the model this ELBO
            # first compiled; run this pair on its own compiled copy instead.
            runner, _ = session.companion(elbo, svi.model, svi.guide, elbos.fresh_copy)
            reason = (f"this {elbo_name} was first compiled for {label(bound[0])}; "
                      f"Pyro would silently return that model's loss for {label(svi.model)}, "
                      "so this SVI ran on its own compiled copy")
            note = f"{target}: {reason}"
    elif session.cannot_compile(elbo) is not None:
        reason = session.cannot_compile(elbo) or ""
    elif elbos.counterpart(elbo) is not None:
        runner, why = session.companion(elbo, svi.model, svi.guide, elbos.make_companion)
        compiled, after = True, type(runner).__name__
        if why not in (None, "new"):
            ctx.recorder.guard(target, f"compiled again: {why}")
    else:
        reason = elbos.why_eager(elbo)
    if runner is not elbo and runner is not None:
        ctx.patches.set(svi, "loss_and_grads", runner.loss_and_grads)
    route = PyroRoute(before=elbo_name, after=after, compiled=compiled, call=as_written, reason=reason,
                      note=note, runner=runner, warm=runner if compiled else None, ctx=ctx, target=target,
                      elbo=elbo, svi=svi, step_as_written=as_written, calls=calls)
    _guard_calls(route)
    return route


def _guard_calls(route: PyroRoute) -> None:
    """The checks of a route that runs on a companion: the state of each call, and the user's ELBO's
    settings as the companion copied them."""
    route.eager_instead = (route.compiled and route.elbo is not None and route.runner is not route.elbo
                           and not isinstance(route.elbo, elbos.jit_classes()))
    if not route.eager_instead:
        return
    route.call_site = CallSite()
    builder = GuardBuilder()
    builder.settings(type(route.elbo).__name__, route.elbo, skip=compat.COMPILED_ATTRS)
    route.settings = builder.build()


def _step(ctx: RunContext) -> str:
    plan = ctx.recorder.current
    return f"step {len(plan.raw) + 1}" if isinstance(plan, StepPlan) and not plan.method else (
        f"call {len(plan.raw) + 1}" if isinstance(plan, StepPlan) else "?")


def _checked(value: Any) -> Any:
    from pyro.util import warn_if_nan

    warn_if_nan(value, "loss")
    return value


def _trace_differentiable_loss(jit_elbo: Any, model: Any, guide: Any, *args: Any, **kwargs: Any) -> Any:
    # Not JitTrace_ELBO.differentiable_loss: it returns loss + (surrogate -
    # surrogate.detach()) with a loss that carries gradients too, so a
    # reparameterized site gets twice eager's gradient (Pyro 1.9.2,
    # pyro/infer/trace_elbo.py). Eager Trace_ELBO adds the surrogate's
    # gradient to the loss's value only; so does this.
    loss, surrogate = jit_elbo.loss_and_surrogate_loss(model, guide, *args, **kwargs)
    # Checked on the surrogate, as eager does: warn_if_nan hooks the gradient of
    # what it checks, and the loss, left out of the graph, gets none (under
    # the optimizing executor the hook is then called with None, and fails).
    _checked(surrogate)
    return loss.detach() + (surrogate - surrogate.detach())


def _trace_loss(jit_elbo: Any, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
    loss, _ = jit_elbo.loss_and_surrogate_loss(model, guide, *args, **kwargs)
    return _checked(loss.item())


def _differentiable_loss(jit_elbo: Any, model: Any, guide: Any, *args: Any, **kwargs: Any) -> Any:
    return jit_elbo.differentiable_loss(model, guide, *args, **kwargs)


def _loss_of_differentiable_loss(jit_elbo: Any, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
    # TraceEnum_ELBO.loss and TraceMeanField_ELBO.loss are the value of their
    # differentiable loss, drawn from the same random stream
    return _checked(jit_elbo.differentiable_loss(model, guide, *args, **kwargs).item())


def _loss_and_grads(jit_elbo: Any, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
    return jit_elbo.loss_and_grads(model, guide, *args, **kwargs)


# How a Jit* companion computes each method of its eager ELBO, returning what
# eager returns; a method missing here has no compiled form in Pyro.
_COMPANION_CALLS: dict[tuple[str, str], Callable[..., Any]] = {
    ("Trace_ELBO", "differentiable_loss"): _trace_differentiable_loss,
    ("Trace_ELBO", "loss"): _trace_loss,
    ("Trace_ELBO", "loss_and_grads"): _loss_and_grads,
    ("TraceGraph_ELBO", "loss_and_grads"): _loss_and_grads,
    ("TraceEnum_ELBO", "differentiable_loss"): _differentiable_loss,
    ("TraceEnum_ELBO", "loss"): _loss_of_differentiable_loss,
    ("TraceEnum_ELBO", "loss_and_grads"): _loss_and_grads,
    ("TraceMeanField_ELBO", "differentiable_loss"): _differentiable_loss,
    ("TraceMeanField_ELBO", "loss"): _loss_of_differentiable_loss,
    ("TraceMeanField_ELBO", "loss_and_grads"): _loss_and_grads,
}


def _compiled_methods(jit_class: type) -> list[str]:
    """The loss methods a Jit* class compiles: those it defines itself."""
    return [m for m in METHODS if m in vars(jit_class)]


def plan_loss(ctx: RunContext, calls: Any, can_trace: bool, method: str, elbo: Any, model: Any,
              guide: Any, target: str, as_written: Callable[..., Any], args: tuple[Any, ...]) -> PyroRoute:
    """How direct calls of ``elbo.method`` for this model and guide run under Pyro's JIT."""
    elbo_name = type(elbo).__name__
    written = partial(as_written, elbo)

    def route(after: str, call: Callable[..., Any], runner: Any = None, reason: str = "",
              note: str = "") -> PyroRoute:
        made = PyroRoute(before=elbo_name, after=after, compiled=runner is not None, call=call,
                         reason=reason, note=note, runner=runner, warm=runner, ctx=ctx, target=target,
                         elbo=elbo, as_written=written, method=method, compiled_call=call, calls=calls)
        _guard_calls(made)
        return made

    def eager(reason: str) -> PyroRoute:
        return route(elbo_name, written, reason=reason)

    if not can_trace:
        return eager("torch.jit.trace is not available in this torch")
    if method == "loss":
        import torch

        for position, value in enumerate(args, start=1):
            if not torch.is_tensor(value):
                # as Pyro's examples call it (hmm.py: elbo.loss(model, guide, sequences, lengths, args))
                return eager(f"positional argument {position} is a {type(value).__name__}, which a trace "
                             "cannot take; Pyro's Jit* ELBOs compute loss eagerly, so it ran as written")
    jit_class = next((c for c in elbos.jit_classes() if isinstance(elbo, c)), None)
    if jit_class is not None:
        return _as_written_jit(ctx, jit_class, method, elbo, model, guide, target, as_written, route, eager)
    failed = ctx.session.cannot_compile(elbo)
    if failed is not None:  # in an earlier cell, on a limit of Pyro's JIT
        return eager(failed)
    jit = elbos.counterpart(elbo)
    if jit is None:
        return eager(elbos.why_eager(elbo))
    compute = _COMPANION_CALLS.get((elbo_name, method))
    if compute is None:
        return eager(f"Pyro's {jit.__name__} compiles only {' and '.join(_compiled_methods(jit))}")
    runner, why = ctx.session.companion(elbo, model, guide, elbos.make_companion)
    if why not in (None, "new"):
        ctx.recorder.guard(target, f"compiled again: {why}")
    return route(jit.__name__, partial(compute, runner), runner)


def _as_written_jit(ctx: RunContext, jit_class: type, method: str, elbo: Any, model: Any, guide: Any,
                    target: str, as_written: Callable[..., Any], route: Callable[..., PyroRoute],
                    eager: Callable[[str], PyroRoute]) -> PyroRoute:
    """A direct loss of a Jit* ELBO the user built: as written, or on its own copy for another model."""
    elbo_name = type(elbo).__name__
    if method not in _compiled_methods(jit_class):
        return eager(f"Pyro's {jit_class.__name__} computes {method} eagerly: it compiles "
                     f"{' and '.join(_compiled_methods(jit_class))}")
    runner, reason, note = elbo, "already compiled as written", ""
    bound = compat.bound_model_and_guide(elbo)
    if bound is not None and (bound[0] is not model or bound[1] is not guide):
        # Pyro would silently compute the loss of the model this ELBO first
        # compiled; run this pair on its own compiled copy instead.
        runner, _ = ctx.session.companion(elbo, model, guide, elbos.fresh_copy)
        reason = (f"this {elbo_name} was first compiled for {label(bound[0])}; Pyro would silently "
                  f"return that model's loss for {label(model)}, so {label(model)} ran on its own "
                  "compiled copy")
        note = f"{target}: {reason}"
    elif (jit_class.__name__, method) == ("JitTrace_ELBO", "differentiable_loss"):
        note = (f"{target}: Pyro's JitTrace_ELBO.differentiable_loss does not give eager "
                "Trace_ELBO's gradient (twice it, for a reparameterized guide); use a Trace_ELBO "
                "and %%pyrojit compiles it with eager's gradient")
    return route(elbo_name, partial(as_written, runner), runner, reason=reason, note=note)
