"""Which ELBO has a compiled counterpart in Pyro, and how to build it.

The switch is made on a *companion*: a ``JitTrace_ELBO`` built with the settings of the user's
``Trace_ELBO``. The user's ELBO is never modified, so it behaves as written outside ``%%pyrojit``;
the companion and its traces are kept by the :class:`~pyro_jitmagic.run.session.Session` for the
next compiled cell.
"""

from __future__ import annotations

import copy
from typing import Any

from ...compat import jit as compat

# Pyro's own eager -> compiled pairs (pyro/infer/__init__.py).
_COUNTERPARTS = {
    "Trace_ELBO": "JitTrace_ELBO",
    "TraceGraph_ELBO": "JitTraceGraph_ELBO",
    "TraceEnum_ELBO": "JitTraceEnum_ELBO",
    "TraceMeanField_ELBO": "JitTraceMeanField_ELBO",
}


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
    state = compat.settings_of(elbo)
    # Pyro mutates jit_options while compiling (pyro/ops/jit.py pops
    # "time_compilation", sets "check_trace"); keep the user's dict as written.
    if state.get("jit_options") is not None:
        state["jit_options"] = copy.copy(state["jit_options"])
    vars(copy_).update(state)
    return copy_


def cannot_compile(elbo: Any, exc: BaseException, param_names: Any) -> str | None:
    """Why compiling ``elbo`` failed with ``exc``, when it is a limit of Pyro's JIT itself (its
    ``Jit*`` ELBO fails the same way by hand); None for failures the user can fix."""
    from pyro.infer import TraceGraph_ELBO

    if (isinstance(elbo, TraceGraph_ELBO) and "requires grad as a constant" in str(exc)
            and any(name.startswith(compat.BASELINE_PARAM_PREFIX) for name in param_names)):
        # pyro/infer/tracegraph_elbo.py, _construct_baseline: the running average is written to
        # the param store inside the loss, which a trace cannot do
        return ("TraceGraph_ELBO with a decaying-average baseline writes its running average to the "
                "param store inside the loss, which Pyro's JIT cannot trace (JitTraceGraph_ELBO fails "
                "on it too)")
    if "requires grad as a constant" in str(exc):
        # torch.jit.trace refuses a tensor that requires grad and is no input: a module's parameter
        # used without pyro.module, a tensor made with requires_grad=True outside the model
        return ("the model or guide uses a tensor that requires grad and is no Pyro param (a module "
                "used without pyro.module?), which Pyro's JIT cannot trace (its Jit* ELBOs fail on it "
                "too); register it with pyro.module or pyro.param to compile it")
    if isinstance(exc, AssertionError) and _raised_in_pyro_jit(exc):
        # pyro/ops/jit.py, CompiledFunction asserts that it traces the param store's own tensors
        if (getattr(elbo, "jit_options", None) or {}).get("check_trace"):
            # torch's check_trace re-runs the trace on copies of them
            return ("jit_options={'check_trace': True} cannot work with Pyro's compiled ELBOs (torch "
                    "re-runs the trace on copies of the params, which Pyro rejects): remove check_trace "
                    "to compile it; %%pyrojit names the risky lines of a trace anyway")
        # a param whose constrained value is not the one its unconstrained tensor gives (the networks
        # of AutoIAFNormal, registered under two names)
        return ("a param's constrained value is not made from its unconstrained tensor as Pyro's JIT "
                "assumes (pyro/ops/jit.py; its Jit* ELBOs fail on it too)")
    return None


def _raised_in_pyro_jit(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.replace("\\", "/").endswith("pyro/ops/jit.py"):
            return True
        tb = tb.tb_next
    return False
