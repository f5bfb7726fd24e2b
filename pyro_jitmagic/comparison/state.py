"""Save what a cell can change, so ``--compare`` can run it twice from the same start.

Values go back *into the same objects*, so every reference the user holds (a network, a param
taken out of the store, an optimizer) sees the restored state. What is restored: the param store,
every network the namespace reaches, the params and optimizers the first run touches, the
namespace's learning-rate schedulers, each SVI's Pyro optimizer, AutoGuide prototypes and the
random states. A param the first run registers leaves the store again, so the second run registers
it as the first did, and the names the first run binds are discarded. An object changed in place
that was not found before the run cannot be put back: fingerprints find it, and the panel names it.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import types
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..compat import jit as compat
from ..patch import PatchSet
from ..run.seeds import RandomState

_MISSING = object()

# How far the namespace is followed to find networks and optimizers: a name's
# value, then its attributes, list items and closure cells, twice more (an SVI's
# model is a bound method of a module; a VAE holds its encoder).
_REACH = 3
_REACH_ITEMS = 100  # items looked at in one list or dict


class TensorValues:
    """The values (and gradients) of tensors a run may change in place, to put back into the same objects."""

    def __init__(self) -> None:
        self._saved: dict[int, tuple[Any, Any, Any]] = {}

    def __contains__(self, tensor: Any) -> bool:
        return id(tensor) in self._saved

    def __len__(self) -> int:
        return len(self._saved)

    def add(self, tensor: Any) -> None:
        """Remember ``tensor``'s value now (the first time only: that is the value before the run)."""
        if id(tensor) not in self._saved:
            grad = tensor.grad if tensor.is_leaf else None
            self._saved[id(tensor)] = (tensor, tensor.detach().clone(),
                                       None if grad is None else grad.detach().clone())

    def add_module(self, module: Any) -> None:
        for tensor in module.parameters():
            self.add(tensor)
        for tensor in module.buffers():
            self.add(tensor)

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for tensor, value, grad in self._saved.values():
                if tensor.shape != value.shape:  # resized by the run: give it its old storage back
                    tensor.set_(value.clone())
                else:
                    tensor.copy_(value)
                if tensor.is_leaf and tensor.requires_grad:
                    tensor.grad = None if grad is None else grad.clone()


def _reachable(namespace: MutableMapping[str, Any]) -> tuple[list[Any], list[Any]]:
    """The ``nn.Module``\\ s and learning-rate schedulers the namespace reaches."""
    import torch

    modules: list[Any] = []
    schedulers: list[Any] = []
    seen: set[int] = set()
    scheduler_type = getattr(torch.optim.lr_scheduler, "LRScheduler", None)

    def visit(value: Any, reach: int) -> None:
        if id(value) in seen or isinstance(value, (type, types.ModuleType, str, bytes, int, float)):
            return
        seen.add(id(value))
        if isinstance(value, torch.nn.Module):
            modules.append(value)  # its submodules come with its parameters() and buffers()
            return
        if scheduler_type is not None and isinstance(value, scheduler_type):
            schedulers.append(value)
            return
        if reach == 0 or torch.is_tensor(value):
            return
        if inspect.ismethod(value):
            visit(value.__self__, reach)
        elif inspect.isfunction(value):
            for cell in value.__closure__ or ():
                with contextlib.suppress(ValueError):  # an empty cell
                    visit(cell.cell_contents, reach - 1)
        elif isinstance(value, (list, tuple)):
            for item in value[:_REACH_ITEMS]:
                visit(item, reach - 1)
        elif isinstance(value, dict):
            for item in list(value.values())[:_REACH_ITEMS]:
                visit(item, reach - 1)
        else:
            attributes = getattr(value, "__dict__", None)
            if isinstance(attributes, dict):
                for item in list(attributes.values())[:_REACH_ITEMS]:
                    visit(item, reach - 1)

    for name, value in list(namespace.items()):
        if not name.startswith("_"):
            visit(value, _REACH)
    return modules, schedulers


@dataclass
class _OptimizerState:
    state: dict[str, Any]
    waiting: dict[str, Any]


def _fingerprint(value: Any) -> Any:
    """Something that changes when ``value`` is mutated in place, or None if untracked."""
    import torch

    if torch.is_tensor(value):
        return ("tensor", compat.tensor_version(value))
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
    params: dict[str, Any] = field(default_factory=dict)  # the store's tensors, by name
    constraints: dict[str, Any] = field(default_factory=dict)
    values: TensorValues = field(default_factory=TensorValues)
    modules: int = 0
    schedulers: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)
    torch_optimizers: dict[int, tuple[Any, dict[str, Any]]] = field(default_factory=dict)
    rng: RandomState | None = None
    bindings: dict[str, Any] = field(default_factory=dict)
    fingerprints: dict[str, Any] = field(default_factory=dict)
    optimizers: dict[int, tuple[Any, _OptimizerState]] = field(default_factory=dict)  # Pyro's
    # AutoGuides whose prototype the run built: (the guide, its own attributes before the run)
    guides: dict[int, tuple[Any, dict[str, Any]]] = field(default_factory=dict)
    kernels: dict[int, tuple[Any, dict[str, Any]]] = field(default_factory=dict)  # MCMC kernels' state
    new_params: dict[str, Any] = field(default_factory=dict)  # entered the store during the run

    @classmethod
    def save(cls, namespace: MutableMapping[str, Any]) -> CellState:
        import pyro

        state = cls(namespace)
        store = pyro.get_param_store().get_state()
        state.params = dict(store["params"])
        state.constraints = dict(store["constraints"])
        for tensor in state.params.values():
            state.values.add(tensor)
        modules, schedulers = _reachable(namespace)
        for module in modules:
            state.values.add_module(module)
        state.modules = len(modules)
        state.schedulers = [(s, copy.deepcopy(s.state_dict())) for s in schedulers]
        state.rng = RandomState.save()
        state.bindings = dict(namespace)
        for name, value in state.bindings.items():
            if not name.startswith("_"):
                fp = _fingerprint(value)
                if fp is not None:
                    state.fingerprints[name] = fp
        return state

    @contextmanager
    def watching(self) -> Iterator[None]:
        """While the first run runs: note params entering the store, and optimizers before they step."""
        from pyro.params.param_store import ParamStoreDict
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        def before_optimizer_step(optimizer: Any, args: Any, kwargs: Any) -> None:
            if id(optimizer) not in self.torch_optimizers:
                self.torch_optimizers[id(optimizer)] = (optimizer, copy.deepcopy(optimizer.state_dict()))
                for group in optimizer.param_groups:
                    for tensor in group["params"]:
                        self.values.add(tensor)

        setitem = ParamStoreDict.__setitem__
        new_params = self.new_params

        def note_new_param(store: Any, name: str, value: Any) -> None:
            setitem(store, name, value)
            if name not in new_params and name not in self.params:
                # (not get_state(): it drops the weak references Pyro's SVI.step reads mid-step)
                tensor = dict(store.named_parameters())[name]
                new_params[name] = tensor
                self.values.add(tensor)

        patches = PatchSet()
        hook = register_optimizer_step_pre_hook(before_optimizer_step)
        try:
            patches.set(ParamStoreDict, "__setitem__", note_new_param)
            yield
        finally:
            hook.remove()
            patches.restore()

    # called by the run, before an SVI's first step or an MCMC run ---------------
    def before_first_use(self, obj: Any) -> None:
        """Save what the run will change of an SVI or MCMC object met for the first time."""
        from pyro.infer.mcmc import MCMC

        if isinstance(obj, MCMC):
            self._before_mcmc(obj.kernel)
        else:
            self._before_svi(obj)

    def _before_mcmc(self, kernel: Any) -> None:
        # A kernel's setup leaves its potential, initial params and adapted step size and mass
        # matrix on it (pyro/infer/mcmc/hmc.py), and the next run starts from them.
        if id(kernel) not in self.kernels:
            self.kernels[id(kernel)] = (kernel, {name: _copy(value) for name, value in vars(kernel).items()})

    def _before_svi(self, svi: Any) -> None:
        optim = svi.optim
        if id(optim) not in self.optimizers:
            self.optimizers[id(optim)] = (optim, _OptimizerState(
                copy.deepcopy(optim.get_state()),
                copy.deepcopy(compat.waiting_state(optim))))
        from pyro.infer.autoguide import AutoGuide

        guide = svi.guide
        if isinstance(guide, AutoGuide) and getattr(guide, "prototype_trace", True) is None:
            self.guides[id(guide)] = (guide, _attributes(guide))

    # after the first run -------------------------------------------------------
    def mutated(self) -> list[str]:
        """What the first run changed in place that cannot be put back: names, and params
        that entered the store from a network the namespace does not reach."""
        import pyro

        changed = []
        for name, fp in self.fingerprints.items():
            value = self.namespace.get(name, _MISSING)
            if value is self.bindings.get(name) and _fingerprint(value) != fp:
                changed.append(f"{name} (a tensor)" if fp[0] == "tensor" else name)
        store = dict(pyro.get_param_store().named_parameters())
        for name in sorted(store.keys() - self.params.keys()):
            if store[name] not in self.values:
                changed.append(f"param {name!r} (its network was not found before the run)")
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
        self.values.restore()
        store = pyro.get_param_store()
        store.clear()  # set_state merges into the store (pyro/params/param_store.py)
        # the same tensor objects: a network registered with pyro.module holds them too
        store.set_state({"params": dict(self.params), "constraints": dict(self.constraints)})
        # Pyro's optimizers make a torch optimizer per param; they are forgotten below
        pyro_owned = {id(o) for optim, _ in self.optimizers.values() for o in optim.optim_objs.values()}
        for key, (optimizer, saved) in list(self.torch_optimizers.items()):
            if key in pyro_owned:
                del self.torch_optimizers[key]
            else:
                optimizer.load_state_dict(copy.deepcopy(saved))
        for scheduler, saved in self.schedulers:
            scheduler.load_state_dict(copy.deepcopy(saved))
        for optim, pyro_saved in self.optimizers.values():
            # Forget the torch optimizers made for the first run's param
            # tensors; the restored params get new ones, primed from the saved
            # state as Pyro does when loading an optimizer (pyro/optim/optim.py).
            compat.restart_optimizer(optim, copy.deepcopy(pyro_saved.state),
                                     copy.deepcopy(pyro_saved.waiting))
        for guide, attributes in self.guides.values():
            # as it was: no prototype, and none of what building one made (AutoIAFNormal's network,
            # trained by the first run), so that its next call builds them again, drawing the same
            # numbers
            vars(guide).clear()
            vars(guide).update(_attributes(attributes))
        for kernel, saved in self.kernels.values():
            vars(kernel).clear()
            vars(kernel).update({name: _copy(value) for name, value in saved.items()})
        assert self.rng is not None
        self.rng.restore()
        return sorted(n for n in rebound if not n.startswith("_"))

    def restored(self) -> list[str]:
        """What :meth:`restore` put back, in words, for the comparison's Changes."""
        done = ["Pyro param store (in place)", "random state (torch, numpy, random)"]
        if self.modules:
            done.append(f"weights and buffers of {_count(self.modules, 'network')} (in place)")
        if self.new_params:
            done.append(f"{_count(len(self.new_params), 'param')} the eager run created (their tensors' "
                        "values in place, then out of the store)")
        if self.torch_optimizers:
            done.append(f"state of {_count(len(self.torch_optimizers), 'torch optimizer')}")
        if self.schedulers:
            done.append(_count(len(self.schedulers), "learning-rate scheduler"))
        if self.optimizers:
            done.append(f"optimizer state of {len(self.optimizers)} SVI")
        if self.kernels:
            done.append(f"state of {_count(len(self.kernels), 'MCMC kernel')} (step size, mass matrix, "
                        "initial params)")
        return done


def _attributes(obj: Any) -> dict[str, Any]:
    """``obj``'s own attributes, with the dicts a module keeps its parts in copied (its submodules,
    params and buffers are registered there)."""
    held = obj if isinstance(obj, dict) else vars(obj)
    return {name: dict(value) if isinstance(value, dict) else value for name, value in held.items()}


def _copy(value: Any) -> Any:
    """A copy that a run cannot change in place, or the value itself when it cannot be copied."""
    try:
        return copy.deepcopy(value)
    except Exception:  # a lock, a generator: the run replaces such things rather than changing them
        return value


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
