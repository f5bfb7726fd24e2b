"""What Pyro's JIT keeps compiled, for the cache inspector: live ``Jit*`` ELBOs and HMC/NUTS potentials.

They are found by walking the garbage collector's objects, so hand-built ``Jit*`` ELBOs appear
too. What runs recorded of them (compile time, hits) comes from the session's
:class:`~...run.cache_stats.CacheStats`, and is unknown for the rest.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Mapping
from typing import Any

from ...compat import jit as compat
from ...records.cache import CachedFunction, CacheEntry
from ...run.naming import label, name_in
from ...run.session import Session
from . import elbos
from .mcmc import potential_maker


def describe_key(key: Any) -> str:
    try:
        count, items = key
        parts = [f"{count} positional arg{'s' if count != 1 else ''}"]
        parts += [f"{k}={_short(v)}" for k, v in items if not k.startswith("_")]
        return ", ".join(parts)
    except (TypeError, ValueError):
        return repr(key)


def _short(value: Any) -> str:
    import torch

    if torch.is_tensor(value):
        return f"tensor{tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def changing_keyword(previous: Any, new: Any, kwargs: Mapping[str, Any]) -> str:
    """Why a new key was made, and what to do, in one sentence."""
    import torch

    if previous is None or new is None:
        return "a keyword value changes between calls: make it a fixed setting"
    before, after = dict(previous[1]), dict(new[1])
    changed = [k for k in after if not k.startswith("_") and not _same(before.get(k, _MISSING), after[k])]
    if previous[0] != new[0]:
        return (f"the number of positional arguments changes ({previous[0]} then {new[0]}): "
                "pass the same arguments on every call")
    if not changed:
        return "a keyword value changes between calls: make it a fixed setting"
    name = changed[0]
    value = kwargs.get(name)
    if torch.is_tensor(value):
        return (f"keyword argument {name} is a new tensor on each call, and Pyro keys a trace on "
                f"keyword values: pass {name} positionally (as a tensor argument)")
    if isinstance(value, float):
        return (f"keyword argument {name}={value!r} changes between calls: make it a fixed "
                f"setting, or pass it as a tensor positionally")
    if isinstance(value, int):
        return (f"keyword argument {name}={value!r} changes between calls: bucket or pad it to a "
                "few values (e.g. sequence lengths rounded up), so that few traces are needed")
    return (f"keyword argument {name} changes between calls: make its value a fixed setting, "
            "or pass it as a tensor positionally")


_MISSING = object()


def _layout(layout: Any) -> str:
    if isinstance(layout, tuple):
        return f"a tensor of shape {tuple(layout[0])}, {layout[1]}, strides {layout[2]}"
    return f"a {layout.__name__}"


def _same(a: Any, b: Any) -> bool:
    """Whether two keyword values key the same trace (a tensor by identity, as Pyro hashes it)."""
    import torch

    if a is b:
        return True
    if torch.is_tensor(a) or torch.is_tensor(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # a value whose == is not a truth
        return False


def _user_of(namespace: Mapping[str, Any], elbo: Any, attribute: str) -> str | None:
    """The name of a namespace object (an SVI, an MCMC, a bound method) that uses ``elbo``."""
    for name, value in list(namespace.items()):
        if name.startswith("_"):
            continue
        held = getattr(value, attribute, None)
        if held is elbo or getattr(held, "__self__", None) is elbo:
            return name
    return None


def _elbo_name(namespace: Mapping[str, Any], elbo: Any) -> str:
    """An ELBO as the user holds it: by name, through an SVI, a bound loss method
    (``loss_fn = elbo.differentiable_loss``) or an ``ELBOModule``; else by address."""
    return (name_in(namespace, elbo) or _user_of(namespace, elbo, "loss_and_grads")
            or _user_of(namespace, elbo, "__self__") or _user_of(namespace, elbo, "elbo")
            or f"{type(elbo).__name__} at {id(elbo):#x}")


def _graph(traced: Any) -> tuple[int, str, tuple[str, ...]]:
    try:
        graph = traced.graph
        nodes = sum(1 for _ in graph.nodes())
        shapes = []
        for value in graph.inputs():
            sizes = getattr(value.type(), "sizes", lambda: None)()
            shapes.append(str(tuple(sizes)) if sizes is not None else str(value.type()))
        code = traced.code
    except (AttributeError, RuntimeError):
        return 0, "", ()
    return nodes, code, tuple(shapes)


def _live_objects() -> list[Any]:
    """Every live Jit* ELBO and HMC/NUTS kernel in the process."""
    from pyro.infer.mcmc import HMC

    jit = elbos.jit_classes()
    objects = gc.get_objects()
    # Classify each distinct type once: an isinstance() per object costs
    # several ABC subclass checks (ELBO and MCMCKernel are ABCs), which over a
    # session's few hundred thousand objects takes most of a second. And
    # type(), not isinstance(): some objects (torch's deprecated aliases) warn
    # when their __class__ is looked up.
    wanted = {cls for cls in {type(obj) for obj in objects} if issubclass(cls, (*jit, HMC))}
    return [obj for obj in objects if type(obj) in wanted]


class PyroCaches:
    """The compiled functions of Pyro's JIT alive in the process; clears them by ident."""

    def __init__(self, session: Session) -> None:
        self.stats = session.cache
        # asked at each look, never kept: a displayed inspector (its buttons hold this
        # object) must not keep the user's ELBOs alive
        self._companions = session.companions
        # weak: a displayed inspector must not keep traces alive either
        self._live: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()

    def _owner(self, namespace: Mapping[str, Any], elbo: Any, owner_of: Mapping[int, Any]) -> str:
        user_elbo = owner_of.get(id(elbo))
        if user_elbo is not None:
            who = _elbo_name(namespace, user_elbo)
            return f"{who} ({type(user_elbo).__name__}, compiled by %%pyrojit as {type(elbo).__name__})"
        return f"{_elbo_name(namespace, elbo)} ({type(elbo).__name__})"

    def cached(self, namespace: Mapping[str, Any], objects: list[Any] | None = None) -> list[CachedFunction]:
        """The compiled functions of ``objects`` (Jit* ELBOs, HMC/NUTS kernels), by default of
        every live object in the process."""
        from pyro.infer.mcmc import HMC

        if objects is None:
            objects = _live_objects()
        jit = elbos.jit_classes()
        self._live = weakref.WeakValueDictionary()
        owner_of = {id(c): e for e, _m, _g, c in self._companions()}  # companion -> user's ELBO
        functions = [self._elbo_function(namespace, obj, owner_of) for obj in objects if isinstance(obj, jit)]
        functions += [self._potential_function(namespace, obj) for obj in objects if isinstance(obj, HMC)]
        return [f for f in functions if f is not None]

    def _entry(self, stats: Any, key: Any, traced: Any, describe: str) -> CacheEntry:
        known = stats.entries.get(key) if stats is not None else None
        nodes, code, shapes = self.stats.graph(traced, _graph)
        guards = known.guards.described() if known is not None and known.guards is not None else ()
        if known is not None and known.layout is not None:
            guards += tuple(f"positional argument {i} == {_layout(layout)}"
                            for i, layout in enumerate(known.layout, start=1))
        return CacheEntry(key=describe, compile_seconds=known.compile_seconds if known else None,
                          hits=known.hits if known else None, last_hit=known.last_hit if known else None,
                          input_shapes=shapes, graph_nodes=nodes, code=code, guards=guards)

    def _elbo_function(self, namespace: Mapping[str, Any], elbo: Any,
                       owner_of: Mapping[int, Any]) -> CachedFunction | None:
        compiled = compat.compiled_function(elbo)
        if compiled is None or not compiled.compiled:
            return None
        self._live[id(compiled)] = compiled
        bound = compat.bound_model_and_guide(elbo)
        serves = f"model={label(bound[0])}, guide={label(bound[1])}" if bound else ""
        stats = self.stats.known(compiled)
        entries = tuple(self._entry(stats, key, traced, describe_key(key))
                        for key, traced in list(compiled.compiled.items()))
        return CachedFunction(id(compiled), self._owner(namespace, elbo, owner_of), "ELBO", serves, entries)

    def _potential_function(self, namespace: Mapping[str, Any], kernel: Any) -> CachedFunction | None:
        maker = potential_maker(getattr(kernel, "potential_fn", None))
        traced = compat.compiled_potential(maker)
        if traced is None:
            return None
        self._live[id(maker)] = maker
        who = (name_in(namespace, kernel) or _user_of(namespace, kernel, "kernel")
               or f"{type(kernel).__name__} at {id(kernel):#x}")
        sites = ", ".join(sorted(getattr(kernel, "initial_params", {}) or {}))
        entry = self._entry(self.stats.known(maker), "potential", traced,
                            f"potential energy of {sites}" if sites else "potential energy")
        return CachedFunction(id(maker), f"{who} ({type(kernel).__name__})", "potential",
                              f"model={label(kernel.model)}", (entry,))

    def clear(self, ident: int | None = None) -> int:
        """Drop the traces of one function (by ``CachedFunction.ident``) or all; how many were dropped."""
        dropped = 0
        for key in [ident] if ident is not None else list(self._live):
            obj = self._live.pop(key, None)
            if obj is None:
                continue
            if hasattr(obj, "compiled"):  # pyro.ops.jit.CompiledFunction
                dropped += len(obj.compiled)
                obj.compiled.clear()
            else:  # an HMC/NUTS potential
                dropped += 1
                compat.drop_compiled_potential(obj)
            stats = self.stats.known(obj)
            if stats is not None:
                stats.entries.clear()
        return dropped
