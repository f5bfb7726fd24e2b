"""A potential's graph and its trajectory's, kept for the next run of the same model on the same data.

Each NUTS or HMC run captures its potential and its trajectory afresh: the model's Python traced
twice, as long as many of Pyro's JIT iterations of a small model (docs/benchmarks.md, The whole
step). A cell run again with the same model, data and settings would capture the same graphs. So
:func:`freeze` says what a captured potential froze besides its inputs: the model, its arguments
(a tensor by its data and version), the transforms, the trace's settings, the param store, the
latent sites' shapes; and :func:`world_guards`, what the model reads from globals and closures and
Pyro's and torch's modes, as guards. A :class:`Kept` holds the graphs with both; a later run whose
potential froze the same, and whose guards hold, runs on them (:meth:`Kept.potential_for`,
:meth:`Kept.trajectory_for`), its sentinel checking them afresh. A potential of the user's own
(``NUTS(potential_fn=...)``) is captured each run: nothing says what it froze.
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass
from typing import Any

from ..compat import capture as compat
from ..compat import jit as jit_compat
from ..guards import GuardBuilder, Guards, read_world
from .backends import Codegen


@dataclass(frozen=True, eq=False)
class Frozen:
    """What a captured potential holds as constants: equal for two potentials that compute the same
    function of the latent values (:meth:`same`)."""

    model: Any                  # a weak reference to the model
    args: tuple[Any, ...]       # as _described() describes them
    kwargs: tuple[tuple[str, Any], ...]
    transforms: tuple[tuple[str, Any], ...]
    settings: tuple[Any, ...]   # Pyro's handlers around the model; its trace's evaluator and settings
    sites: tuple[tuple[str, tuple[int, ...], Any], ...]  # each latent site: name, shape, dtype
    store: tuple[tuple[str, Any, int], ...]  # the param store: name, tensor, version

    def same(self, other: Frozen) -> bool:
        """Whether ``other`` froze the same: the same objects (tensors unchanged since), equal values."""
        return (self.model() is other.model() and self.settings == other.settings
                and self.sites == other.sites and _same_values(self.args, other.args)
                and _same_pairs(self.kwargs, other.kwargs) and _same_pairs(self.transforms, other.transforms)
                and len(self.store) == len(other.store)
                and all(a[0] == b[0] and a[1] is b[1] and a[2] == b[2]
                        for a, b in zip(self.store, other.store, strict=True)))


def freeze(potential_fn: Any, example_params: dict[str, Any]) -> Frozen | None:
    """What the potential behind ``potential_fn`` (a kernel's, built by Pyro from a model) froze;
    None for a potential of the user's own, or a model argument that is neither a tensor, a plain
    value nor a tuple, list or dict of them (an array, an object: changed in place unseen)."""
    import pyro

    parts = compat.potential_parts(potential_fn)
    if parts is None:
        return None
    model, handlers, args, kwargs, transforms, evaluator = parts
    try:
        frozen_args = tuple(_described(a) for a in args)
        frozen_kwargs = tuple((k, _described(v)) for k, v in sorted(kwargs.items()))
    except _Unfrozen:
        return None
    settings = (handlers, type(evaluator), getattr(evaluator, "max_plate_nesting", None),
                getattr(evaluator, "has_enumerable_sites", None))
    sites = tuple((name, tuple(value.shape), value.dtype) for name, value in example_params.items())
    store = tuple((name, tensor, jit_compat.tensor_version(tensor))
                  for name, tensor in compat.store_tensors(pyro.get_param_store()).items())
    try:
        model_ref = weakref.ref(model)
    except TypeError:  # (a bound method is made anew each time it is read: no run would match)
        return None
    return Frozen(model_ref, frozen_args, frozen_kwargs, tuple(sorted(transforms.items())), settings, sites,
                  store)


def world_guards(frozen: Frozen) -> Guards | None:
    """What the model reads from globals and closures (a tensor by identity and version), torch's
    default dtype and Pyro's validation, as guards; None where the model draws random numbers
    outside torch (a graph holds one draw)."""
    world = read_world([frozen.model()])
    if world.draws:
        return None
    builder = GuardBuilder()
    builder.world(world)
    builder.modes()
    return builder.build()


@dataclass(eq=False)
class Kept:
    """A run's captured potential, and its trajectory once captured, with what runs each, for later
    runs that froze the same. It holds the graphs and their runners, never the run's kernel nor its
    potential function, and the model weakly (:attr:`Frozen.model`; its guards may hold a module
    model's attributes): a session keeps the last few runs' (``run.session.KEPT_RUNS``)."""

    frozen: Frozen
    world: Guards
    potential: Any                  # a CapturedPotential, without its potential function
    potential_runs: Codegen
    potential_fallback: str | None = None
    trajectory: Any = None          # a CapturedTrajectory
    trajectory_runs: Codegen | None = None  # None: inductor's kernels load in the background again
    trajectory_loading: Any = None  # inductor's codegen still going when the last run ended (Background)
    trajectory_kernel: Any = None     # the kernel's class (HMC or NUTS)
    trajectory_direct_due: bool = True

    @classmethod
    def of(cls, frozen: Frozen, world: Guards, potential: Any) -> Kept:
        return cls(frozen, world, dataclasses.replace(potential.captured, potential_fn=None),
                   _running(potential), potential.fallback)

    def ran(self, potential: Any, trajectory: Any) -> None:
        """After a run on these graphs (or the one that captured them): what runs each now."""
        if potential is not None and potential.captured.graph is self.potential.graph:
            self.potential_runs, self.potential_fallback = _running(potential), potential.fallback
        if trajectory is None:
            return
        if self.trajectory is None or trajectory.captured.graph is not self.trajectory.graph:
            self.trajectory, self.trajectory_kernel = trajectory.captured, type(trajectory.kernel)
        settled = trajectory.backend == "inductor" and not trajectory.compiling
        self.trajectory_runs = _running(trajectory) if settled else None
        self.trajectory_loading = trajectory._pending if trajectory.compiling else None
        self.trajectory_direct_due = trajectory._direct_due if settled else True

    def serves(self, frozen: Frozen) -> bool:
        """Whether a run whose potential froze ``frozen`` may take these graphs now."""
        return self.frozen.same(frozen) and self.world.holds()

    def graphs(self) -> list[Any]:
        """The graphs held (as the cache inspector's entries hold them)."""
        return [c.graph for c in (self.potential, self.trajectory) if c is not None]

    def potential_for(self, potential_fn: Any) -> Any:
        """A compiled potential for a new run's ``potential_fn``: the kept graph and what runs it,
        its eager fallback the new run's potential, its calls and sentinel its own."""
        from .potential import CompiledPotential

        captured = dataclasses.replace(self.potential, potential_fn=compat.eager_potential(potential_fn),
                                       capture_seconds=0.0)
        compiled = CompiledPotential(captured, self.potential_runs, self.potential_fallback)
        compiled.reused = True
        return compiled

    def trajectory_for(self, kernel: Any, potential: Any) -> Any:
        """A compiled trajectory for a new run's ``kernel`` (around ``potential``, from
        :meth:`potential_for`), or None where its kernel asks for another graph (another mass
        matrix's layout, tree depth or divergence threshold). It runs on inductor's kernels at
        once where they had taken over, or were built since; else they load in the background as
        after a capture (the caller starts them)."""
        from .backends import as_captured
        from .errors import CannotCompile
        from .trajectory import CompiledTrajectory, refusal, tree_shape

        captured = self.trajectory
        if captured is None or type(kernel) is not self.trajectory_kernel or refusal(kernel) is not None:
            return None
        try:
            shape = tree_shape(kernel, captured.layout.names)
        except (CannotCompile, KeyError):
            return None
        if shape != (captured.layout, captured.depth, captured.max_sliced_energy):
            return None
        captured = dataclasses.replace(captured, capture_seconds=0.0)
        runs = self.trajectory_runs or self._loaded()
        if runs is None:  # (inductor's kernels load in the background, as after a capture)
            new = CompiledTrajectory(kernel, potential, captured, as_captured(captured.graph), None,
                                     waits=True)
        else:
            new = CompiledTrajectory(kernel, potential, captured, runs, None)
            new._direct_due = self.trajectory_direct_due
        new.reused = True
        return new

    def _loaded(self) -> Codegen | None:
        """Inductor's kernels of the trajectory, where a codegen that outlived its run has since
        finished (a cold one, in a worker process, takes longer than a short run)."""
        loading = self.trajectory_loading
        if loading is None or not loading.done.is_set() or loading.result is None:
            return None
        result = loading.result
        self.trajectory_loading = None
        # (built for an earlier run: none of this one's time)
        self.trajectory_runs = Codegen(run=result.run, backend="inductor", seconds=0.0,
                                       kernels=result.kernels, cache=result.cache)
        return self.trajectory_runs


def _running(compiled: Any) -> Codegen:
    """What runs ``compiled``'s graph now, as a backend's build that took no time."""
    return Codegen(run=compiled._run, backend=compiled.backend, seconds=0.0, kernels=compiled.kernels,
                   cache=compiled.cache)


#: Values a frozen argument may hold beside tensors: compared by type and value.
_PLAIN = (int, float, bool, str, bytes, type(None))


class _Unfrozen(Exception):
    """A model argument whose changes an identity and a value cannot show."""


def _described(value: Any) -> Any:
    """A model argument as frozen: a tensor by its data and version, a plain value by itself, a
    tuple, list or dict by its items."""
    import torch

    if isinstance(value, torch.Tensor):
        return "tensor", value, jit_compat.tensor_version(value)
    if type(value) in _PLAIN or isinstance(value, (torch.dtype, torch.device, torch.Size)):
        return "value", type(value), value
    if type(value) in (tuple, list):
        return "items", type(value), tuple(_described(v) for v in value)
    if type(value) is dict:
        return "items", dict, tuple((k, _described(v)) for k, v in sorted(value.items(), key=repr))
    raise _Unfrozen(type(value).__name__)


def _same_values(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))


def _same_pairs(a: tuple[tuple[Any, Any], ...], b: tuple[tuple[Any, Any], ...]) -> bool:
    if len(a) != len(b):
        return False
    keys = all(type(x[0]) is type(y[0]) and x[0] == y[0] for x, y in zip(a, b, strict=True))
    return keys and _same_values(tuple(x[1] for x in a), tuple(y[1] for y in b))


def _same_data(a: Any, b: Any) -> bool:
    """Whether two tensors are the same data: the same object, or views alike of the same storage
    (``MCMC.run`` detaches each argument anew; a detached tensor shares its version counter). The
    frozen tensor holds its storage, so no other tensor's can take its address."""
    if a is b:
        return True
    try:
        return (a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
                and a.storage_offset() == b.storage_offset() and a.shape == b.shape
                and a.stride() == b.stride() and a.dtype == b.dtype and a.device == b.device)
    except (RuntimeError, NotImplementedError):  # (a tensor without storage: taken as another)
        return False


def _same(a: Any, b: Any) -> bool:
    """One frozen value against another: a tensor the same data, unchanged; a plain value equal, of
    the same type; items item by item; a transform equal by its own ``==`` (which compares its
    parameters; a transform without one, only itself)."""
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) == 3 and a[0] == b[0]:
        kind = a[0]
        if kind == "tensor":
            return _same_data(a[1], b[1]) and a[2] == b[2]
        if kind == "value":
            return a[1] is b[1] and a[2] == b[2]
        if kind == "items":
            return a[1] is b[1] and (_same_pairs(a[2], b[2]) if a[1] is dict else _same_values(a[2], b[2]))
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # (no truth of its ==: taken as changed)
        return False
