"""Pyro's JIT, TorchScript's executor and Pyro's own state, reached through their private names.

Each name is listed in :data:`pyro_jitmagic.compat.PRIVATE_NAMES`, beside the release it was
checked against; nothing here imports torch or Pyro until a function is called.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


# -- Pyro's compiled functions (pyro/ops/jit.py, CompiledFunction) -------------------------
def fast_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The key Pyro caches a trace under, when the keyword values are hashable: the common case,
    rebuilt here because it runs on every compiled step (pyro/ops/jit.py, _hashable_args_kwargs)."""
    return len(args), tuple(sorted(kwargs.items()))


def hashed_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Pyro's own key, for keyword values that are not hashable (lists, dicts and
    ``argparse.Namespace`` by value, other objects by id)."""
    from pyro.ops.jit import _hashable_args_kwargs

    return _hashable_args_kwargs(args, kwargs)


def param_names(compiled: Any) -> Any:
    """The params a ``CompiledFunction``'s traces take as inputs, in order (found on its first call)."""
    return compiled._param_names


# -- Pyro's Jit* ELBOs (pyro/infer/trace_elbo.py, traceenum_elbo.py, tracegraph_elbo.py,
#    trace_mean_field_elbo.py) ------------------------------------------------------------
#: The attributes in which a Jit* ELBO keeps its CompiledFunction.
COMPILED_ATTRS = ("_loss_and_surrogate_loss", "_differentiable_loss", "_jit_loss_and_surrogate_loss")


def compiled_function(elbo: Any) -> Any:
    """The ``CompiledFunction`` a Jit* ELBO holds, or None (before its first call)."""
    for attr in COMPILED_ATTRS:
        fn = vars(elbo).get(attr)
        if fn is not None:
            return fn
    return None


def settings_of(elbo: Any) -> dict[str, Any]:
    """An ELBO's own attributes less what it compiled: what a copy of it starts from."""
    return {k: v for k, v in vars(elbo).items() if k not in COMPILED_ATTRS}


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


def bound_model_and_guide(elbo: Any) -> tuple[Any, Any] | None:
    """The (model, guide) a Jit* ELBO's compiled closure was built for.

    Pyro builds the closure on the first call and keeps the model and guide it
    saw, whatever model a later call passes (the reused-ELBO bug): they are the
    closure's free variables ``model`` and ``guide``. None before the first
    call, or when this Pyro keeps them elsewhere.
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


#: TraceGraph_ELBO's decaying-average baseline keeps its running average in params named so
#: (pyro/infer/tracegraph_elbo.py, _construct_baseline).
BASELINE_PARAM_PREFIX = "__baseline_avg_downstream_cost_"


# -- Pyro's HMC/NUTS potentials (pyro/infer/mcmc/util.py, _PEMaker; pyro/infer/mcmc/hmc.py) ---
#: The name of the function Pyro traces for an HMC/NUTS potential.
POTENTIAL_TRACE_NAME = "_pe_jit"
#: The kernel attribute that ``jit_compile=`` sets (patched for one run).
JIT_COMPILE_ATTR = "_jit_compile"


def potential_maker_class() -> type:
    """Pyro's ``_PEMaker``, whose ``get_potential_fn`` builds every potential from a model."""
    from pyro.infer.mcmc.util import _PEMaker

    return _PEMaker


def potential_maker(potential: Any) -> Any:
    """The ``_PEMaker`` behind a potential it built: the compiled one is
    ``partial(maker._potential_fn_jit, ...)``, the eager one the bound method
    ``maker._potential_fn``. None for anything else."""
    bound = getattr(potential, "func", potential)  # a partial's function, or the method itself
    maker = getattr(bound, "__self__", None)
    return maker if hasattr(maker, "get_potential_fn") else None


def is_compiled_potential(potential: Any) -> bool:
    """Whether a potential ``_PEMaker`` built is its compiled one (a partial of ``_potential_fn_jit``)."""
    return getattr(potential, "func", None) is not None


def compiled_potential(maker: Any) -> Any:
    """The trace a ``_PEMaker`` holds for its compiled potential, or None."""
    return getattr(maker, "_compiled_fn", None)


def drop_compiled_potential(maker: Any) -> None:
    """Throw a ``_PEMaker``'s trace away: its next compiled evaluation traces again."""
    maker._compiled_fn = None


def jit_compile(kernel: Any) -> bool:
    """An HMC/NUTS kernel's ``jit_compile=`` setting."""
    return bool(kernel._jit_compile)


def jit_settings(kernel: Any) -> tuple[bool, Any]:
    """An HMC/NUTS kernel's ``ignore_jit_warnings`` and ``jit_options``."""
    return kernel._ignore_jit_warnings, kernel._jit_options


def runs_chains_in_workers(mcmc: Any) -> bool:
    """Whether an MCMC draws its chains in worker processes (pyro/infer/mcmc/api.py, _MultiSampler)."""
    return type(getattr(mcmc, "sampler", None)).__name__ == "_MultiSampler"


# -- Pyro's lazy set-up (pyro/infer/autoguide/guides.py, pyro/infer/elbo.py) --------------
def build_prototype(guide: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Make an AutoGuide build its prototype trace (it runs the model), without a guide sample."""
    guide._setup_prototype(*args, **kwargs)


def guess_max_plate_nesting(elbo: Any, model: Any, guide: Any, args: tuple[Any, ...],
                            kwargs: dict[str, Any]) -> None:
    """Make an ELBO find ``max_plate_nesting`` by running the model and guide once."""
    elbo._guess_max_plate_nesting(model, guide, args, kwargs)


# -- Pyro's optimizers (pyro/optim/optim.py, PyroOptim) ------------------------------------
def waiting_state(optim: Any) -> Any:
    """The state a ``PyroOptim`` loaded and gives each param's optimizer when it first steps it."""
    return optim._state_waiting_to_be_consumed


def restart_optimizer(optim: Any, state: Any, waiting: Any) -> None:
    """Forget a ``PyroOptim``'s per-param torch optimizers and prime new ones from ``state``,
    as Pyro does when it loads an optimizer's state."""
    optim.optim_objs.clear()
    getattr(optim, "grad_clip", {}).clear()
    optim._state_waiting_to_be_consumed = waiting
    optim.set_state(state)


# -- torch's TorchScript executor (torch/csrc/jit/python/init.cpp) -------------------------
#: torch._C functions that --executor sets.
EXECUTOR_FLAGS = ("_get_graph_executor_optimize", "_set_graph_executor_optimize",
                  "_jit_set_profiling_executor", "_jit_set_profiling_mode")


def missing_executor_flags() -> list[str]:
    """The executor settings this torch lacks (``torch._C`` names)."""
    import torch

    return [name for name in EXECUTOR_FLAGS if not callable(getattr(torch._C, name, None))]


def executor_flags() -> list[tuple[Callable[[], Any], Callable[[Any], Any]]]:
    """(get, set) of the graph executor's optimize flag, the profiling executor and the
    profiling mode; the profiling pair has no getter of its own, so its setters (which
    return the old value) read it."""
    import torch

    c = torch._C
    return [(c._get_graph_executor_optimize, c._set_graph_executor_optimize),
            (functools.partial(_read, c._jit_set_profiling_executor), c._jit_set_profiling_executor),
            (functools.partial(_read, c._jit_set_profiling_mode), c._jit_set_profiling_mode)]


def _read(setter: Callable[[bool], bool]) -> bool:
    old = setter(True)
    setter(old)
    return old


def optimize_setter() -> Callable[[bool], Any]:
    """The graph executor's optimize flag, which torch reads when a trace runs and has no optimised
    plan yet (a torch without it: a setter that leaves the executor as it is)."""
    import torch

    setter = getattr(torch._C, "_set_graph_executor_optimize", None)
    return setter if callable(setter) else _leave_as_is


def _leave_as_is(optimize: bool) -> None:
    pass


# -- torch's tracer and tensors ------------------------------------------------------------
def tracing_state() -> Callable[[], Any]:
    """torch's per-thread tracing state getter: None while no trace runs on the calling thread."""
    import torch

    getter: Callable[[], Any] = torch._C._get_tracing_state
    return getter


def tensor_version(tensor: Any) -> int:
    """A tensor's version counter: it moves whenever the tensor is changed in place."""
    return int(tensor._version)


#: The name of a tensor's version counter, for guards that read it in generated code.
VERSION_ATTR = "_version"


# -- Pyro's and torch's modes (pyro/poutine/runtime.py, pyro/infer/util.py, pyro/poutine/util.py,
#    torch/distributions/distribution.py) ------------------------------------------------------
def handler_stack() -> list[Any]:
    """Pyro's stack of active handlers (``poutine.scale``, ``poutine.block``...): the very list,
    innermost last, so that a check of it costs a truth test."""
    from pyro.poutine import runtime

    stack: list[Any] = runtime._PYRO_STACK
    return stack


def validation_getters() -> tuple[Callable[[], bool], ...]:
    """What ``pyro.enable_validation`` sets, each read by a function of Pyro's: its inference checks,
    its handlers' checks, and its distributions' (which set torch's argument validation)."""
    import pyro.distributions.util
    import pyro.infer.util
    import pyro.poutine.util

    return (pyro.infer.util.is_validation_enabled, pyro.poutine.util.is_validation_enabled,
            pyro.distributions.util.is_validation_enabled)


def forget_param(store: Any, name: str) -> None:
    """Remove ``name`` from the param store. A tensor registered under two names (an AutoGuide's
    network, met by ``pyro.module`` twice) is in the store's reverse map once, and Pyro's own removal
    stops half-way on the second name (pyro/params/param_store.py, ``__delitem__``)."""
    try:
        del store[name]
    except KeyError:
        store._constraints.pop(name, None)
