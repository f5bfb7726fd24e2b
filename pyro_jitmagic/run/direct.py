"""ELBO losses called directly in a cell, not through ``SVI.step``: caught, planned and timed.

Much Pyro code trains without SVI: ``elbo.differentiable_loss(model, guide, data)`` and a torch
optimizer, or a ``PyroModule`` trained through ``Trace_ELBO()(model, guide)``. So each call of an
ELBO's ``differentiable_loss``, ``loss`` or ``loss_and_grads`` comes to the run (:data:`calls`),
planned per ELBO, method, model and guide, and timed as a step is. A method bound before the cell
holds Pyro's function itself, and a bound method cannot be changed. So for the run each function's
*code* becomes a trampoline (through a :class:`~..patch.PatchSet`), and the original runs from a
clone. ``sys.setprofile`` would slow every Python call and clash with debuggers.
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

from ..patch import PatchSet
from .context import RunContext
from .naming import label
from .process import PROCESS
from .recorder import StepPlan
from .steps import pay_start_up, timed, warm

METHODS = ("differentiable_loss", "loss", "loss_and_grads")


class Handler(Protocol):
    """What a trampoline calls: the method's key, then the call's own arguments."""

    def __call__(self, key: str, elbo: Any, model: Any, guide: Any,
                 args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class _Method:
    """One of Pyro's ELBO loss functions, and what stands in for it while a run is active."""

    key: str  # "Trace_ELBO.differentiable_loss": where Pyro defines it
    method: str
    function: types.FunctionType  # Pyro's function object, which bound methods hold
    code: types.CodeType  # its own code
    original: types.FunctionType  # a clone that runs that code
    trampoline: types.CodeType


def _as_written(key: str, elbo: Any, model: Any, guide: Any,
                args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    __tracebackhide__ = True
    return PROCESS.loss_methods[key].original(elbo, model, guide, *args, **kwargs)


class _Calls:
    """Where the trampolines send each call: ``handler``, set by a run through its PatchSet."""

    handler: Handler = staticmethod(_as_written)


#: The trampolines hold this object in their code (as a constant), so that a
#: trampoline left behind by a process cut off mid-cell still runs Pyro's code.
calls = _Calls()

# The trampoline's source; the string constant is replaced by ``calls`` in its
# code object. It runs with the globals of Pyro's module, so a name of ours
# could only be reached by adding it to Pyro's modules, or by an import that
# costs microseconds on every call; a constant costs nothing.
_TRAMPOLINE = '''
def {method}(self, model, guide, *args, **kwargs):
    __tracebackhide__ = True
    return "{placeholder}".handler({key!r}, self, model, guide, args, kwargs)
'''
_PLACEHOLDER = "__pyrojit_calls__"

_SIGNATURE = ["self", "model", "guide", "args", "kwargs"]


def _catchable(fn: Any) -> TypeGuard[types.FunctionType]:
    """A plain function ``(self, model, guide, *args, **kwargs)`` whose code can be swapped."""
    if not isinstance(fn, types.FunctionType) or fn.__closure__ or fn.__defaults__ or fn.__kwdefaults__:
        return False  # e.g. RenyiELBO.loss, wrapped by torch.no_grad (a closure)
    return list(inspect.signature(fn).parameters) == _SIGNATURE


def _trampoline(key: str, fn: types.FunctionType) -> types.CodeType:
    """The code that stands in for ``fn``'s while a run is active."""
    source = _TRAMPOLINE.format(method=fn.__name__, placeholder=_PLACEHOLDER, key=key)
    namespace: dict[str, Any] = {}
    # Compiled as Pyro's file, at Pyro's line: the warning capture then treats
    # this frame as library code and keeps looking for the user's line, and a
    # traceback shows the frame where the user expects Pyro's method.
    exec(compile(source, fn.__code__.co_filename, "exec"), namespace)
    code: types.CodeType = namespace[fn.__name__].__code__
    return code.replace(co_consts=tuple(calls if c == _PLACEHOLDER else c for c in code.co_consts),
                        co_firstlineno=fn.__code__.co_firstlineno)


def _methods() -> dict[str, _Method]:
    """Every loss function of the ELBO classes ``pyro.infer`` exports (Pyro 1.9.2)."""
    methods: dict[str, _Method] = PROCESS.loss_methods  # facts about the installed Pyro: found once
    if not methods:
        import pyro.infer
        from pyro.infer import ELBO

        for name in sorted(dir(pyro.infer)):
            cls = getattr(pyro.infer, name)
            if not (isinstance(cls, type) and issubclass(cls, ELBO)):
                continue
            for method in METHODS:
                fn = vars(cls).get(method)
                if _catchable(fn):
                    key = f"{cls.__name__}.{method}"
                    original = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__)
                    original.__qualname__ = fn.__qualname__
                    methods[key] = _Method(key, method, fn, fn.__code__, original, _trampoline(key, fn))
    if len(_ORIGINALS) != len(methods):
        _ORIGINALS.update((m.function, m.original) for m in methods.values())
    return methods


#: Pyro's loss functions, and the clones that run their code while a run is active (:func:`unhooked`).
_ORIGINALS: dict[types.FunctionType, types.FunctionType] = {}


def unhooked(bound: Any) -> Any:
    """``bound``, an ELBO's loss method, calling Pyro's code as written past the run's trampoline.
    An eager step runs its ELBO as written (the trampoline's handler would only pass the call on,
    as it does for every call inside a step), a few Python calls fewer on every eager step."""
    original = _ORIGINALS.get(getattr(bound, "__func__", None))  # type: ignore[arg-type]
    return bound if original is None else types.MethodType(original, bound.__self__)


def intercept(patches: PatchSet, handler: Handler) -> None:
    """Send every call of an ELBO loss method to ``handler`` until ``patches`` are restored."""
    methods = _methods()
    patches.set(calls, "handler", handler)
    for m in methods.values():
        patches.set(m.function, "__code__", m.trampoline)


def heal() -> list[str]:
    """Put back Pyro's code where a run cut off mid-cell left trampolines; what was healed."""
    left = [m for m in PROCESS.loss_methods.values() if m.function.__code__ is not m.code]
    for m in left:
        m.function.__code__ = m.code
    vars(calls).pop("handler", None)
    return ["the ELBO loss methods"] if left else []


def original(key: str) -> types.FunctionType:
    """Pyro's function, as written, for a trampoline's key."""
    return PROCESS.loss_methods[key].original


def method_of(key: str) -> str:
    return PROCESS.loss_methods[key].method


# -- naming ----------------------------------------------------------------------
def name_of(names: Any, key: str, elbo: Any, model: Any, guide: Any) -> str:
    """The user's name for this loss: a bound method or ``ELBOModule`` they hold, or their ELBO's."""
    from pyro.infer.elbo import ELBOModule

    m = PROCESS.loss_methods[key]
    if names is not None:
        for name, value in list(names.items()):
            if name.startswith("_"):
                continue
            bound = isinstance(value, types.MethodType) and value.__self__ is elbo
            if bound and value.__func__ is m.function:
                return name
            if (m.method == "differentiable_loss" and isinstance(value, ELBOModule)
                    and value.elbo is elbo and value.model is model and value.guide is guide):
                return name
        for name, value in list(names.items()):
            if value is elbo and not name.startswith("_"):
                return f"{name}.{m.method}"
    return f"{type(elbo).__name__}().{m.method}"


# -- the calls, while a run is active ---------------------------------------------
def install(ctx: RunContext) -> None:
    """Send every call of an ELBO loss method to the run of ``ctx`` until it ends."""
    intercept(ctx.patches, lambda key, elbo, model, guide, args, kwargs: _loss_call(
        ctx, key, elbo, model, guide, args, kwargs))


def _loss_call(ctx: RunContext, key: str, elbo: Any, model: Any, guide: Any,
               args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Every call of an ELBO's loss method while the run is active comes here."""
    __tracebackhide__ = True
    if not ctx.active or ctx.recorder.current is not None or ctx.as_written:
        # calls made by SVI.step, by a loss already running, or by evaluate_loss: as written
        return original(key)(elbo, model, guide, *args, **kwargs)
    plan = ctx.recorder.loss_plans.get((id(elbo), key, id(model), id(guide)))
    if plan is None or not all(a is b for a, b in zip(plan.holds, (elbo, model, guide), strict=True)):
        plan = _prepare(ctx, key, elbo, model, guide, args, kwargs)
    return timed(ctx, plan, args, kwargs)


def _prepare(ctx: RunContext, key: str, elbo: Any, model: Any, guide: Any,
             args: tuple[Any, ...], kwargs: dict[str, Any]) -> StepPlan:
    """Plan a loss met for the first time in this run, and warm it up."""
    pay_start_up(ctx)
    recorder = ctx.recorder
    target = name_of(ctx.names, key, elbo, model, guide)
    if any(p.target == target for p in recorder.loss_plans.values()):  # the same loss, another pair
        target = f"{target}({label(model)}, {label(guide)})"
    assert ctx.compiler is not None
    method = method_of(key)
    route = ctx.compiler.plan_loss(method, elbo, model, guide, target, original(key), args)
    plan = StepPlan(target, route, head=(model, guide), holds=(elbo, model, guide), model=label(model),
                    guide=label(guide), method=method)
    plan.key = id(plan)
    if route.note:
        recorder.note(route.note)
    warm(ctx, plan, model, guide, args, kwargs)
    recorder.loss_plans[(id(elbo), key, id(model), id(guide))] = plan
    recorder.switch(plan.key, target, route)
    return plan
