"""What a step writes in place besides its params: a BatchNorm's running statistics, and where from.

Eager's step updates some tensors in place that are neither params nor optimizer state: in
training mode a ``BatchNorm1d`` moves its running mean and variance and counts its batches. A
capture runs the step twice before the graph's first call (the eager run that finds the params,
then the trace), so it would update them three times in one step; and a graph that held them as
constants would write into the tensors it saw at capture, not into the module's buffers as they are
at each step. So the capture watches what an eager run writes (:class:`WriteWatch`), puts it back,
and a buffer of a module the model or guide runs becomes an input of the graph (:func:`buffer_sources`),
fetched afresh on each step and written there once, as eager writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..compat import capture as compat
from ..guards import Source, World


class WriteWatch:
    """A dispatch mode that keeps a copy of each tensor an op is about to write in place, the first
    time it is written: :meth:`put_back` makes them as they were, and :attr:`written` lists them."""

    def __init__(self) -> None:
        self._kept: dict[int, tuple[Any, Any]] = {}
        self._mode = _make_mode(self)

    def __enter__(self) -> WriteWatch:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)

    @property
    def written(self) -> list[Any]:
        """The tensors written, in the order first written."""
        return [tensor for tensor, _ in self._kept.values()]

    def keep(self, tensor: Any) -> None:
        # a write through a view writes the tensor it views (InstanceNorm writes its running
        # statistics through an alias of them)
        tensor = tensor._base if tensor._base is not None else tensor
        if id(tensor) not in self._kept:
            with compat.outside_capture():
                self._kept[id(tensor)] = (tensor, tensor.detach().clone())

    def put_back(self) -> None:
        """Every tensor written, as it was before its first write."""
        for tensor, value in self._kept.values():
            _restore(tensor, value)


class KeptBuffers:
    """Every buffer of the modules a world runs, as it is now: which tensor each module holds under
    each name, and a copy of its value.

    Cheaper than a :class:`WriteWatch` around a run, which costs every op of the run a call in
    Python: Pyro's JIT compiles a key in a few eager runs' time, where a capture takes many."""

    def __init__(self, world: World | None) -> None:
        # (module, name, tensor, its value)
        self.kept = [(module, name, tensor, tensor.detach().clone())
                     for module, name, tensor in _buffers(world.modules if world is not None else ())]

    def moved(self) -> str | None:
        """The buffers that moved since (another tensor, or other values), in words
        (``BatchNorm1d's num_batches_tracked``); None when none did."""
        names = [f"{type(module).__name__}'s {name}" for module, name, tensor, value in self.kept
                 if vars(module)["_buffers"].get(name) is not tensor or not _equal(tensor, value)]
        return ", ".join(dict.fromkeys(names)) or None

    def restore(self) -> None:
        """Each buffer as it was: the same tensor under its name, holding the same values."""
        for module, name, tensor, value in self.kept:
            vars(module)["_buffers"][name] = tensor
            _restore(tensor, value)


def _equal(a: Any, b: Any) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


def _restore(tensor: Any, value: Any) -> None:
    # (through .data: a value put back is no change, and a version bump would fail the backward
    # of an eager loss that saved the tensor: a BatchNorm's saves its running statistics)
    if tensor.shape == value.shape and tensor.stride() == value.stride():
        tensor.data.copy_(value)
    else:  # an op's out= tensor, resized by the write (an RNN's workspace): its old shape too
        tensor.data = value


def written_arguments(func: Any, args: Any, kwargs: Any = None) -> list[Any]:
    """The arguments of a call of the aten op ``func`` that it writes in place: those its schema
    marks written, and a training ``native_batch_norm``'s running mean and variance, which it
    updates in place though its schema does not say so."""
    schema = compat.aten_op(func)
    if schema is None:
        return []
    kwargs = kwargs or {}
    found = []
    for position, argument in enumerate(schema.arguments):
        if (argument.alias_info is not None and argument.alias_info.is_write) \
                or (position in (3, 4) and schema.name == "aten::native_batch_norm"
                    and _argument(args, kwargs, 5, "training")):
            value = _argument(args, kwargs, position, argument.name)
            if value is not None:
                found.append(value)
    return found


def written_roots(graph: Any) -> list[tuple[Any, Any]]:
    """(op, node) for each value the FX ``graph`` writes in place: the node written, followed back
    through the views it is made by (``alias``, ``view``, ``select``...) to the value they view: an
    input, a constant, or a tensor the graph made."""
    import torch

    found = []
    for node in graph.graph.nodes:
        if node.op != "call_function":
            continue
        for value in written_arguments(node.target, node.args, node.kwargs):
            if isinstance(value, torch.fx.Node):
                while value.op == "call_function" and _is_view(value.target) \
                        and value.args and isinstance(value.args[0], torch.fx.Node):
                    value = value.args[0]
                found.append((node.target, value))
    return found


def _is_view(target: Any) -> bool:
    schema = compat.aten_op(target)
    if schema is None or schema.is_mutable or not schema.returns:
        return False
    alias = schema.returns[0].alias_info
    return alias is not None and not alias.is_write


def _argument(args: Any, kwargs: Any, position: int, name: str) -> Any:
    return args[position] if position < len(args) else kwargs.get(name)


def _make_mode(watch: WriteWatch) -> Any:
    import torch

    base = compat.dispatch_mode_base()
    mutable: dict[Any, bool] = {}  # op -> whether it may write an argument

    def may_write(func: Any) -> bool:
        found = mutable.get(func)
        if found is None:
            schema = compat.aten_op(func)
            found = mutable[func] = schema is not None and (
                schema.is_mutable or schema.name == "aten::native_batch_norm")
        return found

    class _Mode(base):  # type: ignore[misc, valid-type]
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if may_write(func):
                for value in written_arguments(func, args, kwargs):
                    if isinstance(value, torch.Tensor):
                        watch.keep(value)
            return func(*args, **kwargs)

    return _Mode()


def buffer_sources(modules: Iterable[Any]) -> dict[int, Source]:
    """Every buffer of ``modules`` (a model's ``nn.Module``s and their submodules), by the id of its
    tensor: where to fetch it again (the module's own ``_buffers``, never through a property)."""
    found: dict[int, Source] = {}
    for module, name, tensor in _buffers(modules):
        found.setdefault(id(tensor), Source("object", module, type(module).__name__,
                                            (("attr", "_buffers"), ("item", name))))
    return found


def _buffers(modules: Iterable[Any]) -> Iterator[tuple[Any, str, Any]]:
    """(module, name, tensor) of each buffer the modules hold, read from their own ``_buffers``."""
    for module in modules:
        for name, tensor in (vars(module).get("_buffers") or {}).items():
            if tensor is not None:
                yield module, name, tensor
