"""Who reads what while a trace runs: every tensor read as a Python value, watched.

torch's ``TracerWarning`` names its own frame, but judging a read (:mod:`.jit_warnings`) needs the
frame that asked, and whether the tensor held a size. :func:`watch_reads` wraps ``torch.Tensor``'s
conversions, size methods and operators for a trace to note both, and reports the reads torch
says nothing about (a tensor used as a Python integer).
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from ..compat import jit as compat
from ..patch import ORIGINAL_ATTR, PatchSet


class ReadWatcher(Protocol):
    """Who is told of each integer read while a trace runs (the run's warning capture)."""

    def integer_read(self, frame: FrameType) -> None: ...


# The read in progress on this thread: (the frame that asked, whether the tensor held a size).
# Per thread, not per process: a trace runs on a thread of its own (see stack.py), and torch's
# tracing state, which the wrappers test first, is per thread too.
_local = threading.local()


def current_read() -> tuple[FrameType, bool] | None:
    """The read in progress on this thread, while a trace runs: (the frame that asked, whether
    the tensor held a size)."""
    return getattr(_local, "read", None)


class _Sizes:
    """The tensors that hold sizes in one trace (under tracing ``x.size(0)`` is a tensor, and so
    is ``x.size(1) + 1``), held weakly by id."""

    def __init__(self, tensor: type) -> None:
        self.tensor = tensor
        self.held: dict[int, Any] = {}  # id -> weakref

    def holds(self, value: Any) -> bool:
        held = self.held.get(id(value))
        return held is not None and held() is value

    def remember(self, value: Any) -> Any:
        for t in value if isinstance(value, tuple) else (value,):
            if isinstance(t, self.tensor):
                self.held[id(t)] = weakref.ref(t)
        return value


def _conversion(original: Any, name: str, sizes: _Sizes, tracing: Callable[[], Any],
                capture: ReadWatcher) -> Callable[..., Any]:
    holds = sizes.holds

    def read(self: Any, *args: Any, **kwargs: Any) -> Any:
        if tracing() is None:
            return original(self, *args, **kwargs)
        reader, size = sys._getframe(1), holds(self)
        outer, _local.read = current_read(), (reader, size)
        try:
            if name == "__index__" and not size and not getattr(_local, "subscript", False):
                capture.integer_read(reader)
            return original(self, *args, **kwargs)
        finally:
            _local.read = outer

    return read


def _subscript(original: Any) -> Callable[..., Any]:
    # a tensor indexed or sliced by a tensor (x[:n]) keeps the index dynamic in the trace,
    # though torch asks the index's __index__ on the way: not a read
    def indexed(self: Any, *args: Any) -> Any:
        outer, _local.subscript = getattr(_local, "subscript", False), True
        try:
            return original(self, *args)
        finally:
            _local.subscript = outer

    return indexed


def _size_of(original: Any, sizes: _Sizes, tracing: Callable[[], Any]) -> Callable[..., Any]:
    remember = sizes.remember

    def sized(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        return remember(out) if tracing() is not None else out

    return sized


def _arithmetic(original: Any, sizes: _Sizes) -> Callable[..., Any]:
    # on sizes and Python numbers, it gives a size: T_max + 1, x.size(0) == 6
    held, holds, remember, numbers = sizes.held, sizes.holds, sizes.remember, (int, float, bool)

    def op(self: Any, *args: Any) -> Any:
        out = original(self, *args)
        if held and holds(self) and all(holds(a) or isinstance(a, numbers) for a in args):
            remember(out)
        return out

    return op


def _shape_of(original: Any, sizes: _Sizes, tracing: Callable[[], Any]) -> property:
    return property(lambda self: sizes.remember(original.__get__(self)) if tracing() is not None
                    else original.__get__(self))


_CONVERSIONS = ("__bool__", "__int__", "__float__", "__complex__", "__index__", "item", "tolist", "numpy")
_SIZES = ("size", "numel", "nelement", "__len__")
_SUBSCRIPTS = ("__getitem__", "__setitem__")
_OPERATORS = ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__floordiv__",
              "__rfloordiv__", "__truediv__", "__rtruediv__", "__mod__", "__pow__", "__neg__",
              "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__")


def watch_reads(capture: ReadWatcher, trace: Callable[..., Any]) -> Callable[..., Any]:
    """``trace`` (``torch.jit.trace``), run with every tensor read as a Python value watched.

    While ``trace`` runs, ``torch.Tensor``'s conversions to Python values
    (``bool``, ``int``, ``float``, ``.item()``, ``.tolist()``, ``__index__``), its
    size methods and its arithmetic and comparison operators are wrapped (by a
    :class:`~..patch.PatchSet`, restored when ``trace`` returns or raises). The
    wrappers follow which tensors hold sizes (under tracing ``x.size(0)`` is a
    tensor, and so is ``x.size(1) + 1``), and when a tensor is read as a Python
    value they note the frame that asked and whether the tensor held a size, for
    the warning torch then raises. A tensor used as a Python integer
    (``range(n)``, ``[x] * n``, ``items[n]``) makes torch say nothing, so it is
    warned about here, unless it held a size or indexed a tensor (``x[:n]`` stays
    dynamic in the trace). Each wrapper first checks torch's per-thread tracing
    state, so other threads pay one call.
    """
    import torch

    tensor, tracing = torch.Tensor, compat.tracing_state()
    sizes = _Sizes(tensor)
    wrappers: dict[str, Any] = {}
    for name in _CONVERSIONS:
        wrappers[name] = _conversion(getattr(tensor, name), name, sizes, tracing, capture)
    for name in _SIZES:
        wrappers[name] = _size_of(getattr(tensor, name), sizes, tracing)
    for name in _SUBSCRIPTS:
        wrappers[name] = _subscript(getattr(tensor, name))
    for name in _OPERATORS:
        wrappers[name] = _arithmetic(getattr(tensor, name), sizes)
    wrappers["shape"] = _shape_of(tensor.shape, sizes, tracing)

    def traced(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        patches = PatchSet()
        try:
            for name, wrapper in wrappers.items():
                if not isinstance(wrapper, property):
                    setattr(wrapper, ORIGINAL_ATTR, getattr(tensor, name))
                    wrapper.__name__ = name
                patches.set(tensor, name, wrapper)
            return trace(*args, **kwargs)
        finally:
            patches.restore()
            sizes.held.clear()

    return traced
