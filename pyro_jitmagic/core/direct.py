"""ELBO losses called directly in a cell, not through ``SVI.step``: caught and compiled.

Much Pyro code trains without SVI: ``loss = elbo.differentiable_loss(model,
guide, data)`` then ``loss.backward()`` and a torch optimizer (Pyro's "custom
objectives"), a ``PyroModule`` trained with a plain ``torch.optim`` loop
through ``Trace_ELBO()(model, guide)``, or ``elbo.loss_and_grads`` and
``elbo.loss`` called by hand. While a run is active, every call of
``differentiable_loss``, ``loss`` and ``loss_and_grads`` of Pyro's ELBO classes
comes to the run (:data:`calls`), which plans it once per ELBO, method, model
and guide (:func:`plan`) and runs it on the same compiled companion that
``SVI.step`` would use.

How calls are caught
--------------------
``SVI.step`` is caught by replacing the class attribute, but a method taken
before the cell (``loss_fn = Trace_ELBO().differentiable_loss`` in a setup
cell) is a bound method that holds Pyro's function object itself and never
looks the class attribute up again. Bound methods cannot be changed
(``__func__`` is read-only) and can sit anywhere (a closure, a list, another
module), so rebinding the user's names would miss them, and would undo a
rebinding that the cell itself makes. What every bound method shares is the
function object, and its code is the one part of a function that Python lets
us replace: for the cell, each of those functions gets the code of a
*trampoline* that hands the call to :data:`calls`, and the original code runs
from a clone of the function. The swap goes through :class:`~._patch.PatchSet`
like every other patch, so it is undone in ``finally``, stack-safe. Tracing
every call instead (``sys.setprofile``) would slow every Python call in the
cell and clash with debuggers and coverage tools.
"""

from __future__ import annotations

import inspect
import math
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeGuard

from ..records.report import LossRun, Step
from . import switch
from .naming import label
from .patch import PatchSet
from .process import PROCESS

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
    return methods


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


# -- planning --------------------------------------------------------------------
@dataclass
class LossPlan:
    """How one ELBO method runs for one (model, guide) in this run, and what its calls did.

    It has what the run's step bookkeeping reads of an SVI's plan: ``target``,
    ``runner``, ``elbo``, ``compiled``, ``raw`` and ``compile_seconds``.
    """

    elbo: Any
    model: Any
    guide: Any
    method: str
    target: str
    elbo_name: str  # as written
    after: str  # as run
    call: Callable[..., Any]  # (model, guide, *args, **kwargs) -> what eager returns
    as_written: Callable[..., Any]  # the same, by Pyro's own method on the user's ELBO
    runner: Any  # the ELBO whose compiled function computes it; None when eager
    compiled: bool
    reason: str = ""
    note: str = ""  # for the report's notes (the reused-ELBO bug avoided)
    raw: list[tuple[float, Any, float]] = field(default_factory=list)
    compile_seconds: float = 0.0  # of the call in progress
    # (random state, param names, warnings captured) before its first compile, until one succeeds
    start: tuple[Any, set[str], Any] | None = None
    compiled_once: bool = False
    diverges: str = ""  # why its compiled calls' random draws part from eager's

    def holds(self, elbo: Any, model: Any, guide: Any) -> bool:
        return self.elbo is elbo and self.model is model and self.guide is guide

    def record(self) -> LossRun:
        return LossRun(
            target=self.target, method=self.method, model=label(self.model), guide=label(self.guide),
            elbo=self.after,
            calls=tuple(Step(seconds, loss, self.compiled, compiled) for seconds, loss, compiled in self.raw),
            diverges=self.diverges)


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


def plan(key: str, elbo: Any, model: Any, guide: Any, *, target: str, compile: bool,
         can_trace: bool, session: Any, args: tuple[Any, ...] = ()) -> LossPlan:
    """Decide how a direct call of ``key`` on ``elbo`` with this model and guide runs."""
    method = PROCESS.loss_methods[key].method
    elbo_name = type(elbo).__name__
    as_written = partial(PROCESS.loss_methods[key].original, elbo)

    def eager(reason: str) -> LossPlan:
        return LossPlan(elbo, model, guide, method, target, elbo_name, elbo_name, as_written, as_written,
                        runner=None, compiled=False, reason=reason)

    if not compile:
        return eager("run as written")
    if not can_trace:
        return eager("torch.jit.trace is not available in this torch")
    if method == "loss":
        import torch

        for position, value in enumerate(args, start=1):
            if not torch.is_tensor(value):
                # as Pyro's examples call it (hmm.py: elbo.loss(model, guide, sequences, lengths, args))
                return eager(f"positional argument {position} is a {type(value).__name__}, which a trace "
                             "cannot take; Pyro's Jit* ELBOs compute loss eagerly, so it ran as written")
    jit_class = next((c for c in switch.jit_classes() if isinstance(elbo, c)), None)
    if jit_class is not None:
        if method not in _compiled_methods(jit_class):
            return eager(f"Pyro's {jit_class.__name__} computes {method} eagerly: it compiles "
                         f"{' and '.join(_compiled_methods(jit_class))}")
        runner, reason, note = elbo, "already compiled as written", ""
        bound = switch.bound_model_and_guide(elbo)
        if bound is not None and (bound[0] is not model or bound[1] is not guide):
            # Pyro would silently compute the loss of the model this ELBO first
            # compiled; run this pair on its own compiled copy instead.
            runner, _ = session.companion(elbo, model, guide, switch.fresh_copy)
            reason = (f"this {elbo_name} was first compiled for {label(bound[0])}; Pyro would silently "
                      f"return that model's loss for {label(model)}, so {label(model)} ran on its own "
                      "compiled copy")
            note = f"{target}: {reason}"
        elif (jit_class.__name__, method) == ("JitTrace_ELBO", "differentiable_loss"):
            note = (f"{target}: Pyro's JitTrace_ELBO.differentiable_loss does not give eager "
                    "Trace_ELBO's gradient (twice it, for a reparameterized guide); use a Trace_ELBO "
                    "and %%pyrojit compiles it with eager's gradient")
        return LossPlan(elbo, model, guide, method, target, elbo_name, elbo_name,
                        partial(PROCESS.loss_methods[key].original, runner), as_written, runner=runner,
                        compiled=True, reason=reason, note=note)
    failed = session.cannot_compile(elbo)
    if failed is not None:  # in an earlier cell, on a limit of Pyro's JIT
        return eager(failed)
    jit = switch.counterpart(elbo)
    if jit is None:
        return eager(switch.why_eager(elbo))
    compute = _COMPANION_CALLS.get((elbo_name, method))
    if compute is None:
        return eager(f"Pyro's {jit.__name__} compiles only {' and '.join(_compiled_methods(jit))}")
    runner, _ = session.companion(elbo, model, guide, switch.make_companion)
    return LossPlan(elbo, model, guide, method, target, elbo_name, jit.__name__,
                    partial(compute, runner), as_written, runner=runner, compiled=True)


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
