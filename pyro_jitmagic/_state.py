"""Save what a cell can change, so ``--compare`` can run it twice from the same start.

Restored exactly: the Pyro param store, the random states (torch, CUDA, numpy,
Python), every optimizer an SVI steps with (saved just before its first step,
so optimizers reachable only through closures are covered too), AutoGuide
prototypes built by the first run, and the names the first run bound in the
user's namespace. What cannot be restored, objects mutated in place, is found
by fingerprinting the namespace's containers and tensors, and reported.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

_MISSING = object()


@dataclass
class RandomState:
    torch: Any
    cuda: Any
    numpy: Any
    python: Any

    @classmethod
    def save(cls) -> RandomState:
        import torch

        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        return cls(torch.get_rng_state(), cuda, _numpy_state(), random.getstate())

    def restore(self) -> None:
        import torch

        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        if self.numpy is not None:
            import numpy

            numpy.random.set_state(self.numpy)
        random.setstate(self.python)


def _numpy_state() -> Any:
    try:
        import numpy
    except ImportError:
        return None
    return numpy.random.get_state()


_primed = False


def prime_once() -> float:
    """Pay torch's and Pyro's one-off start-up before the first timed step; the seconds it took.

    The first SVI step in a process takes over a second here (autograd and
    optimizer machinery starting up) whatever the model. Left in, it would be
    billed to the eager half of ``--compare`` and flatter the compiled one.
    A throwaway step on a one-variable model pays it; the param store and the
    random state are left as they were. Later calls cost nothing (and return 0).
    """
    global _primed
    if _primed:
        return 0.0
    start = time.perf_counter()
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam  # type: ignore[attr-defined]  # made at import time by pyro

    site, param = "_pyrojit_prime", "_pyrojit_prime_loc"

    def model() -> None:
        pyro.sample(site, dist.Normal(0.0, 1.0))

    def guide() -> None:
        pyro.sample(site, dist.Normal(pyro.param(param, torch.tensor(0.0)), 1.0))

    rng = RandomState.save()
    store = pyro.get_param_store()
    try:
        SVI(model, guide, Adam({"lr": 0.1}), Trace_ELBO()).step()
    except Exception:  # a courtesy to the timing: never a reason to fail the cell
        pass
    finally:
        if param in store:
            del store[param]
        rng.restore()
    _primed = True
    return time.perf_counter() - start


def seed_everything(seed: int) -> None:
    import pyro

    pyro.set_rng_seed(seed)  # torch, numpy and random together


@dataclass
class _OptimizerState:
    state: dict[str, Any]
    waiting: dict[str, Any]


def _fingerprint(value: Any) -> Any:
    """Something that changes when ``value`` is mutated in place, or None if untracked."""
    import torch

    if torch.is_tensor(value):
        return ("tensor", value._version)
    if isinstance(value, (list, bytearray)):
        return (type(value).__name__, len(value), tuple(id(v) for v in value[:1000]))
    if isinstance(value, dict):
        return ("dict", len(value), tuple((k if isinstance(k, str) else id(k), id(v))
                                          for k, v in list(value.items())[:1000]))
    if isinstance(value, set):
        return ("set", len(value), frozenset(id(v) for v in value))
    return None


@dataclass
class CellState:
    """Everything ``--compare`` puts back between the eager and the compiled run."""

    namespace: MutableMapping[str, Any]
    params: Any = None
    rng: RandomState | None = None
    bindings: dict[str, Any] = field(default_factory=dict)
    fingerprints: dict[str, Any] = field(default_factory=dict)
    optimizers: dict[int, tuple[Any, _OptimizerState]] = field(default_factory=dict)
    guides: dict[int, Any] = field(default_factory=dict)  # AutoGuides whose prototype the run built

    @classmethod
    def save(cls, namespace: MutableMapping[str, Any]) -> CellState:
        import pyro

        state = cls(namespace)
        state.params = copy.deepcopy(pyro.get_param_store().get_state())
        state.rng = RandomState.save()
        state.bindings = dict(namespace)
        for name, value in state.bindings.items():
            if not name.startswith("_"):
                fp = _fingerprint(value)
                if fp is not None:
                    state.fingerprints[name] = fp
        return state

    # called by the run, before an SVI's first step ----------------------------
    def before_first_step(self, svi: Any) -> None:
        optim = svi.optim
        if id(optim) not in self.optimizers:
            self.optimizers[id(optim)] = (optim, _OptimizerState(
                copy.deepcopy(optim.get_state()),
                copy.deepcopy(optim._state_waiting_to_be_consumed)))
        from pyro.infer.autoguide import AutoGuide

        guide = svi.guide
        if isinstance(guide, AutoGuide) and getattr(guide, "prototype_trace", True) is None:
            self.guides[id(guide)] = guide

    # after the first run -------------------------------------------------------
    def mutated(self) -> list[str]:
        """Names whose object the first run changed in place (not restorable)."""
        changed = []
        for name, fp in self.fingerprints.items():
            value = self.namespace.get(name, _MISSING)
            if value is self.bindings.get(name) and _fingerprint(value) != fp:
                changed.append(name)
        return changed

    def restore(self) -> list[str]:
        """Put everything back; returns the names the first run had bound or rebound."""
        import pyro

        rebound = []
        for name in list(self.namespace):
            if name not in self.bindings:
                rebound.append(name)
                del self.namespace[name]
            elif self.namespace[name] is not self.bindings[name]:
                rebound.append(name)
        for name, value in self.bindings.items():
            if self.namespace.get(name, _MISSING) is not value:
                self.namespace[name] = value
        store = pyro.get_param_store()
        store.clear()  # set_state merges into the store (pyro/params/param_store.py)
        store.set_state(copy.deepcopy(self.params))
        for optim, saved in self.optimizers.values():
            # Forget the torch optimizers made for the first run's param
            # tensors; the restored params get new ones, primed from the saved
            # state as Pyro does when loading an optimizer (pyro/optim/optim.py).
            optim.optim_objs.clear()
            getattr(optim, "grad_clip", {}).clear()
            optim._state_waiting_to_be_consumed = copy.deepcopy(saved.waiting)
            optim.set_state(copy.deepcopy(saved.state))
        for guide in self.guides.values():
            guide.prototype_trace = None  # rebuilt, drawing the same numbers, on its next call
        assert self.rng is not None
        self.rng.restore()
        return sorted(n for n in rebound if not n.startswith("_"))
