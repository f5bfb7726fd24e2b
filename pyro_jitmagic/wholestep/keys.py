"""What a compiled step is keyed on, and the generated check that a call has a given key.

A compiled step's graph is built for its arguments' layouts and holds their plain values as
constants: :func:`step_key` says which compiled step a call is for, and :func:`signature_check`
makes the same decision as straight-line code, for the short ways that check every step's call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..compat import jit as jit_compat
from ..guards.checks import Constants


def layout(tensor: Any) -> tuple[Any, ...]:
    """What a compiled step assumes of an input tensor: its shape, dtype, strides and device."""
    return tensor.shape, tensor.dtype, tensor.stride(), tensor.device


def step_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What a compiled step is keyed on; cheap, as it runs on every step.

    The key holds the number of positional arguments, and each tensor's shape, dtype, strides and
    device (a positional argument's or a keyword's), which its graph is built for. Every other value
    is keyed by itself, as the graph holds it as a constant; as in Pyro's key, lists, dicts and
    ``argparse.Namespace`` go by value, other unhashable objects by identity. A numpy array goes by
    its shape (no graph takes one)."""
    tensor = tensor_class()
    described = tuple([(a.shape, a.dtype, a.stride(), a.device) if isinstance(a, tensor) else _value(a)
                       for a in args])  # (a list first: a generator costs more on every step)
    if not kwargs:
        return len(args), (), described
    laid = {k: ("tensor", v.shape, v.dtype, v.stride(), v.device) if isinstance(v, tensor) else v
            for k, v in kwargs.items()}
    try:
        key = jit_compat.fast_key((), laid)
        hash(key)
    except TypeError:
        key = jit_compat.hashed_key((), laid)
    return len(args), key[1], described


@functools.cache
def tensor_class() -> Any:
    """torch's Tensor class, imported once."""
    import torch  # (once: the key is read on every step)

    return torch.Tensor


def _value(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        shape = getattr(value, "shape", None)
        if shape is not None:  # a numpy array: it runs eager, whatever its values
            return "array", tuple(shape), str(getattr(value, "dtype", ""))
        return "value", id(value)  # by identity, as Pyro keys other objects
    return "value", value


#: The values a call may pass beside its tensors for a short way to run it: its check compares
#: them by type and value (others run the long way, looked up by their key).
_PLAIN_VALUES = (int, float, bool, str, type(None))


def signature_check(key: Any, bound: frozenset[int] = frozenset(), taken: frozenset[str] = frozenset()
                    ) -> Callable[[tuple[Any, ...], dict[str, Any]], bool] | None:
    """One function of a call's arguments: True where :func:`step_key` would find ``key`` for the
    call, as straight-line checks over bound constants: the number of arguments, the keywords'
    names, each tensor's class and layout, and the plain values (ints, floats, strings) a graph
    holds as constants, without building the key's tuples on every step (the climb's eager short
    way checks every step's signature: docs/real-models.md, What the climb adds to a short cell).
    The tensors of positions ``bound`` and keywords ``taken`` are left out (a compiled step's
    binding checks them). None where the key holds other values (the caller then reads the key)."""
    # (made once a signature: the climb asks again after every long-way step; by the values' types
    # too, as keys that hold 3 and 3.0 are equal and the check tells them apart)
    try:
        _, keywords, described = key
        types = (tuple(type(kind[1]) for kind in described if isinstance(kind, tuple) and len(kind) == 2),
                 tuple(type(value) for _, value in keywords))
        return _signature_check(key, types, bound, taken)
    except (TypeError, ValueError):  # (a key of Pyro's own for values it could not hash)
        return None


@functools.lru_cache(maxsize=256)
def _signature_check(key: Any, types: Any, bound: frozenset[int], taken: frozenset[str]
                     ) -> Callable[[tuple[Any, ...], dict[str, Any]], bool] | None:
    import torch

    constants = Constants("A")  # (its own prefix: a compiled step's short way checks it inline)
    bind = constants.bind
    tests: list[str] = []

    def plain(expression: str, value: Any) -> bool:
        if type(value) not in _PLAIN_VALUES:
            return False
        tests.append(f"type({expression}) is {bind(type(value))} and {expression} == {bind(value)}")
        return True

    def tensor(expression: str, expected: tuple[Any, ...]) -> None:
        tests.append(f"isinstance({expression}, {bind(tensor_class())})")
        tests.append(layout_test(expression, expected, bind))

    count, keywords, described = key
    tests.append(f"len(args) == {int(count)}")
    for position, kind in enumerate(described):
        if position in bound:
            continue
        if isinstance(kind, tuple) and len(kind) == 4 and isinstance(kind[0], torch.Size):
            tensor(f"args[{position}]", kind)
        elif not (isinstance(kind, tuple) and len(kind) == 2 and kind[0] == "value"
                  and plain(f"args[{position}]", kind[1])):
            return None
    tests.append(f"len(kwargs) == {len(keywords)}")
    try:
        for name, value in keywords:
            is_tensor = isinstance(value, tuple) and len(value) == 5 and value[0] == "tensor"
            if not isinstance(name, str):
                return None
            if is_tensor:
                if name not in taken:
                    tensor(f"kwargs.get({bind(name)})", value[1:])
            elif not plain(f"kwargs.get({bind(name)})", value):
                return None
    except (TypeError, ValueError):  # (a key of Pyro's own for values it could not hash)
        return None
    expression = " and ".join(tests)
    check = eval(f"lambda args, kwargs: {expression}", dict(constants.namespace))  # our own expression
    # (what it evaluates, over its constants, for other generated code to check inline)
    check.expression, check.constants = expression, constants.namespace
    return check


def layout_test(name: str, expected: tuple[Any, ...], bind: Callable[[Any], str]) -> str:
    """An expression: the tensor ``name`` has the shape, dtype and strides of ``expected`` (its device
    too, where the layout expected has one; ``_bind`` checks the device of keywords and globals)."""
    shape, dtype, stride, device = expected
    return (f"{name}.shape == {bind(shape)} and {name}.dtype is {bind(dtype)} "
            f"and {name}.stride() == {bind(stride)} and {name}.device == {bind(device)}")
