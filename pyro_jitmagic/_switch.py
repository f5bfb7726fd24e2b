"""Which inference has a compiled counterpart in Pyro, and how to build it.

The switch is made on a *companion* object: a ``JitTrace_ELBO`` built with the
settings of the user's ``Trace_ELBO``. The user's ELBO is never modified, so it
behaves as written outside ``%%pyrojit``, while the companion (and the traces it
compiled) is kept by the :class:`~pyro_jitmagic._session.Session` for the next
compiled cell.
"""

from __future__ import annotations

import copy
from typing import Any

# Pyro's own eager -> compiled pairs (pyro/infer/__init__.py).
_COUNTERPARTS = {
    "Trace_ELBO": "JitTrace_ELBO",
    "TraceGraph_ELBO": "JitTraceGraph_ELBO",
    "TraceEnum_ELBO": "JitTraceEnum_ELBO",
    "TraceMeanField_ELBO": "JitTraceMeanField_ELBO",
}

# Attributes in which Pyro's Jit* ELBOs keep their compiled function
# (pyro/infer/trace_elbo.py, traceenum_elbo.py, tracegraph_elbo.py,
# trace_mean_field_elbo.py, Pyro 1.9).
COMPILED_ATTRS = ("_loss_and_surrogate_loss", "_differentiable_loss", "_jit_loss_and_surrogate_loss")


def _infer() -> Any:
    import pyro.infer

    return pyro.infer


def jit_classes() -> tuple[type, ...]:
    infer = _infer()
    return tuple(getattr(infer, name) for name in _COUNTERPARTS.values())


def counterpart(elbo: Any) -> type | None:
    """The Jit* class for ``elbo``'s exact class, or None."""
    name = _COUNTERPARTS.get(type(elbo).__name__)
    if name is None:
        return None
    infer = _infer()
    eager = getattr(infer, type(elbo).__name__, None)
    if eager is not type(elbo):  # a user class that happens to share the name
        return None
    return getattr(infer, name, None)


def why_eager(loss: Any) -> str:
    """One sentence saying why ``loss`` cannot run compiled."""
    from pyro.infer import ELBO

    if not isinstance(loss, ELBO):
        return "a custom loss function: Pyro compiles only its ELBO classes"
    name = type(loss).__name__
    for eager in _COUNTERPARTS:
        base = getattr(_infer(), eager)
        if isinstance(loss, base):
            return (f"{name} subclasses {eager}; switching it to Jit{eager} "
                    "would drop its overrides")
    return f"{name} has no JIT counterpart in Pyro"


def make_companion(elbo: Any) -> Any:
    """A Jit* ELBO with every setting of ``elbo`` (num_particles, max_plate_nesting...)."""
    cls = counterpart(elbo)
    assert cls is not None
    return fresh_copy(elbo, cls)


def fresh_copy(elbo: Any, cls: type | None = None) -> Any:
    """A new ``cls`` ELBO (default: ``elbo``'s class) with ``elbo``'s settings, nothing compiled."""
    copy_: Any = object.__new__(cls or type(elbo))
    state = {k: v for k, v in vars(elbo).items() if k not in COMPILED_ATTRS}
    # Pyro mutates jit_options while compiling (pyro/ops/jit.py pops
    # "time_compilation", sets "check_trace"); keep the user's dict as written.
    if state.get("jit_options") is not None:
        state["jit_options"] = copy.copy(state["jit_options"])
    vars(copy_).update(state)
    return copy_


def repair_retracing(elbo: Any) -> bool:
    """Make a JitTraceMeanField_ELBO reuse its trace; True if it needed it.

    Pyro 1.9's ``JitTraceMeanField_ELBO.differentiable_loss`` tests for
    ``_loss_and_surrogate_loss`` but stores its compiled function as
    ``_differentiable_loss``, so it builds a new one, and traces again, on
    every step. Pointing the tested name at the stored function, after the
    first step has built it, makes later steps reuse the trace.
    """
    state = vars(elbo)
    if type(elbo).__name__ != "JitTraceMeanField_ELBO" or "_loss_and_surrogate_loss" in state:
        return False
    if "_differentiable_loss" not in state:
        return False
    elbo._loss_and_surrogate_loss = state["_differentiable_loss"]
    return True


def compiled_function(elbo: Any) -> Any:
    """The ``pyro.ops.jit.CompiledFunction`` a Jit* ELBO holds, or None."""
    for attr in COMPILED_ATTRS:
        fn = vars(elbo).get(attr)
        if fn is not None:
            return fn
    return None


def bound_model_and_guide(elbo: Any) -> tuple[Any, Any] | None:
    """The (model, guide) a Jit* ELBO's compiled closure was built for.

    Pyro builds the closure on the first call and keeps the model and guide it
    saw, whatever model a later call passes (the reused-ELBO bug). Returns None
    before the first call, or when this Pyro keeps them elsewhere.
    """
    fn = compiled_function(elbo)
    inner = getattr(fn, "fn", None)
    code = getattr(inner, "__code__", None)
    closure = getattr(inner, "__closure__", None)
    if code is None or closure is None:
        return None
    cells = dict(zip(code.co_freevars, closure, strict=True))
    if "model" not in cells or "guide" not in cells:
        return None
    return cells["model"].cell_contents, cells["guide"].cell_contents


def cannot_compile(elbo: Any, exc: BaseException, param_names: Any) -> str | None:
    """Why compiling ``elbo`` failed with ``exc``, when it is a limit of Pyro's JIT itself (its
    ``Jit*`` ELBO fails the same way by hand); None for failures the user can fix."""
    from pyro.infer import TraceGraph_ELBO

    if (isinstance(elbo, TraceGraph_ELBO) and "requires grad as a constant" in str(exc)
            and any(name.startswith("__baseline_avg_downstream_cost_") for name in param_names)):
        # pyro/infer/tracegraph_elbo.py, _construct_baseline: the running average is written to
        # the param store inside the loss, which a trace cannot do
        return ("TraceGraph_ELBO with a decaying-average baseline writes its running average to the "
                "param store inside the loss, which Pyro's JIT cannot trace (JitTraceGraph_ELBO fails "
                "on it too)")
    return None
